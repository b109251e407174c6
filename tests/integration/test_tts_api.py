"""POST /api/v1/audio/tts on a real app: real espeak-ng, real ffmpeg, real SQLite."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.auth.permissions import Role
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings

URL = "/api/v1/audio/tts"
NOTICE = (
    "UBND xã Cao Bồ thông báo: từ 05:00 ngày 25/11/2026, thu tiền BHYT năm 2027 "
    "là 1.263.600 đồng mỗi người."
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, tts_max_chars=400)
    with TestClient(create_app(settings, bus=RecordingBus())) as test_client:
        yield authenticate(test_client)


def decode_pcm(data: bytes) -> np.ndarray:
    """What a station would play: the stored file decoded by ffmpeg to 16 kHz mono."""
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        input=data,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(done.stdout, dtype="<f4")


def test_text_becomes_stored_speech_with_its_normalised_text(client: TestClient) -> None:
    response = client.post(URL, json={"text": NOTICE})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] is True
    assert body["engine"] == "espeak-ng" and body["voice"] == "vi"
    spoken = body["normalised_text"]
    assert spoken.startswith("Ủy ban nhân dân xã Cao Bồ thông báo")
    assert "năm giờ" in spoken
    assert "ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu" in spoken
    assert "bảo hiểm y tế" in spoken
    assert "một triệu hai trăm sáu mươi ba nghìn sáu trăm đồng" in spoken
    assert body["codec"] in {"opus", "mp3"}
    assert -17.5 < body["lufs_after"] < -14.5  # the same loudness target as uploads

    # The preview URL serves exactly the stored, playable, non-silent speech.
    url = urlsplit(body["content_url"])
    audio = client.get(f"{url.path}?{url.query}")
    assert audio.status_code == 200
    pcm = decode_pcm(audio.content)
    seconds = pcm.size / 16000
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert 4.0 < seconds < 25.0, seconds
    assert abs(seconds * 1000 - body["duration_ms"]) < 100
    assert rms_dbfs > -30, rms_dbfs

    # The asset is an ordinary audio asset: readable by id like any upload.
    assert client.get(f"/api/v1/audio/{body['id']}").json()["sha256"] == body["sha256"]


def test_the_same_text_is_served_from_the_cache(client: TestClient) -> None:
    first = client.post(URL, json={"text": NOTICE})
    again = client.post(URL, json={"text": "  " + NOTICE + "  "})
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["id"] == first.json()["id"]
    other_voice = client.post(URL, json={"text": NOTICE, "voice": "vi-vn-x-south"})
    assert other_voice.status_code == 201
    assert other_voice.json()["sha256"] != first.json()["sha256"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"text": "   "}, "nothing to read aloud"),
        ({"text": "… !!! ---"}, "nothing to read aloud"),
        ({"text": "a" * 401}, "401 characters is too long"),
        ({"text": "Xin chào", "voice": "en-us"}, "voice 'en-us' is not a Vietnamese"),
        ({"text": "Xin chào", "voice": "../../etc"}, "is not a Vietnamese"),
        ({}, "text: Field required"),
    ],
)
def test_bad_text_is_refused_with_a_precise_message(
    client: TestClient, body: dict[str, str], fragment: str
) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_a_missing_piper_voice_is_a_clear_503(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, tts_engine="piper", tts_piper_model=tmp_path / "vi_VN-none.onnx"
    )
    with TestClient(create_app(settings, bus=RecordingBus())) as client:
        authenticate(client)
        response = client.post(URL, json={"text": "Xin chào bà con"})
    assert response.status_code == 503
    assert "vi_VN-none.onnx does not exist" in response.json()["detail"]


def test_a_viewer_may_not_render_and_the_refusal_names_the_permission(
    client: TestClient,
) -> None:
    token = make_token(context_of(client).engine, "viewer", (Role.VIEWER, "01273"))
    response = client.post(URL, json={"text": "Xin chào"}, headers=bearer(token))
    assert response.status_code == 403
    assert "audio.upload" in response.json()["detail"]
