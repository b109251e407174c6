"""What every request meets before a route: security headers, the client's true address.

Every page family is rendered with real objects behind it (stations, a broadcast, alerts,
programmes, users) and checked for the headers a browser enforces and for markup the
policy would block: an inline script, an ``on…=`` handler, a ``style`` attribute. The
forwarded-address tests use the audit log and the sign-in lock, the two things a faked
``X-Forwarded-For`` would fool.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import server
from server.app import create_app
from server.edge.forwarded import forwarded_client
from server.edge.headers import API_POLICY, PAGE_POLICY
from server.settings import Settings
from tests.integration.auth_helpers import authenticate
from tests.integration.test_auth_matrix import COMMUNE_A, STATION, World, make_world
from tests.integration.test_server_api import RecordingBus, make_settings

API = "/api/v1"
TEMPLATES = Path(server.__file__).parent / "templates"


class InlineCode(HTMLParser):
    """Collects everything in a page that a strict script-src/style-src would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"<{tag} {name}=…>")
            if name == "style":
                self.found.append(f"<{tag} style=…>")
            if value and value.strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")
        if tag == "style":
            self.found.append("<style>")
        if tag == "script":
            self._in_script = named

    def handle_data(self, data: str) -> None:
        if self._in_script is None or not data.strip():
            return
        # A data block (type=application/json) is not run, so the policy allows it.
        if self._in_script.get("type") != "application/json":
            self.found.append(f"inline <script>: {data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = None


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def assert_page_headers(response: Any, path: str) -> None:
    headers = response.headers
    assert headers["content-security-policy"] == PAGE_POLICY, path
    assert "frame-ancestors 'none'" in PAGE_POLICY and "script-src 'self'" in PAGE_POLICY
    assert headers["x-content-type-options"] == "nosniff", path
    assert headers["x-frame-options"] == "DENY", path
    assert headers["referrer-policy"] == "same-origin", path


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as client:
        yield authenticate(client)


def page_families(world: World) -> list[str]:
    """One address per page template, each with a real object behind it."""
    programme = world.programme[COMMUNE_A]["read"]
    return [
        "/",
        "/audio",
        "/programmes",
        "/programmes/new",
        "/programmes/approvals",
        f"/programmes/p/{programme}",
        f"/programmes/p/{programme}/edit",
        "/fleet",
        f"/stations/{STATION[COMMUNE_A]}",
        "/alarms",
        "/alerts",
        "/alerts/new",
        f"/alerts/{world.alert[COMMUNE_A]['read']}",
        f"/broadcasts/{world.broadcast[COMMUNE_A]}",
        "/users",
        "/audit",
        "/enrolment",
        "/updates",
        "/live",
        "/reports",
        "/nghe",
        f"/nghe/{COMMUNE_A}",
    ]


def test_every_page_family_has_the_headers_and_no_inline_script(admin: TestClient) -> None:
    world = make_world(admin)
    families = page_families(world)
    # Every page template is reached (the error page and the sign-in page below).
    templates = {p.name for p in TEMPLATES.glob("*.html")} - {"base.html", "public_base.html"}
    assert len(families) + 2 >= len(templates), sorted(templates)
    for path in families:
        response = admin.get(path)
        assert response.status_code == 200, (path, response.text[:200])
        assert_page_headers(response, path)
        assert inline_code(response.text) == [], path
    for path, status in (("/login", 200), ("/no-such-page", 404)):
        response = admin.get(path, headers={"Authorization": ""})
        assert response.status_code == status, path
        assert_page_headers(response, path)
        assert inline_code(response.text) == [], path


def test_the_api_and_refusals_carry_the_strict_headers(admin: TestClient) -> None:
    for response in (
        admin.get(f"{API}/stations"),
        admin.get(f"{API}/stations", headers={"Authorization": "Bearer wrong"}),
        admin.post(f"{API}/broadcasts", content=b"x" * (2 * 1024 * 1024)),
    ):
        assert response.status_code in (200, 401, 413)
        assert response.headers["content-security-policy"] == API_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_the_inline_code_finder_finds_what_the_policy_blocks() -> None:
    """The page check above is only as good as this finder."""
    bad = (
        '<script>alert(1)</script><a onclick="x()">a</a><p style="color:red">'
        '<a href="javascript:go()">b</a><style>p{}</style>'
    )
    assert len(inline_code(bad)) == 5
    good = '<script src="/static/a.js" defer></script><script type="application/json">{}</script>'
    assert inline_code(good) == []


def test_a_big_page_form_is_refused_in_the_readers_language(admin: TestClient) -> None:
    form = {"username": "x", "password": "y" * (1100 * 1024)}
    response = admin.post("/login", data=form, headers={"Origin": "http://testserver"})
    assert response.status_code == 413
    assert response.json()["errors"]["form"].startswith("Biểu mẫu quá lớn")


# ---------------------------------------------------------------- forwarded addresses

PROXY = "10.0.0.5"
LOCAL = "127.0.0.1"
FAKE = "203.0.113.9"


def client_from(tmp_path: Path, peer: str, **settings: Any) -> TestClient:
    app_settings: Settings = make_settings(tmp_path, login_max_failures=3, **settings)
    return TestClient(create_app(app_settings, bus=RecordingBus()), client=(peer, 40000))


def failed_login(client: TestClient, username: str, forwarded_for: str | None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    body = {"username": username, "password": "not-the-password"}
    return client.post(f"{API}/auth/login", json=body, headers=headers).status_code


def audited_sources(client: TestClient, username: str) -> list[str]:
    entries = client.get(f"{API}/audit", params={"action": "auth.login_failed"}).json()
    return [e["source_ip"] for e in entries if e["actor_name"] == username]


def test_a_local_client_cannot_fake_its_address_or_dodge_the_lock(tmp_path: Path) -> None:
    with client_from(tmp_path, LOCAL) as client:
        authenticate(client)
        codes = [failed_login(client, f"user-{n}", f"198.51.100.{n}") for n in range(4)]
        # Three failures from one address lock it, whatever address each try claims.
        assert codes == [401, 401, 401, 429]
        assert audited_sources(client, "user-0") == [LOCAL]


def test_the_named_proxy_is_believed_and_the_lock_follows_the_real_client(tmp_path: Path) -> None:
    with client_from(tmp_path, PROXY, trusted_proxies=["10.0.0.0/24"]) as client:
        authenticate(client)
        assert failed_login(client, "alice", f"{FAKE}, 192.0.2.7") == 401
        # The proxy appended 192.0.2.7; the client wrote 203.0.113.9 itself.
        assert audited_sources(client, "alice") == ["192.0.2.7"]
        codes = [failed_login(client, f"bob-{n}", "192.0.2.8") for n in range(4)]
        assert codes == [401, 401, 401, 429]
        assert failed_login(client, "carol", "192.0.2.9") == 401  # another client: not locked


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    with client_from(tmp_path, "192.0.2.50", trusted_proxies=["10.0.0.0/24"]) as client:
        authenticate(client)
        failed_login(client, "dave", FAKE)
        assert audited_sources(client, "dave") == ["192.0.2.50"]


@pytest.mark.parametrize(
    ("peer", "chain", "client"),
    [
        (PROXY, "192.0.2.1", "192.0.2.1"),
        (PROXY, "192.0.2.1, 10.0.0.6", "192.0.2.1"),  # two of our proxies in a row
        (PROXY, "10.0.0.6, 10.0.0.7", "10.0.0.6"),  # only proxies: the left-most
        (PROXY, "evil, 192.0.2.1", "192.0.2.1"),
        (PROXY, "192.0.2.1, not-an-address", PROXY),  # garbage where a proxy writes
        (PROXY, "", PROXY),
        ("192.0.2.50", "192.0.2.1", "192.0.2.50"),
    ],
)
def test_the_client_is_the_right_most_hop_no_proxy_of_ours_added(
    peer: str, chain: str, client: str
) -> None:
    trusted = Settings(trusted_proxies=["10.0.0.0/24"]).trusted_proxies
    assert forwarded_client(peer, chain, trusted) == client


def test_an_unknown_proxy_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=["proxy.example"])
    assert re.search("X-Forwarded-For", Settings.model_fields["trusted_proxies"].description or "")
