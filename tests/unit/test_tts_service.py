"""TtsService: real espeak-ng, the real upload pipeline (ffmpeg), a real SQLite file."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from server.audio.store import AudioStore
from server.audio.synth import wav_bytes
from server.audit.models import AuditEntry
from server.auth.actor import Actor, Grant
from server.db import create_tables, make_engine
from server.models import AudioAsset
from server.tts.engines import EspeakEngine
from server.tts.errors import TtsSynthesisError, TtsTextError, TtsVoiceError
from server.tts.service import TtsService

NOTICE = "UBND xã thông báo: lịch tiêm phòng dại cho chó, mèo vào 7h30 ngày 28/11/2026."


class CountingEngine(EspeakEngine):
    """The real espeak-ng, counting how often it is asked to speak."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.calls: list[str] = []
        self.version_override: str | None = None

    def version(self) -> str:
        return self.version_override or super().version()

    def synthesise(self, text: str, voice: str) -> bytes:
        self.calls.append(text)
        return super().synthesise(text, voice)


class SilentEngine(CountingEngine):
    def synthesise(self, text: str, voice: str) -> bytes:
        return wav_bytes(np.zeros(22050, dtype=np.float32), 22050)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loaxa.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(tmp_path: Path) -> AudioStore:
    return AudioStore(tmp_path / "audio")


def decoded(path: Path) -> np.ndarray:
    done = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "f32le", "-"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(done.stdout, dtype="<f4").astype(np.float64)


def test_text_is_spoken_into_the_store_as_non_silent_delivery_audio(
    db: Engine, store: AudioStore
) -> None:
    service = TtsService(CountingEngine(), store)
    with Session(db) as session:
        rendering = service.render_detailed(session, NOTICE)
    asset = rendering.asset
    assert rendering.created and rendering.engine == "espeak-ng" and rendering.voice == "vi"
    assert "bảy giờ ba mươi phút ngày hai mươi tám tháng mười một" in rendering.normalised_text
    assert asset.original_filename.startswith("tts: Ủy ban nhân dân xã thông báo")
    assert asset.codec in {"opus", "mp3"}
    # What a station plays: the stored file, decoded again.
    pcm = decoded(store.path(asset.sha256))
    seconds = pcm.size / 16000
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm**2)))
    print(f"tts notice: {seconds:.2f} s, RMS {rms_dbfs:.1f} dBFS, {asset.lufs_after:.1f} LUFS")
    assert 4.0 < seconds < 25.0
    assert abs(seconds * 1000 - asset.duration_ms) < 80
    assert rms_dbfs > -30
    assert asset.lufs_after == pytest.approx(-16.0, abs=1.5)  # same target as uploads
    assert asset.true_peak_after_dbtp <= -0.5
    with Session(db) as other:  # render committed: another session sees the asset
        assert other.get(AudioAsset, asset.id) is not None


def test_the_same_text_and_voice_are_rendered_once(db: Engine, store: AudioStore) -> None:
    engine = CountingEngine()
    service = TtsService(engine, store)
    with Session(db) as session:
        first = service.render(session, NOTICE)
        again = service.render(session, f"  {NOTICE}\n")
        south = service.render(session, NOTICE, "vi-vn-x-south")
        assert again.id == first.id
        assert south.id != first.id
        assert len(engine.calls) == 2
        engine.version_override = "9.9"  # an upgraded espeak-ng may say it differently
        upgraded = service.render(session, NOTICE)
        assert len(engine.calls) == 3
        assert upgraded.sha256 == first.sha256  # same bytes: the stored asset is reused
        assert upgraded.id == first.id
        assert service.render(session, NOTICE).id == first.id  # and the new key is cached
        assert len(engine.calls) == 3


def test_concurrent_renders_of_one_text_synthesise_once(db: Engine, store: AudioStore) -> None:
    engine = CountingEngine()
    service = TtsService(engine, store)
    ids: list[int | None] = []

    def render() -> None:
        with Session(db) as session:
            ids.append(service.render(session, "Bà con chú ý, bà con chú ý.").id)

    threads = [threading.Thread(target=render) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(set(ids)) == 1 and len(ids) == 3
    assert len(engine.calls) == 1


def test_a_lost_file_is_rendered_again(db: Engine, store: AudioStore) -> None:
    engine = CountingEngine()
    service = TtsService(engine, store)
    with Session(db) as session:
        asset = service.render(session, "Xin chào bà con.")
        store.delete(asset.sha256)
        again = service.render(session, "Xin chào bà con.")
    assert again.id == asset.id and store.exists(asset.sha256)
    assert len(engine.calls) == 2


def test_the_length_guard_says_how_long_and_what_to_do(db: Engine, store: AudioStore) -> None:
    service = TtsService(CountingEngine(), store, max_chars=100)
    with Session(db) as session, pytest.raises(TtsTextError) as caught:
        service.render(session, "Bà con chú ý. " * 10)
    message = str(caught.value)
    assert "140 characters is too long" in message and "limit is 100" in message
    assert "Split it into several items" in message


@pytest.mark.parametrize("text", ["", "   \n ", "!!! … ---"])
def test_nothing_to_say_is_refused(db: Engine, store: AudioStore, text: str) -> None:
    with Session(db) as session, pytest.raises(TtsTextError, match="nothing to read aloud"):
        TtsService(CountingEngine(), store).render(session, text)


def test_a_bad_voice_is_refused_before_any_work(db: Engine, store: AudioStore) -> None:
    engine = CountingEngine()
    with Session(db) as session, pytest.raises(TtsVoiceError):
        TtsService(engine, store).render(session, "Xin chào", "fr")
    assert engine.calls == []


def test_silent_engine_output_is_refused_and_nothing_is_stored(
    db: Engine, store: AudioStore
) -> None:
    with Session(db) as session:
        with pytest.raises(TtsSynthesisError, match="silent"):
            TtsService(SilentEngine(), store).render(session, "Xin chào")
        assert session.exec(select(AudioAsset)).all() == []
    assert not store.root.exists() or not any(store.root.rglob("*"))


def test_a_rendering_on_behalf_of_someone_is_audited(db: Engine, store: AudioStore) -> None:
    actor = Actor(
        kind="user", name="can-bo-xa", user_id=1, grants=(Grant("commune_operator", "01273"),)
    )
    service = TtsService(CountingEngine(), store)
    with Session(db) as session:
        asset = service.render(session, "Thông báo lịch cắt điện.", actor=actor)
        service.render(session, "Thông báo lịch cắt điện.", actor=actor)  # cached: no entry
        entries = session.exec(
            select(AuditEntry).where(col(AuditEntry.action) == "audio.tts")
        ).all()
    assert len(entries) == 1
    assert entries[0].object_id == str(asset.id)
