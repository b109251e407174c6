"""Zero-touch enrolment from the station's side: ask, wait for a technician, write the config.

A station leaves the workshop knowing only the province's enrolment address and the
claim code on its box. It makes an X25519 key pair (kept 0600 beside the config until
the config arrives, so a reboot while it waits resumes the same request), asks to
join, and polls with back-off. Once a technician approves it, the answer carries its
config sealed to that key; the station opens it, lays its own hardware sections over
it and writes the config atomically with mode 0600. Nothing secret is typed or copied.

The hardware the box was built with (relay board, sound output, modem, data folder)
is the station's knowledge, not the server's: a ``station.yaml`` present before
enrolment that holds only those sections is kept and merged over the server's config.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from nacl.public import PrivateKey

from loaxa_protocol.enrolment import (
    EnrolmentError,
    SealedBox,
    key_fingerprint,
    load_private_key,
    new_station_key,
    open_box,
    private_key_bytes,
    public_key_text,
)
from loaxa_protocol.errors import ConfigError
from node_firmware.config import NodeConfig, load_node_config
from node_firmware.drivers.disk import fsync_dir

log = logging.getLogger(__name__)

LOCAL_SECTIONS = frozenset({"relay", "player", "modem", "data_dir"})
"""What a station's own file may say before enrolment: its hardware, never its identity."""
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
HTTP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: doubling from ``first_s`` to ``max_s``, with jitter.

    A thousand boxes powered on together after a storm must not poll in lock-step, so
    each delay is drawn from its upper half. The server's own suggestion caps it while a
    request is merely waiting (the server is fine; the technician is not there yet).
    """

    first_s: float = FIRST_DELAY_S
    max_s: float = MAX_DELAY_S

    def delay(self, attempt: int, suggested_s: float | None, draw: float) -> float:
        """``draw`` in [0, 1) is the jitter; ``attempt`` counts from 0."""
        ceiling = min(self.first_s * 2**attempt, self.max_s)
        if suggested_s is not None:
            ceiling = min(ceiling, suggested_s)
        return ceiling * (0.5 + draw / 2)


def key_path_for(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".enrol-key")


def enrol(
    server_url: str,
    claim_code: str,
    config_path: Path,
    *,
    hostname: str | None = None,
    backoff: Backoff = Backoff(),
    sleep: Callable[[float], None] = time.sleep,
    transport: httpx.BaseTransport | None = None,
) -> NodeConfig:
    """Enrol unless ``config_path`` already holds a whole config; return the config."""
    local = _local_sections(config_path)
    if local is None:
        log.info("%s is a complete station config: already enrolled", config_path)
        return load_node_config(config_path)
    key = _station_key(key_path_for(config_path))
    body = {
        "claim_code": claim_code,
        "public_key": public_key_text(key),
        "hostname": hostname if hostname is not None else socket.gethostname()[:100],
    }
    log.info("enrolling at %s; key fingerprint %s", server_url, key_fingerprint(body["public_key"]))
    with httpx.Client(
        base_url=server_url.rstrip("/"), timeout=HTTP_TIMEOUT_S, transport=transport
    ) as http:
        answer = _call_until_answered(http, "/api/v1/enrolment/requests", body, backoff, sleep)
        attempt = 0
        while answer.get("sealed") is None:
            wait = backoff.delay(attempt, answer.get("retry_after_s"), random.random())
            # Once at INFO: a box may wait days for a technician, polling every few seconds.
            log.log(
                logging.INFO if attempt == 0 else logging.DEBUG,
                "waiting for a technician to approve request %s",
                answer.get("request_id"),
            )
            sleep(wait)
            attempt += 1
            answer = _call_until_answered(http, "/api/v1/enrolment/poll", body, backoff, sleep)
    sealed = SealedBox.model_validate(answer["sealed"])
    received = json.loads(open_box(key, sealed))
    config = NodeConfig.model_validate({**received, **local})
    write_config(config_path, config)
    key_path_for(config_path).unlink(missing_ok=True)  # its job is done
    log.info("enrolled as %s; config written to %s", config.station_id, config_path)
    return config


def write_config(path: Path, config: NodeConfig) -> None:
    """Write atomically with mode 0600: it carries the broker password."""
    text = yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), allow_unicode=True)
    write_private(path, text.encode("utf-8"))


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, readable only by the station's user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def _call_until_answered(
    http: httpx.Client,
    path: str,
    body: dict[str, str],
    backoff: Backoff,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """POST until the server answers; a refusal (4xx) ends enrolment with its reason."""
    attempt = 0
    while True:
        try:
            response = http.post(path, json=body)
        except httpx.HTTPError as exc:
            reason = f"cannot reach the server: {exc}"
        else:
            if response.status_code in (200, 202):
                return dict(response.json())
            if response.status_code == 429:
                retry = float(response.headers.get("Retry-After", backoff.max_s))
                reason = f"rate-limited for {retry:.0f} s"
                sleep(retry)
                continue
            if 400 <= response.status_code < 500:
                raise EnrolmentError(
                    f"the server refused enrolment ({response.status_code}): {_detail(response)}"
                )
            reason = f"server error {response.status_code}"
        wait = backoff.delay(attempt, None, random.random())
        log.warning("enrolment %s: %s; again in %.0f s", path, reason, wait)
        sleep(wait)
        attempt += 1


def _local_sections(path: Path) -> dict[str, Any] | None:
    """The station's own hardware sections, or None when ``path`` is a complete config."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if "station_id" in data:
        return None
    unknown = sorted(set(data) - LOCAL_SECTIONS)
    if unknown:
        raise ConfigError(
            f"{path}: before enrolment it may only hold {', '.join(sorted(LOCAL_SECTIONS))}; "
            f"found {', '.join(unknown)}"
        )
    return data


def _station_key(path: Path) -> PrivateKey:
    """The key pair of this enrolment, made once and kept 0600 until the config arrives."""
    if path.exists():
        return load_private_key(path.read_bytes())
    key = new_station_key()
    write_private(path, private_key_bytes(key))
    return key


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:200]
    if isinstance(detail, dict):
        return str(detail.get("message") or detail)
    return str(detail)
