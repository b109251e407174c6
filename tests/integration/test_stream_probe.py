"""The stream check is no window into the server's network (server-side request forgery).

A "canary" web server on loopback counts every request it gets: the check must never
reach it, whatever spelling of the address or redirect leads there. A second server in a
network namespace plays the province's intranet Icecast: reached only once allow-listed.
The operator learns "audio / not reachable / not audio", never the far side's status
code or content type.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.edge.outbound import own_addresses, refusal
from server.programmes.probe import ProbeResult, StreamPolicy, policy_from, probe_stream
from tests.integration.auth_helpers import authenticate
from tests.integration.test_auth_matrix import COMMUNE_A, STATION, programme_body
from tests.integration.test_server_api import RecordingBus, make_settings
from tests.intranet import IntranetServer, intranet_server

MP3_HEAD = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 2048
TIMEOUT_S = 3


class Stream(BaseHTTPRequestHandler):
    """A small Icecast-like server that remembers who asked for what."""

    hits: ClassVar[list[tuple[str, str]]]
    elsewhere: ClassVar[str] = ""

    def do_GET(self) -> None:
        self.hits.append((self.path, self.headers.get("Host", "")))
        if self.path == "/vov1.mp3":
            self._answer(200, "audio/mpeg", MP3_HEAD)
        elif self.path == "/sniffed":
            self._answer(200, "application/octet-stream", MP3_HEAD)
        elif self.path == "/page":
            self._answer(200, "text/html", b"<html><body>intranet wiki</body></html>")
        elif self.path == "/same-host":
            self._redirect("/vov1.mp3")
        elif self.path == "/elsewhere":
            self._redirect(self.elsewhere)
        elif self.path == "/busy":
            self._answer(503, "text/plain", b"busy")
        else:
            self._answer(404, "text/plain", b"no such mount")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


class Canary(Stream):
    hits: ClassVar[list[tuple[str, str]]] = []


class Intranet(Stream):
    hits: ClassVar[list[tuple[str, str]]] = []


@pytest.fixture(scope="module")
def canary() -> Iterator[str]:
    """An internal service on loopback: the check must never reach it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def intranet(canary: str) -> Iterator[IntranetServer]:
    Intranet.elsewhere = f"http://{canary}/vov1.mp3"
    with intranet_server(Intranet) as server:
        yield server


@pytest.fixture(autouse=True)
def _forget_hits() -> None:
    Canary.hits.clear()
    Intranet.hits.clear()


def allowing(server: IntranetServer) -> StreamPolicy:
    return StreamPolicy(allowed=(server.network,))


def assert_not_reachable(result: ProbeResult, url: str) -> None:
    assert result == ProbeResult(
        False, warning=f"stream {url} could not be reached from the server"
    )


# ------------------------------------------------------------------ the address rule


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.3.4.5", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4 in IPv6 clothing
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("10.1.2.3", "private, and not in stream_allowed_networks"),
        ("192.168.1.10", "private, and not in stream_allowed_networks"),
        ("100.64.0.1", "private, and not in stream_allowed_networks"),  # carrier-grade NAT
        ("fd00::5", "private, and not in stream_allowed_networks"),
        ("10.20.3.4", None),  # inside the allow-listed intranet
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
    ],
)
def test_which_addresses_the_check_may_reach(address: str, why: str | None) -> None:
    allowed = [ip_network("10.20.0.0/16")]
    assert refusal(ip_address(address), allowed) == why


def test_the_allow_list_never_opens_loopback_nor_this_host() -> None:
    everything = [ip_network("0.0.0.0/0"), ip_network("::/0")]
    assert refusal(ip_address("127.0.0.1"), everything) == "loopback"
    for own in own_addresses() - {ip_address("127.0.0.1"), ip_address("::1")}:
        if not own.is_link_local:
            assert refusal(own, everything, own_addresses()) == "an address of this server"


# ------------------------------------------------------------------ real requests


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.1",
        "localhost",
        "127.1",
        "2130706433",
        "0x7f000001",
        "[::ffff:127.0.0.1]",
        "0.0.0.0",
    ],
)
def test_loopback_is_never_contacted_however_it_is_spelt(canary: str, spelling: str) -> None:
    port = canary.rsplit(":", 1)[1]
    url = f"http://{spelling}:{port}/vov1.mp3"
    everything = StreamPolicy(allowed=(ip_network("0.0.0.0/0"), ip_network("::/0")))
    assert_not_reachable(probe_stream(url, TIMEOUT_S, everything), url)
    assert Canary.hits == []


def test_this_hosts_own_addresses_are_never_contacted(intranet: IntranetServer) -> None:
    # The host's end of the intranet link is one of this server's addresses.
    url = f"http://{intranet.host_address}:22/"
    assert_not_reachable(probe_stream(url, TIMEOUT_S, allowing(intranet)), url)


def test_the_servers_public_address_is_never_called_back(intranet: IntranetServer) -> None:
    url = f"{intranet.base_url}/vov1.mp3"
    policy = policy_from([intranet.network], intranet.base_url)
    assert_not_reachable(probe_stream(url, TIMEOUT_S, policy), url)
    assert Intranet.hits == []


def test_an_intranet_stream_is_reached_only_once_allow_listed(intranet: IntranetServer) -> None:
    url = f"{intranet.base_url}/vov1.mp3"
    assert_not_reachable(probe_stream(url, TIMEOUT_S, StreamPolicy()), url)
    assert Intranet.hits == []
    assert probe_stream(url, TIMEOUT_S, allowing(intranet)) == ProbeResult(True)
    assert [path for path, _ in Intranet.hits] == ["/vov1.mp3"]


def test_the_operator_learns_audio_not_audio_or_not_reachable_and_nothing_more(
    intranet: IntranetServer,
) -> None:
    policy = allowing(intranet)
    assert probe_stream(f"{intranet.base_url}/sniffed", TIMEOUT_S, policy).ok  # by its bytes
    for path in ("/page", "/missing"):
        url = f"{intranet.base_url}{path}"
        result = probe_stream(url, TIMEOUT_S, policy)
        assert result == ProbeResult(False, error=f"stream {url} is not audio")
    url = f"{intranet.base_url}/busy"
    assert_not_reachable(probe_stream(url, TIMEOUT_S, policy), url)


def test_redirects_are_followed_on_the_same_host_only(
    intranet: IntranetServer, canary: str
) -> None:
    policy = allowing(intranet)
    assert probe_stream(f"{intranet.base_url}/same-host", TIMEOUT_S, policy).ok
    url = f"{intranet.base_url}/elsewhere"  # → the loopback canary
    assert_not_reachable(probe_stream(url, TIMEOUT_S, policy), url)
    assert Canary.hits == []


def test_the_name_is_resolved_once_and_the_checked_address_is_the_one_called(
    intranet: IntranetServer, canary: str
) -> None:
    """DNS rebinding: a first answer that passes, a second that points inside."""
    server_ip = ip_address(intranet.base_url.split("//")[1].rsplit(":", 1)[0])
    answers = [[server_ip], [ip_address("127.0.0.1")]]
    asked: list[str] = []

    def rebinding(host: str, _port: int) -> list[Any]:
        asked.append(host)
        return answers[min(len(asked), 2) - 1]

    port = intranet.base_url.rsplit(":", 1)[1]
    url = f"http://radio.intranet.test:{port}/same-host"
    assert probe_stream(url, TIMEOUT_S, allowing(intranet), rebinding).ok
    assert asked == ["radio.intranet.test"]
    assert Intranet.hits == [
        ("/same-host", f"radio.intranet.test:{port}"),
        ("/vov1.mp3", f"radio.intranet.test:{port}"),
    ]
    assert Canary.hits == []

    def mixed(_host: str, _port: int) -> list[Any]:
        return [server_ip, ip_address("127.0.0.1")]

    result = probe_stream(url, TIMEOUT_S, allowing(intranet), mixed)
    assert not result.ok and Intranet.hits[2:] == []  # one inside address condemns the name


# ------------------------------------------------------------------ through the API


@pytest.fixture
def client(tmp_path: Path, intranet: IntranetServer) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path, stream_probe_timeout_s=TIMEOUT_S, stream_allowed_networks=[intranet.network]
    )
    with TestClient(create_app(settings, bus=RecordingBus())) as test_client:
        admin = authenticate(test_client)
        station = {
            "id": STATION[COMMUNE_A],
            "name": "Cụm loa",
            "area_code": COMMUNE_A,
            "latitude": 22.6,
            "longitude": 106.2,
        }
        assert admin.post("/api/v1/stations", json=station).status_code == 201
        yield admin


def relay(key: str, url: str, hours: int) -> dict[str, Any]:
    body = programme_body(COMMUNE_A, key, hours)
    body["items"] = [{"kind": "stream", "url": url, "window_min": 30}]
    return body


def test_saving_a_relay_to_an_internal_service_reveals_nothing(
    client: TestClient, canary: str, intranet: IntranetServer
) -> None:
    response = client.post("/api/v1/programmes", json=relay("inside", f"http://{canary}/admin", 1))
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        f"items[1]: stream http://{canary}/admin could not be reached from the server"
    ]
    assert Canary.hits == []

    response = client.post("/api/v1/programmes", json=relay("wiki", f"{intranet.base_url}/page", 2))
    assert response.status_code == 422
    assert response.json()["detail"] == f"items[1]: stream {intranet.base_url}/page is not audio"
    assert "text/html" not in response.text and "200" not in response.json()["detail"]

    vov = relay("vov", f"{intranet.base_url}/vov1.mp3", 3)
    response = client.post("/api/v1/programmes", json=vov)
    assert response.status_code == 201 and response.json()["warnings"] == []
