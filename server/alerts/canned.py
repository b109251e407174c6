"""The canned alert library: an attention tone and standard spoken messages.

Every station keeps these cached ahead of need (the plan publisher lists each library
asset in ``Plan.keep``), so a canned alert is a few hundred bytes on the wire and plays
at once. The files in ``audio/`` at the repository root are generated, not recorded
(numpy for the tone, espeak-ng's Vietnamese voice for the speech), so they carry no
licence questions; ``scripts/make-canned-audio`` regenerates them with
:func:`render_library`. At start-up :func:`seed_library` puts them in the audio store
and the ``AudioAsset`` table under their ``library`` names, from the manifest written
alongside (the files are already pipeline output: normalised, encoded, measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlmodel import Session, col, select

from loaxa.assets import CANNED_AUDIO_DIR
from server.audio.pipeline import RATE, process_audio
from server.audio.store import AudioStore
from server.audio.synth import espeak_vi, tone, wav_bytes
from server.models import AudioAsset

log = logging.getLogger(__name__)

# The repository's top-level audio/, packaged through loaxa/assets (so a wheel carries it).
LIBRARY_DIR = CANNED_AUDIO_DIR
MANIFEST = "library.json"
PREFIX = "alert:"
TONE = "tone"


@dataclass(frozen=True)
class CannedMessage:
    name: str
    title_vi: str
    title_en: str
    speech_vi: str
    """what espeak-ng says; empty for the tone"""


MESSAGES: tuple[CannedMessage, ...] = (
    CannedMessage(
        "typhoon",
        "Cảnh báo bão",
        "Typhoon warning",
        "Thông báo khẩn cấp. Bão mạnh đang tiến vào khu vực. Bà con hãy chằng chống nhà cửa, "
        "không ra khỏi nhà, và làm theo hướng dẫn của chính quyền địa phương.",
    ),
    CannedMessage(
        "flood",
        "Cảnh báo lũ",
        "Flood warning",
        "Thông báo khẩn cấp. Nước lũ đang lên nhanh. Bà con ở vùng trũng và ven sông, suối "
        "hãy di chuyển ngay đến nơi cao và an toàn.",
    ),
    CannedMessage(
        "dam_release",
        "Cảnh báo xả lũ hồ chứa",
        "Dam release warning",
        "Thông báo khẩn cấp. Hồ chứa thượng nguồn đang xả lũ. Bà con không được ở gần lòng "
        "sông, không qua sông, và đưa người, gia súc đến nơi an toàn.",
    ),
    CannedMessage(
        "fire",
        "Cảnh báo cháy",
        "Fire warning",
        "Thông báo khẩn cấp. Đang có cháy trong khu vực. Bà con hãy tránh xa đám cháy, "
        "giữ an toàn, và gọi một một bốn.",
    ),
    CannedMessage(
        "epidemic",
        "Cảnh báo dịch bệnh",
        "Epidemic warning",
        "Thông báo khẩn cấp về dịch bệnh. Bà con hãy hạn chế tụ tập, giữ vệ sinh, và đến "
        "trạm y tế khi có dấu hiệu bệnh.",
    ),
    CannedMessage(
        "all_clear",
        "Hết nguy hiểm",
        "All clear",
        "Thông báo. Tình trạng khẩn cấp đã kết thúc. Bà con có thể trở lại sinh hoạt bình thường.",
    ),
)
BY_NAME = {m.name: m for m in MESSAGES}
CANNED_NAMES = tuple(BY_NAME)


def library_name(name: str) -> str:
    return f"{PREFIX}{name}"


def attention_tone() -> np.ndarray:
    """Three two-tone sweeps (hi-lo, 960/770 Hz), 3 s: unmistakably not a programme."""
    parts = []
    for _ in range(3):
        parts += [tone(0.4, 960.0, -3.0), tone(0.4, 770.0, -3.0)]
        parts.append(np.zeros(round(0.2 * RATE), dtype=np.float32))
    return np.concatenate(parts).astype(np.float32)


def render_library(out_dir: Path = LIBRARY_DIR) -> dict[str, dict[str, object]]:
    """Synthesise, normalise and encode the tone and every message into ``out_dir``.

    Writes ``<name>.opus`` per entry plus ``library.json`` (measurements the server
    stores with each asset). Needs espeak-ng.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = {TONE: wav_bytes(attention_tone())}
    for message in MESSAGES:
        speech = espeak_vi(message.speech_vi)
        if speech is None:
            raise RuntimeError("espeak-ng is not installed: cannot speak the canned messages")
        sources[message.name] = wav_bytes(speech)
    manifest: dict[str, dict[str, object]] = {}
    for name, wav in sources.items():
        processed = process_audio(wav, f"{name}.wav")
        (out_dir / f"{name}.{processed.codec}").write_bytes(processed.encoded)
        manifest[name] = {
            "file": f"{name}.{processed.codec}",
            "sha256": processed.sha256,
            "size_bytes": processed.size_bytes,
            "duration_ms": processed.duration_ms,
            "codec": processed.codec,
            "mime_type": processed.mime_type,
            "lufs_before": processed.lufs_before,
            "lufs_after": processed.lufs_after,
            "true_peak_before_dbtp": processed.true_peak_before_dbtp,
            "true_peak_after_dbtp": processed.true_peak_after_dbtp,
            "gain_db": processed.gain_db,
            "sample_rate": processed.sample_rate,
        }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def seed_library(session: Session, store: AudioStore, library_dir: Path = LIBRARY_DIR) -> int:
    """Store each library file and give it an ``AudioAsset`` named ``alert:<name>``.

    Idempotent; a regenerated file replaces the library name's asset (the old asset
    stays for anything that referenced it). Returns how many assets changed.
    """
    manifest_path = library_dir / MANIFEST
    if not manifest_path.is_file():
        log.warning("alerts: no canned library at %s; canned alerts are unavailable", library_dir)
        return 0
    manifest = json.loads(manifest_path.read_text())
    current = {
        a.library: a
        for a in session.exec(select(AudioAsset).where(col(AudioAsset.library).is_not(None)))
    }
    changed = 0
    for name, meta in manifest.items():
        wanted = library_name(name)
        existing = current.get(wanted)
        if existing is not None and existing.sha256 == meta["sha256"]:
            continue
        data = (library_dir / meta["file"]).read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 != meta["sha256"]:
            raise ValueError(f"{library_dir / meta['file']}: sha256 does not match {MANIFEST}")
        store.put(data)
        if existing is not None:
            existing.library = None
            session.add(existing)
            session.flush()
        asset = session.exec(select(AudioAsset).where(AudioAsset.sha256 == sha256)).first()
        if asset is None:
            asset = AudioAsset(
                sha256=sha256,
                source_sha256=sha256,
                size_bytes=len(data),
                duration_ms=int(meta["duration_ms"]),
                codec=str(meta["codec"]),
                mime_type=str(meta["mime_type"]),
                original_filename=str(meta["file"]),
                lufs_before=meta["lufs_before"],
                lufs_after=float(meta["lufs_after"]),
                true_peak_before_dbtp=float(meta["true_peak_before_dbtp"]),
                true_peak_after_dbtp=float(meta["true_peak_after_dbtp"]),
                gain_db=float(meta["gain_db"]),
                sample_rate=int(meta["sample_rate"]),
            )
        asset.library = wanted
        session.add(asset)
        changed += 1
    session.commit()
    if changed:
        log.info("alerts: seeded %s canned library assets", changed)
    return changed


def library_assets(session: Session) -> dict[str, AudioAsset]:
    """Library assets by short name (``tone``, ``typhoon``…)."""
    rows = session.exec(select(AudioAsset).where(col(AudioAsset.library).startswith(PREFIX)))
    return {a.library.removeprefix(PREFIX): a for a in rows if a.library is not None}
