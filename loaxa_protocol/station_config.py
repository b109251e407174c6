"""A station's configuration schema, strict: a typo is an error with its path.

It lives in the protocol package because both sides need it without the other: the
server writes one for every registered station (``POST /api/v1/stations`` returns it),
the station (``node_firmware.config``) reads it from YAML. Only pydantic here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

AreaCode = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")]
"""An area code becomes part of an MQTT topic: no ``/``, ``+``, ``#`` or spaces."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokerAddress(_Section):
    host: str = Field(description="broker host name or address")
    port: int = Field(ge=1, le=65535, description="broker port")


class MqttConfig(_Section):
    host: str = Field(default="127.0.0.1", description="broker host name or address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker port")
    fallbacks: list[BrokerAddress] = Field(
        default_factory=list,
        description="further addresses of the same broker service (the nodes of a broker "
        "cluster), tried in turn after host:port when one cannot be reached; same account, "
        "TLS setting and CA",
    )
    username: str | None = Field(default=None, description="this station's broker user")
    password: str | None = Field(default=None, description="this station's broker password")
    tls: bool = Field(default=False, description="connect with TLS")
    ca_file: Path | None = Field(default=None, description="CA bundle for TLS")
    keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keepalive")


class TrustedKeyConfig(_Section):
    kid: str = Field(description="key id as it appears in envelopes")
    public_key: str = Field(description="raw Ed25519 public key, base64url")
    purposes: list[str] = Field(
        description="message types this key may sign: plan, command, trust, alert"
    )
    valid_until: datetime | None = Field(
        default=None, description="a rotated-out key: its signatures are refused after this"
    )


class RelayConfig(_Section):
    driver: Literal["ch340", "line", "gpio", "sim", "sim-line", "none"] = Field(
        default="none",
        description="relay board protocol; gpio drives a relay module on a Pi's header; "
        "sim / sim-line start a simulated CH340 / line-protocol board (the latter reports "
        "amplifier current)",
    )
    port: str | None = Field(default=None, description="serial device, e.g. /dev/ttyUSB0")
    channel: int = Field(default=1, ge=1, le=8, description="relay channel of the amplifier")
    baudrate: int = Field(default=9600, description="serial speed")
    pin: int | None = Field(default=None, ge=0, le=27, description="gpio: BCM pin number")
    active_low: bool = Field(default=False, description="gpio: the module switches on LOW")


class ModemConfig(_Section):
    driver: Literal["serial", "sim", "none"] = Field(
        default="none", description="a 4G modem answering AT commands; sim starts a simulated one"
    )
    port: str | None = Field(default=None, description="its AT command port, e.g. /dev/ttyUSB2")
    baudrate: int = Field(default=115200, description="serial speed")


class PlayerConfig(_Section):
    driver: Literal["sim", "alsa"] = Field(default="sim", description="sim records, alsa plays")
    device: str = Field(default="default", description="ALSA device for the alsa driver")


class NodeConfig(_Section):
    station_id: str = Field(description="this station's id, as registered on the server")
    areas: list[AreaCode] = Field(
        default_factory=list,
        description="area codes this station is in, nearest first; it hears their alerts",
    )
    server_url: str = Field(default="http://127.0.0.1:8000", description="the Loaxa server")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="broker connection")
    trusted_keys: list[TrustedKeyConfig] = Field(description="keys whose signatures we obey")
    data_dir: Path = Field(description="plan, replay state and audio cache live here")
    relay: RelayConfig = Field(default_factory=RelayConfig, description="amplifier relay")
    player: PlayerConfig = Field(default_factory=PlayerConfig, description="audio output")
    modem: ModemConfig = Field(default_factory=ModemConfig, description="signal and operator")
    amp_lead_ms: int = Field(default=1500, ge=0, le=60000, description="amp on before audio")
    amp_tail_ms: int = Field(default=1000, ge=0, le=60000, description="amp off after audio")
    heartbeat_s: float = Field(default=60, gt=0, description="health report interval")
    cache_max_bytes: int = Field(default=2 * 1024**3, gt=0, description="audio cache budget")
