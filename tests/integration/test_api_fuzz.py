"""Attacks on the HTTP API: schemathesis over the OpenAPI spec, oversized and traversal uploads.

The fuzzer runs every operation with a bounded number of generated requests (valid and
invalid) twice: as a province admin, who may call everything, so the requests reach the
handlers instead of stopping at 401/403, and as a commune operator, whose requests take
the refusal paths and the area checks. Then sequences of calls (stateful testing, with
the links schemathesis infers from the responses: create a station, then read it, send
it a command…) reach the handlers with ids that exist. The guarantee checked: no request
gets a 500, and every error is JSON with a ``detail``.

The fuzzed app is built once for the module; its state (stations, audio) grows as the
fuzzer goes, which reaches more code than an empty database would. Budget: about two
minutes of one core for the whole module (`FUZZ_EXAMPLES`, `STATEFUL_SCENARIOS`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core.transport import Response
from schemathesis.python.asgi import ASGIClient

from server.api.keys import MAX_TRUSTED_KEYS
from server.app import create_app
from server.auth.permissions import Role
from server.settings import Settings
from tests.audio_samples import make_audio
from tests.db_rows import library_file_names, uploaded_assets
from tests.integration.auth_helpers import (
    PROVINCE,
    authenticate,
    bearer,
    context_of,
    make_token,
)
from tests.integration.test_auth_matrix import make_world

FUZZ_EXAMPLES = {"admin": 15, "operator": 5}
"""Per operation and identity: ~70 operations; the operator's mostly stop at a 403."""
STATEFUL_SCENARIOS = 25
STATEFUL_STEPS = 6
UPLOAD_LIMIT_BYTES = 40_000


def app_settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        mqtt_enabled=False,
        public_url="http://testserver",
        plan_refresh_min=0,
        max_upload_bytes=UPLOAD_LIMIT_BYTES,
    )


# ------------------------------------------------------------------ fuzzing

# The spec, read once at collection to make one test per operation. This app is never
# started, so its data dir is never created.
SPEC: dict[str, Any] = create_app(app_settings(Path("/nonexistent/loaxa-spec-only"))).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


IDENTITIES = {
    "admin": (Role.PROVINCE_ADMIN, PROVINCE),
    "operator": (Role.COMMUNE_OPERATOR, "01273"),
}


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The TestClient owns the app's lifespan (start-up and a clean shutdown after the
    module); schemathesis' ASGI client only carries the generated requests."""
    data_dir = tmp_path_factory.mktemp("fuzz") / "server"
    with TestClient(create_app(app_settings(data_dir))) as client:
        # Real objects of every kind (stations, audio, alerts, programmes, users...) whose
        # ids the list operations hand to the stateful sequences.
        make_world(authenticate(client))
        client.headers.pop("Authorization")
        yield client


def session_for(client: TestClient, who: str) -> requests.Session:
    """A requests session that reaches the app in-process, carrying ``who``'s token."""
    engine = context_of(client).engine
    grant = IDENTITIES[who]

    class FreshTokenSession(ASGIClient):  # type: ignore[misc]
        """Mints a token per request: the fuzzer may well revoke the one it holds."""

        def request(self, *args: Any, **kwargs: Any) -> Response:
            # Over any Authorization the fuzzer made up: 401 is not what is being tested.
            headers = dict(kwargs.pop("headers", None) or {})
            headers.update(bearer(make_token(engine, f"fuzz-{who}", grant)))
            return super().request(*args, headers=headers, **kwargs)

    return FreshTokenSession(client.app)


@pytest.fixture(scope="module")
def fuzz_session(fuzz_client: TestClient) -> requests.Session:
    return session_for(fuzz_client, "admin")


def assert_no_crash(response: Response, case: schemathesis.Case) -> None:
    reproduce = case.as_curl_command()
    assert response.status_code < 500, f"{response.status_code} for {reproduce}"
    if response.status_code >= 400 and case.method != "HEAD":  # HEAD answers carry no body
        body = response.json()
        assert isinstance(body, dict) and "detail" in body, f"{body!r} for {reproduce}"
        assert "Traceback" not in str(body["detail"])


def fuzz_settings(who: str) -> settings:
    return settings(
        max_examples=FUZZ_EXAMPLES[who],
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )


@schema.parametrize()
@fuzz_settings("admin")
def test_no_request_gets_a_server_error(
    case: schemathesis.Case, fuzz_session: requests.Session
) -> None:
    assert_no_crash(case.call(base_url="http://testserver", session=fuzz_session), case)


@schema.parametrize()
@fuzz_settings("operator")
def test_no_request_of_a_commune_operator_gets_a_server_error(
    case: schemathesis.Case, fuzz_client: TestClient
) -> None:
    session = session_for(fuzz_client, "operator")
    assert_no_crash(case.call(base_url="http://testserver", session=session), case)


# Sequences use valid inputs only: each step must succeed for the next to get a real id.
stateful_schema = schemathesis.openapi.from_dict(SPEC)
stateful_schema.config.generation.update(modes=[GenerationMode.POSITIVE])


class ApiWorkflow(stateful_schema.as_state_machine()):  # type: ignore[misc]
    """Sequences of calls along the links between operations (id from one, used by the next)."""

    session: requests.Session
    reached: ClassVar[set[str]] = set()
    """operations on an existing object (an id in the path) that answered 2xx"""

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"base_url": "http://testserver", "session": self.session}

    def validate_response(
        self, response: Response, case: schemathesis.Case, **_kwargs: Any
    ) -> None:
        assert_no_crash(response, case)
        if "{" in case.path and response.status_code < 300:
            self.reached.add(f"{case.method} {case.path}")


@pytest.mark.parametrize("who", list(IDENTITIES))
def test_no_sequence_of_calls_gets_a_server_error(who: str, fuzz_client: TestClient) -> None:
    ApiWorkflow.session = session_for(fuzz_client, who)
    ApiWorkflow.reached = set()
    ApiWorkflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=STATEFUL_STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
    # The links worked: ids taken from one answer reached real objects in the next call.
    # Checked on the administrator's run, which may touch every object; the operator's
    # sequences mostly meet 403 outside its commune (what that run is for: no 500 there).
    if who == "admin":
        assert ApiWorkflow.reached, "no sequence reached an existing object"


# ------------------------------------------------------------------ uploads


@pytest.fixture
def jail(tmp_path: Path) -> Path:
    """The data dir sits three levels down, so '../../x' from the store lands in tmp_path."""
    return tmp_path / "jail" / "deep" / "server"


@pytest.fixture
def client(jail: Path) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(jail))) as test_client:
        yield authenticate(test_client)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def multipart(filename: bytes, data: bytes) -> tuple[bytes, dict[str, str]]:
    """A body built by hand, so the filename bytes reach the server exactly as given."""
    boundary = "loaxa-fuzz-boundary"
    body = (
        b"--" + boundary.encode() + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
        b"--" + boundary.encode() + b"--\r\n"
    )
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_an_oversized_upload_is_413_and_stores_nothing(client: TestClient, jail: Path) -> None:
    before = files_under(jail)
    big = make_audio("wav", 1.0)  # ~88 kB, over the 40 kB limit
    assert len(big) > UPLOAD_LIMIT_BYTES
    response = client.post("/api/v1/audio", files={"file": ("big.wav", big)})
    assert response.status_code == 413
    assert "max_upload_bytes" in response.json()["detail"]
    assert files_under(jail) - before == set()  # no audio, no temporary file left behind
    assert uploaded_assets(context_of(client).engine) == []
    assert client.get("/api/v1/audit", params={"action": "audio."}).json() == []


@pytest.mark.parametrize(
    "filename",
    [
        b"../../etc/passwd",
        b"../../../../../../../../tmp/loaxa-pwned.wav",
        b"/etc/passwd",
        b"..\\..\\windows\\win.ini",
        b"a\x00b.wav",
        b"../../x\x00.wav",
        b"%2e%2e%2f%2e%2e%2fx.wav",
    ],
    ids=["dotdot", "deep", "absolute", "backslash", "nul", "dotdot-nul", "encoded"],
)
@pytest.mark.parametrize("audio", [True, False], ids=["audio", "junk"])
def test_a_traversal_filename_stores_nothing_outside_the_store(
    client: TestClient, jail: Path, filename: bytes, audio: bool
) -> None:
    sandbox = jail.parent.parent.parent  # tmp_path
    outside_before = files_under(sandbox) - files_under(jail)
    data = make_audio("wav", 0.2, rate=8000) if audio else b"#!/bin/sh\nrm -rf /\n" * 50
    body, headers = multipart(filename, data)
    response = client.post("/api/v1/audio", content=body, headers=headers)

    assert response.status_code in (201, 422), response.text
    assert files_under(sandbox) - files_under(jail) == outside_before
    assert not Path("/tmp/loaxa-pwned.wav").exists()
    context = context_of(client)
    library = library_file_names(context.engine)
    stored = {p for p in files_under(context.settings.audio_dir) if p.name not in library}
    if audio:
        # Content-addressed: the only file is <sha[:2]>/<sha>, whatever the client called it.
        sha256 = response.json()["sha256"]
        assert {p.relative_to(context_of(client).settings.audio_dir) for p in stored} == {
            Path(sha256[:2]) / sha256
        }
    else:
        assert stored == set()
        assert "Traceback" not in response.json()["detail"]
        assert client.get("/api/v1/audit", params={"action": "audio."}).json() == []


@pytest.mark.parametrize(
    "audio_id",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "..%2F..",
        "%2e%2e%2f%2e%2e%2fkeys",
        "..",
        "1%00",
    ],
)
def test_the_content_route_refuses_traversal_ids(client: TestClient, audio_id: str) -> None:
    response = client.get(f"/api/v1/audio/{audio_id}/content?exp=4102444800&sig=x")
    assert response.status_code in (404, 422), response.text
    assert "detail" in response.json()
    assert b"root:" not in response.content and b"PRIVATE KEY" not in response.content


# --------------------------------------------------------------- id ranges

TOO_BIG_ID = 2**63  # one past the largest 64-bit integer a database column holds


def id_only_routes() -> list[tuple[str, str]]:
    """(method, path) of every operation whose only required input is integer path ids.

    Taken from the spec, so a new route is covered the day it is added.
    """
    routes = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            ids = [p for p in params if p["in"] == "path" and p["schema"].get("type") == "integer"]
            others = [p for p in params if p["in"] != "path" and p.get("required")]
            if ids and not others and "requestBody" not in operation:
                routes.append((method.upper(), path))
    return routes


@pytest.mark.parametrize(("method", "path"), id_only_routes())
def test_an_id_beyond_64_bits_is_not_found_not_a_crash(
    fuzz_session: requests.Session, method: str, path: str
) -> None:
    url = "http://testserver" + re.sub(r"\{[^}]+\}", str(TOO_BIG_ID), path)
    response = fuzz_session.request(method, url, params={"exp": 4102444800, "sig": "x"})
    assert response.status_code in (403, 404, 422), f"{method} {url}: {response.status_code}"


# --------------------------------------------------------------- found by the fuzzer


def test_rotating_keys_past_what_a_station_holds_is_refused_before_anything_changes(
    client: TestClient,
) -> None:
    """The fuzzer's 500: the 15th rotation within a week wrote a new key, then could not
    build the trust update (16 keys at most), so stations would never learn the key
    that signs their plans."""
    answers = [client.post("/api/v1/keys/rotate", json={}) for _ in range(MAX_TRUSTED_KEYS)]
    assert [a.status_code for a in answers] == [200] * (MAX_TRUSTED_KEYS - 2) + [409, 409]
    signing = client.get("/api/v1/keys").json()
    refused = answers[-1].json()["detail"]
    assert f"at most {MAX_TRUSTED_KEYS} keys" in refused and "rotate again after" in refused
    assert signing["signing_kid"] == answers[MAX_TRUSTED_KEYS - 3].json()["new_kid"]
    assert len(signing["trusted"]) == MAX_TRUSTED_KEYS


# ------------------------------------------------------- integers at their edges

EXTREMES = (-(2**63) - 1, -99_999_999_999_999, -1, 0, 2**63, 10**30)
"""Past both ends of a 64-bit column, past what a date can hold, and the small edges: the
values a random search rarely draws (it missed `exp=-99999999999999` on the signed audio
URL, which crashed with "year out of range")."""


def integer_parameters() -> list[tuple[str, str, str]]:
    """(method, path, name) of every integer path or query parameter of an operation that
    needs no body, taken from the spec so a new one is covered the day it is added."""
    found = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            if operation.get("requestBody", {}).get("required"):
                continue
            for param in operation.get("parameters", []):
                schema_ = param["schema"]
                types = {schema_.get("type")} | {s.get("type") for s in schema_.get("anyOf", [])}
                if "integer" in types and param["in"] in ("path", "query"):
                    found.append((method.upper(), path, param["name"]))
    return found


@pytest.mark.parametrize(("method", "path", "name"), integer_parameters())
def test_an_integer_at_its_edges_is_refused_not_a_crash(
    fuzz_client: TestClient, method: str, path: str, name: str
) -> None:
    params = [p for p in SPEC["paths"][path][method.lower()].get("parameters", [])]
    for value in EXTREMES:
        filled = {p["name"]: value if p["name"] == name else "1" for p in params}
        url = path.format(**{p["name"]: filled[p["name"]] for p in params if p["in"] == "path"})
        query = {p["name"]: filled[p["name"]] for p in params if p["in"] == "query"}
        for session in (session_for(fuzz_client, "admin"), ASGIClient(fuzz_client.app)):
            response = session.request(method, "http://testserver" + url, params=query)
            assert response.status_code < 500, f"{method} {url} {query}: {response.text[:200]}"
