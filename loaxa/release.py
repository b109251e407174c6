"""Making a release: the station's wheels plus a manifest signed by the release key.

Runs where the release key lives (a build machine, not the server): ``loaxa release
keygen`` makes the key and prints the public half for the server's
``release_public_key``; ``loaxa release sign DIR`` writes ``DIR/manifest.json`` over the
wheels ``./scripts/build-station DIR`` wrote. The server then only checks and stores it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from loaxa_protocol import SigningKey
from loaxa_protocol.durable import write_atomically
from loaxa_protocol.release import (
    RELEASE_PURPOSE,
    ReleaseFile,
    ReleaseManifest,
    sign_manifest,
)

REPO = Path(__file__).resolve().parents[1]
MANIFEST = "manifest.json"
_NODE_WHEEL = re.compile(r"^loaxa_node-([^-]+)-")


def generate_key(path: Path) -> SigningKey:
    """A new release key in ``path`` (PKCS#8 PEM, mode 0600); refuses to overwrite."""
    if path.exists():
        raise FileExistsError(f"{path} exists: a release key is never replaced by accident")
    key = SigningKey.generate(RELEASE_PURPOSE)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, key.to_pem(), mode=0o600)
    return key


def load_key(path: Path) -> SigningKey:
    return SigningKey.from_pem(path.read_bytes(), RELEASE_PURPOSE)


def manifest_for(folder: Path, now: datetime | None = None) -> ReleaseManifest:
    """The manifest of every wheel in ``folder``; the version is the loaxa_node wheel's."""
    files = []
    version = None
    for path in sorted(folder.glob("*.whl")):
        data = path.read_bytes()
        files.append(
            ReleaseFile(
                name=path.name, sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
            )
        )
        match = _NODE_WHEEL.match(path.name)
        if match:
            version = match.group(1)
    if version is None:
        raise ValueError(f"{folder} holds no loaxa_node wheel (./scripts/build-station DIR)")
    return ReleaseManifest(version=version, created_at=now or datetime.now(UTC), files=files)


def sign_folder(folder: Path, key: SigningKey) -> str:
    """Write ``folder/manifest.json`` (signed) and return its text."""
    signed = sign_manifest(manifest_for(folder), key)
    write_atomically(folder / MANIFEST, signed.encode())
    return signed


def build_station(
    folder: Path,
    version: str,
    source: Path = REPO,
    pip_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> None:
    """``./scripts/build-station folder`` with the release's version stamped in;
    ``pip_args`` go to its ``pip download`` (e.g. ``--no-index --find-links DIR``)."""
    run_env = {**(env if env is not None else os.environ), "LOAXA_NODE_VERSION": version,
               "LOAXA_NODE_SOURCE": str(source)}  # fmt: skip
    run_env.pop("PYTHONPATH", None)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(REPO / "scripts" / "build-station"), str(folder), *pip_args], check=True, env=run_env,
        cwd=folder.parent, stdout=subprocess.DEVNULL,
    )  # fmt: skip
