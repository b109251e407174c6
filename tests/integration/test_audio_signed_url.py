"""The stations' download route refuses every malformed signed-URL parameter with a 4xx.

It is the one API route without a user, so anyone on the network can send it anything:
``exp=-99999999999999`` used to raise ``ValueError: year out of range`` (a 500).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate
from tests.integration.test_server_api import RecordingBus, context_of, make_settings, upload


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path), bus=RecordingBus())) as test_client:
        yield authenticate(test_client)


GOOD_SIG = "0" * 64


@pytest.mark.parametrize(
    ("exp", "sig", "status", "says"),
    [
        ("-99999999999999", "00", 422, "exp"),  # the reported 500
        ("-99999999999999", GOOD_SIG, 422, "greater than or equal to 0"),
        ("-1", GOOD_SIG, 422, "greater than or equal to 0"),
        ("99999999999999999999999999", GOOD_SIG, 422, "less than or equal to 253402300799"),
        ("253402300800", GOOD_SIG, 422, "less than or equal to 253402300799"),
        ("1.5", GOOD_SIG, 422, "exp"),
        ("nan", GOOD_SIG, 422, "exp"),
        ("", GOOD_SIG, 422, "exp"),
        ("4102444800", "00", 422, "sig"),
        ("4102444800", "é" * 64, 422, "sig"),  # compare_digest raises on non-ASCII text
        ("4102444800", "G" * 64, 422, "sig"),
        ("4102444800", GOOD_SIG + "0", 422, "sig"),
        ("0", GOOD_SIG, 403, "expired at 1970-01-01"),
        ("253402300799", GOOD_SIG, 403, "bad signature"),
    ],
)
def test_malformed_signed_url_parameters_are_refused_never_a_500(
    client: TestClient, exp: str, sig: str, status: int, says: str
) -> None:
    asset = upload(client, make_audio("wav", 0.5), "ban-tin.wav")
    client.cookies.clear()  # stations have no session: the route must stand on its own
    path = f"/api/v1/audio/{asset['id']}/content"
    assert client.head(path, params={"exp": exp, "sig": sig}).status_code == status
    response = client.get(path, params={"exp": exp, "sig": sig})
    assert response.status_code == status, response.text
    assert says in response.text


def test_a_properly_signed_url_still_downloads(client: TestClient) -> None:
    asset = upload(client, make_audio("wav", 0.5), "ban-tin.wav")
    url = context_of(client).keys.urls.sign_url(asset["id"], timedelta(hours=1), datetime.now(UTC))
    client.cookies.clear()
    response = client.get(url.removeprefix("http://testserver"))
    assert response.status_code == 200
    assert len(response.content) == asset["size_bytes"]
