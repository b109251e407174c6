"""The station's configuration file (YAML), validated by the protocol's strict schema.

A technician (or enrolment) puts it on the Pi; a typo is an error with its path, never a
silent default. The schema itself is :mod:`loaxa_protocol.station_config`, shared with the
server that writes these files.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from loaxa_protocol.errors import ConfigError
from loaxa_protocol.station_config import (
    ModemConfig,
    MqttConfig,
    NodeConfig,
    PlayerConfig,
    RelayConfig,
    TrustedKeyConfig,
)

__all__ = [
    "ModemConfig",
    "MqttConfig",
    "NodeConfig",
    "PlayerConfig",
    "RelayConfig",
    "TrustedKeyConfig",
    "load_node_config",
]


def load_node_config(path: Path) -> NodeConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from exc
