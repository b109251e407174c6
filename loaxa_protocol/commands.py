"""The commands a station obeys (``Command.name``) and their arguments.

Both sides validate with these models: the server before it signs, the station before
it obeys (a signed, fresh command can still carry nonsense). A refusal says which
argument is wrong, and nothing happens.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TestToneArgs(_Args):
    """The station's own tone file is played: no download, so it proves the station."""

    __test__ = False  # not a pytest class


class SetAmpArgs(_Args):
    on: bool
    hold_s: int = Field(default=60, ge=1, le=3600, description="then back to automatic")


class SetVolumeArgs(_Args):
    percent: int = Field(ge=0, le=100)


class FetchLogArgs(_Args):
    lines: int = Field(default=100, ge=1, le=500)


class TimeSyncArgs(_Args):
    server_sent_at: datetime


class RestartArgs(_Args):
    pass


class UpdateArgs(_Args):
    """Install a signed release (``loaxa_protocol.release``) and switch to it when idle.

    The manifest is checked against the station's release key, whoever sent the command:
    the command says *when and from where*, only the release key says *what*.
    """

    rollout_id: int = Field(ge=1)
    manifest: str = Field(max_length=64 * 1024, description="the signed manifest (JSON text)")
    base_url: str = Field(
        pattern=r"^https?://", max_length=500, description="files are fetched from base_url/NAME"
    )
    health_deadline_s: int = Field(
        default=180, ge=5, le=3600, description="the new slot must be healthy within this"
    )


TECHNICIAN_COMMANDS = frozenset({"test_tone", "set_amp", "set_volume", "fetch_log", "restart"})
"""What a person may send; ``time_sync`` is the server's own clock measurement and
``update`` is sent by a rollout (``server/updates``), never typed."""

ARGS: dict[str, type[_Args]] = {
    "test_tone": TestToneArgs,
    "set_amp": SetAmpArgs,
    "set_volume": SetVolumeArgs,
    "fetch_log": FetchLogArgs,
    "time_sync": TimeSyncArgs,
    "restart": RestartArgs,
    "update": UpdateArgs,
}


def parse_args(name: str, args: dict[str, object]) -> _Args | str:
    """The validated arguments, or a one-line reason to refuse the command."""
    model = ARGS.get(name)
    if model is None:
        return f"unknown command {name!r}; known: {', '.join(sorted(ARGS))}"
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        return f"{name}: {where}: {first['msg']}"
