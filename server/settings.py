"""Server settings: environment (``LOAXA_*``) over an optional YAML/TOML file over defaults.

One object carries every knob so that a test builds an app with its own settings and
production differs from the demo only by configuration (design decision 7). Unknown
keys in the file are errors, because a typo that silently falls back to a default is
how a station ends up pointed at the wrong broker.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from loaxa_protocol.errors import ConfigError
from loaxa_protocol.station_config import BrokerAddress
from server.auth.passwords import PasswordPolicyError, check_password_policy
from server.auth.permissions import Role

CONFIG_FILE_ENV = "LOAXA_CONFIG_FILE"

# Secrets people paste from tutorials. Refusing them at start-up is cheaper than
# discovering that every signed audio URL in the province can be forged.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "default",
        "changeit",
        "example",
        "test",
        "xxx",
        "todo",
        "your-secret-here",
        "insecure",
    }
)
MIN_SECRET_CHARS = 16

# The file to read is chosen per construction (ctor argument) but pydantic-settings asks
# for sources on the class; a context variable carries the choice across that gap.
_config_file: ContextVar[Path | None] = ContextVar("loaxa_config_file", default=None)


class Settings(BaseSettings):
    """Everything the server needs to know about its environment."""

    model_config = SettingsConfigDict(env_prefix="LOAXA_", extra="forbid")

    data_dir: Path = Field(
        default=Path("./var"),
        description="database, audio store and keys live here; created if missing",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default sqlite:///<data_dir>/loaxa.db, "
        "postgresql+psycopg://... in production",
    )
    leader_check_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="with several replicas on PostgreSQL: how often a replica tries to become "
        "the leader (runs the planner's roll, alarm checks and retention); the jobs move to "
        "another replica about this long after the leader dies",
    )
    mqtt_enabled: bool = Field(
        default=True, description="start the MQTT fleet link; off for API-only tests"
    )
    mqtt_host: str = Field(default="127.0.0.1", description="broker the server connects to")
    mqtt_port: int = Field(default=1883, ge=1, le=65535, description="broker port")
    mqtt_username: str | None = Field(default=None, description="the server's broker user")
    mqtt_password: SecretStr | None = Field(
        default=None, description="the server's broker password"
    )
    mqtt_tls: bool = Field(default=False, description="connect to the broker with TLS")
    mqtt_ca_file: Path | None = Field(
        default=None, description="CA bundle for the broker's TLS certificate"
    )
    mqtt_client_id: str = Field(
        default="loaxa-server",
        description="fixed client id: with a persistent session the broker keeps station "
        "events (QoS 1) while the server is down",
    )
    mqtt_reconnect_max_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="cap of the server's reconnect back-off; the server is one client, so "
        "it can come back quickly and be subscribed before stations resend their events",
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=600, description="MQTT keepalive")
    node_mqtt_host: str | None = Field(
        default=None,
        description="broker address as stations see it (written into node configs); "
        "default mqtt_host",
    )
    node_mqtt_port: int | None = Field(
        default=None, ge=1, le=65535, description="broker port for stations; default mqtt_port"
    )
    node_mqtt_fallbacks: list[BrokerAddress] = Field(
        default_factory=list,
        description="further nodes of a broker cluster as stations see them ([{host, port}]); "
        "node configs then list all of them (mqtt.fallbacks), each station's list rotated by "
        "its id so a fleet spreads over the nodes and fails over to the next one",
    )
    node_mqtt_tls: bool | None = Field(
        default=None,
        description="stations connect with TLS (written into node configs); default mqtt_tls",
    )
    node_mqtt_ca_file: Path | None = Field(
        default=None,
        description="the broker's CA as installed on stations (written into "
        "node configs); unset: the station's system trust store",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="base URL stations use to reach this server (audio downloads)",
    )
    release_public_key: str | None = Field(
        default=None,
        description="the release key's raw Ed25519 public key (base64url, `loaxa release "
        "keygen` prints it): stations trust it for releases only; unset, no release is accepted",
    )
    update_tick_s: float = Field(
        default=10, ge=0, description="how often rollouts move on (send, promote); 0: never"
    )
    url_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for signed audio URLs; generated into <data_dir>/keys if unset",
    )
    max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="largest audio upload accepted"
    )
    media_jobs: int = Field(
        default=2,
        ge=1,
        le=64,
        description="uploads decoded and encoded at once (about one core each); "
        "set to the number of cores the server may spend on audio",
    )
    media_queue: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="uploads that may wait for a free conversion; beyond them the server "
        "answers 503 'busy, retry in N s' with Retry-After",
    )
    plan_horizon_h: float = Field(
        default=216,
        gt=0,
        description="how far ahead a station's plan reaches (9 days: a station cut off "
        "keeps at least 8 days of its programme; docs/programmes.md)",
    )
    plan_ttl_h: float = Field(
        default=72,
        gt=0,
        description="validity of a signed plan; stations refuse to *accept* older ones",
    )
    clock_sync_min: float = Field(
        default=10,
        ge=0,
        description="measure every connected (online or degraded) station's clock offset "
        "this often (signed time_sync command over MQTT); 0 disables",
    )
    plan_refresh_min: float = Field(
        default=60,
        ge=0,
        description="recompile and republish every plan this often so the horizon rolls "
        "forward and URLs stay fresh; 0 disables",
    )
    programme_prerender_min: float = Field(
        default=60,
        ge=0,
        description="check this often that every live programme's text-to-speech audio is "
        "rendered and stored (re-render what is missing); 0 disables",
    )
    stream_probe_timeout_s: float = Field(
        default=3,
        gt=0,
        le=30,
        description="how long saving a programme waits for a stream URL to answer the "
        "is-it-audio check",
    )
    stream_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="private networks (e.g. 10.20.0.0/16, an Icecast on the provincial "
        "intranet) the stream check may reach; public addresses are always allowed, loopback, "
        "link-local, multicast and this host's own addresses never",
    )
    audio_url_ttl_h: float = Field(
        default=72, gt=0, description="lifetime of a signed audio download URL"
    )
    amp_lead_ms: int = Field(
        default=1500, ge=0, le=60000, description="node config default: amp on before audio"
    )
    amp_tail_ms: int = Field(
        default=1000, ge=0, le=60000, description="node config default: amp off after audio"
    )
    node_data_dir: str = Field(
        default="/var/lib/loaxa-node", description="data_dir written into generated node configs"
    )
    seed_province_codes: list[str] = Field(
        default_factory=lambda: ["04"],
        description="provinces whose area tree is seeded at start-up (04 = Cao Bằng)",
    )
    bootstrap_admin_username: str | None = Field(
        default=None,
        description="with bootstrap_admin_password: when no user exists at start-up, create "
        "this province_admin on every seeded province",
    )
    bootstrap_admin_password: SecretStr | None = Field(
        default=None, description="the bootstrap admin's password (at least 10 characters)"
    )
    session_max_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="a web session ends this long after sign-in"
    )
    session_idle_minutes: float = Field(
        default=120, gt=0, description="a web session ends after this long without a request"
    )
    login_max_failures: int = Field(
        default=5, ge=1, description="failed sign-ins per username or address before a 429"
    )
    login_window_minutes: float = Field(
        default=15, gt=0, description="the window in which failed sign-ins are counted"
    )
    require_totp_for: list[Role] = Field(
        default_factory=list,
        description="roles whose holders must use a one-time code; until they enrol, "
        "their sessions carry no role",
    )
    csrf_trusted_origins: list[str] = Field(
        default_factory=list,
        description="extra origins (scheme://host[:port]) allowed to send cookie-"
        "authenticated writes, besides public_url and the request's own host",
    )
    cookie_secure: bool | None = Field(
        default=None,
        description="mark the session cookie Secure; default: when public_url is https",
    )

    # ------------------------------------------------------- station health
    # Big batches make 10,000 reports a second affordable: each batch writes every
    # reporting station's row once, however many reports it carries, so a batch of 5,000
    # from 1,000 stations costs about half the CPU per report of one of 1,000. A batch
    # closes after 100 ms, yet it grows by itself when the writer falls behind (it takes
    # whatever is queued, up to health_batch_max): at 10,000 a second two ingest workers
    # stored 0.97 of the broker's floor with 100 ms against 0.88 with 1 s, whose reports
    # waited longer and piled up (docs/performance.md).
    health_batch_max: int = Field(
        default=10_000,
        ge=1,
        le=50_000,
        description="health reports written in one transaction at most; a batch is also "
        "closed after health_batch_interval_ms",
    )
    health_batch_interval_ms: float = Field(
        default=100, gt=0, le=10_000, description="longest a health report waits to be written"
    )
    health_queue_max: int = Field(
        default=200_000,
        ge=1,
        description="health reports waiting to be written before new ones are dropped (and "
        "counted): memory stays bounded when the database cannot keep up",
    )
    fleet_queue_max: int = Field(
        default=50_000,
        ge=100,
        description="station messages received but not yet ingested, held in memory at most "
        "(~0.5 KB each); beyond it the oldest health reports are dropped (counted) and "
        "events, status and replies spill to data_dir/spool, never dropped",
    )
    ingest_workers: bool = Field(
        default=False,
        description="station health and events are ingested by separate `loaxa worker ingest` "
        "processes (MQTT 5 shared subscriptions); the server then subscribes only to status "
        "and replies. Off: the server ingests everything itself, as a single process",
    )
    ingest_batch_max: int = Field(
        default=2000,
        ge=1,
        le=50_000,
        description="station events an ingest worker writes (and then acknowledges) at once",
    )
    health_rate_limit: int = Field(
        default=20,
        ge=1,
        description="health reports one station may send per 10 s; the rest are dropped and "
        "counted, so a looping node cannot crowd out the others",
    )
    offline_after_min: float = Field(
        default=10, gt=0, description="a station silent this long is offline"
    )
    health_check_interval_s: float = Field(
        default=30,
        gt=0,
        description="how often silent stations are marked offline and every alarm rule runs",
    )
    health_maintenance_min: float = Field(
        default=10, gt=0, description="how often hourly aggregates are computed and rows pruned"
    )
    health_raw_days: float = Field(default=7, gt=0, description="raw health samples kept")
    health_hourly_days: float = Field(
        default=365, gt=0, description="hourly health aggregates kept"
    )
    alarm_offline_min: float = Field(
        default=10, ge=0, description="alarm when a station has been unreachable this long"
    )
    alarm_disk_free_pct: float = Field(
        default=10, ge=0, le=100, description="alarm when free disk space falls below this"
    )
    alarm_cpu_temp_c: float = Field(
        default=75, description="alarm when the CPU temperature rises above this"
    )
    alarm_clock_offset_ms: float = Field(
        default=500, gt=0, description="alarm when the station clock is off by more than this"
    )
    alarm_amp_min_current_ma: float = Field(
        default=50,
        ge=0,
        description="an amplifier drawing less than this while playing has failed "
        "(boards that report current only)",
    )
    alarm_item_grace_min: float = Field(
        default=2,
        ge=0,
        description="a planned item not played by its end plus this grace raises an alarm",
    )
    alarm_item_lookback_h: float = Field(
        default=24,
        gt=0,
        description="items older than this no longer keep the 'item not played' alarm open",
    )
    alarm_webhooks: list[str] = Field(
        default_factory=list,
        description="URLs that receive a JSON POST when an alarm opens or resolves",
    )
    alarm_webhook_timeout_s: float = Field(
        default=5, gt=0, le=60, description="timeout of one webhook call (retried once)"
    )
    alarm_notify_queue_max: int = Field(
        default=1000,
        ge=1,
        description="alarm notifications waiting for webhooks / e-mail at most; beyond it the "
        "oldest is dropped and counted (the alarm itself is always in the database)",
    )
    smtp_host: str | None = Field(
        default=None, description="mail relay for alarm e-mails; unset disables e-mail"
    )
    smtp_port: int = Field(default=25, ge=1, le=65535, description="mail relay port")
    smtp_from: str = Field(default="loaxa@localhost", description="sender of alarm e-mails")
    smtp_to: list[str] = Field(default_factory=list, description="recipients of alarm e-mails")

    # ---------------------------------------------------------------- alerts
    alert_confirmation_default: Literal["always", "beyond_commune", "never"] = Field(
        default="beyond_commune",
        description="when a real alert needs a second officer's confirmation: 'beyond_commune' "
        "(it reaches more than one commune), 'always' or 'never'",
    )
    alert_confirmation: dict[str, Literal["always", "beyond_commune", "never"]] = Field(
        default_factory=dict,
        description="per-area override of alert_confirmation_default, by area code; a commune "
        "takes its nearest configured ancestor's policy, the strictest targeted one wins",
    )
    alert_max_hours: float = Field(
        default=48, gt=0, le=48, description="latest expiry an alert may have, hours ahead"
    )
    live_max_minutes: float = Field(
        default=30, gt=0, le=240, description="the longest a live session may last"
    )
    alert_settle_s: float = Field(
        default=5, ge=0, description="how often alerts past expiry are closed; 0 disables"
    )
    alert_library_dir: Path | None = Field(
        default=None, description="canned alert library; default the repository's audio/"
    )

    # ------------------------------------------------------- text-to-speech
    tts_engine: Literal["espeak", "piper"] = Field(
        default="espeak",
        description="'espeak' (espeak-ng's Vietnamese voice, offline everywhere) or 'piper' "
        "(a neural Vietnamese voice file the operator provides, see tts_piper_model)",
    )
    tts_voice: str | None = Field(
        default=None,
        description="default voice: espeak 'vi', 'vi-vn-x-central', 'vi-vn-x-south' (+variant "
        "such as 'vi+f3'); piper: a model file stem next to tts_piper_model",
    )
    tts_espeak_wpm: int = Field(
        default=150, ge=80, le=450, description="espeak-ng reading speed, words per minute"
    )
    tts_piper_model: Path | None = Field(
        default=None, description="piper voice model (.onnx, with its .onnx.json beside it)"
    )
    tts_piper_executable: str | None = Field(
        default=None,
        description="piper binary; default 'piper' on PATH, else the piper-tts Python package",
    )
    tts_max_chars: int = Field(
        default=5000,
        ge=1,
        le=100_000,
        description="longest text read aloud as one item (5,000 characters is about 6 minutes)",
    )

    # ------------------------------------------------------------ HTTP edge
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=16 * 1024,
        description="largest request body of every route but uploads and CAP XML (JSON, "
        "forms); a bigger one is refused with 413 before it is read",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="addresses or networks of the reverse proxies in front of the server; "
        "X-Forwarded-For is believed only from these (the audit log's "
        "source address and the per-address sign-in lock depend on it)",
    )

    def __init__(self, config_file: Path | str | None = None, **values: Any) -> None:
        """``config_file`` (or ``LOAXA_CONFIG_FILE``) names a YAML or TOML file."""
        token = _config_file.set(Path(config_file) if config_file is not None else None)
        try:
            super().__init__(**values)
        finally:
            _config_file.reset(token)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        if path is None and os.environ.get(CONFIG_FILE_ENV):
            path = Path(os.environ[CONFIG_FILE_ENV])
        sources = [init_settings, env_settings, dotenv_settings]
        if path is not None:
            sources.append(_file_source(settings_cls, path))
        return (*sources, file_secret_settings)

    @field_validator("url_secret", "mqtt_password", "bootstrap_admin_password")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if text.lower() in PLACEHOLDER_SECRETS:
            raise ValueError(f"{text!r} is a placeholder, not a secret; set a random value")
        return value

    @field_validator("url_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_CHARS:
            raise ValueError(f"url_secret must be at least {MIN_SECRET_CHARS} characters")
        return value

    @field_validator("alarm_webhooks")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"alarm webhook {url!r} must start with http:// or https://")
        return value

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"public_url must start with http:// or https:// (got {value!r})")
        return value.rstrip("/")

    @field_validator("release_public_key")
    @classmethod
    def _release_key(cls, value: str | None) -> str | None:
        """Refused at start, not at the first upload: a typo here stops every update."""
        if value is None:
            return None
        from server.keys import release_entry

        release_entry(value)  # raises ValueError naming what is wrong
        return value

    @model_validator(mode="after")
    def _bootstrap_pair(self) -> Settings:
        user, password = self.bootstrap_admin_username, self.bootstrap_admin_password
        if (user is None) != (password is None):
            raise ValueError("set both bootstrap_admin_username and bootstrap_admin_password")
        if user is not None and password is not None:
            try:
                check_password_policy(password.get_secret_value(), user)
            except PasswordPolicyError as exc:
                raise ValueError(f"bootstrap_admin_password: {exc}") from exc
        return self

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.data_dir / 'loaxa.db'}"
        return self

    @property
    def db_url(self) -> str:
        """The database URL, always set after validation."""
        assert self.database_url is not None
        return self.database_url

    @property
    def secure_cookies(self) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self.public_url.startswith("https://")

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise ConfigError(f"{path}: settings file not found")
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    if suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    raise ConfigError(f"{path}: settings file must be .yaml, .yml or .toml")
