"""What a programme says, as the API and the schedule files write it (pydantic, no DB).

One model family serves ``POST /api/v1/programmes``, ``PUT`` and the YAML files of
``loaxa schedule``: a typo in either place is the same validation error. Items are a
discriminated union on ``kind``. Audio is named by an uploaded asset id (``audio_id``)
or, in a schedule file only, by a ``file`` next to the YAML that ``loaxa schedule
apply`` uploads first.
"""

from __future__ import annotations

import enum
import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loaxa_protocol import Priority
from server.programmes.recurrence import as_local_naive

KEY_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"
DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_ITEMS = 50


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemKind(enum.StrEnum):
    AUDIO = "audio"
    PLAYLIST = "playlist"
    TTS = "tts"
    STREAM = "stream"
    SILENCE = "silence"


class AudioSource(SpecModel):
    """An uploaded asset by id, or (schedule files only) a file that apply uploads."""

    audio_id: int | None = Field(default=None, gt=0, description="an uploaded audio asset")
    file: str | None = Field(
        default=None, description="schedule files only: path relative to the YAML file"
    )

    @model_validator(mode="after")
    def _one(self) -> AudioSource:
        if (self.audio_id is None) == (self.file is None):
            raise ValueError("give exactly one of audio_id or file")
        return self


class ItemBase(SpecModel):
    title: str = Field(default="", max_length=120, description="shown in timelines and reports")
    volume: int | None = Field(
        default=None, ge=0, le=100, description="volume for this item; empty keeps the station's"
    )
    repeat: int = Field(default=1, ge=1, le=20, description="how many times the item plays")
    gap_s: float = Field(default=0, ge=0, le=3600, description="pause between repeats")


class AudioItem(ItemBase):
    kind: Literal["audio"] = "audio"
    audio_id: int | None = Field(default=None, gt=0, description="an uploaded audio asset")
    file: str | None = Field(default=None, description="schedule files only: uploaded by apply")

    @model_validator(mode="after")
    def _one(self) -> AudioItem:
        if (self.audio_id is None) == (self.file is None):
            raise ValueError("an audio item needs exactly one of audio_id or file")
        return self


class PlaylistItem(ItemBase):
    kind: Literal["playlist"] = "playlist"
    tracks: list[AudioSource] = Field(
        min_length=1, max_length=50, description="played one after another"
    )


class TtsItem(ItemBase):
    kind: Literal["tts"] = "tts"
    text: str = Field(min_length=1, max_length=5000, description="Vietnamese text read aloud")
    voice: str | None = Field(default=None, max_length=64, description="engine voice; default")
    slot_s: float | None = Field(
        default=None,
        gt=0,
        le=4 * 3600,
        description="the time reserved for reading; longer speech is refused at save",
    )


class StreamItem(ItemBase):
    kind: Literal["stream"] = "stream"
    url: str = Field(pattern=r"^https?://", max_length=500, description="HTTP/Icecast audio")
    window_min: float = Field(gt=0, le=24 * 60, description="how long the stream is relayed")
    fallback: AudioSource | None = Field(
        default=None, description="played (and reported) when the stream cannot be reached"
    )


class SilenceItem(ItemBase):
    kind: Literal["silence"] = "silence"
    seconds: float = Field(gt=0, le=4 * 3600, description="quiet time kept in the timeline")


ItemSpec = Annotated[
    AudioItem | PlaylistItem | TtsItem | StreamItem | SilenceItem, Field(discriminator="kind")
]


class Targets(SpecModel):
    stations: list[str] = Field(default_factory=list, description="station ids")
    groups: list[str] = Field(default_factory=list, description="station group names")
    areas: list[str] = Field(default_factory=list, description="area codes (whole subtree)")

    @model_validator(mode="after")
    def _some(self) -> Targets:
        if not (self.stations or self.groups or self.areas):
            raise ValueError("give stations, groups and/or areas: the programme has no target")
        return self


class ProgrammeSpec(SpecModel):
    """A programme as written by an operator; see docs/programmes.md."""

    key: str = Field(
        pattern=KEY_PATTERN,
        description="stable name (lower-case, digits, . _ -) so a file can be re-applied",
    )
    title: str = Field(min_length=1, max_length=120)
    area: str = Field(min_length=1, max_length=16, description="the owning area's code")
    priority: Priority = Priority.NORMAL
    proposal: bool = Field(
        default=False,
        description="a province proposal: never airs itself; a commune accepts a copy",
    )
    start: datetime = Field(description="first occurrence, local time (Asia/Ho_Chi_Minh)")
    rrule: str | None = Field(
        default=None, max_length=500, description="RFC 5545 RRULE; empty for a one-off"
    )
    exceptions: list[datetime | date] = Field(
        default_factory=list,
        max_length=500,
        description="local datetimes (one occurrence) or dates (the whole day) skipped",
    )
    targets: Targets
    items: list[ItemSpec] = Field(min_length=1, max_length=MAX_ITEMS)

    @field_validator("start")
    @classmethod
    def _local(cls, value: datetime) -> datetime:
        return as_local_naive(value).replace(microsecond=0)

    @field_validator("rrule")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value.strip() if value is not None else None

    @field_validator("exceptions", mode="before")
    @classmethod
    def _dates_stay_dates(cls, values: object) -> object:
        """``2027-01-01`` is a whole day, not midnight (pydantic would read a datetime)."""
        if not isinstance(values, list):
            return values
        return [
            date.fromisoformat(v) if isinstance(v, str) and DATE_ONLY.fullmatch(v) else v
            for v in values
        ]

    @field_validator("exceptions")
    @classmethod
    def _local_exceptions(cls, values: list[datetime | date]) -> list[datetime | date]:
        return [as_local_naive(v) if isinstance(v, datetime) else v for v in values]

    def files(self) -> list[str]:
        """Every ``file`` reference, in order (for apply to upload)."""
        return [file for item in self.items for file in item_files(item)]


def item_files(item: ItemBase) -> list[str]:
    """The ``file`` references of one item (schedule files only)."""
    if isinstance(item, AudioItem):
        return [item.file] if item.file is not None else []
    if isinstance(item, PlaylistItem):
        return [t.file for t in item.tracks if t.file is not None]
    if isinstance(item, StreamItem) and item.fallback is not None and item.fallback.file:
        return [item.fallback.file]
    return []


class GroupSpec(SpecModel):
    name: str = Field(pattern=KEY_PATTERN, description="used in targets.groups")
    title: str = Field(default="", max_length=120)
    area: str = Field(min_length=1, max_length=16, description="the owning area's code")
    stations: list[str] = Field(min_length=1, max_length=1000)


class ScheduleFile(SpecModel):
    """The top of a schedule YAML file."""

    groups: list[GroupSpec] = Field(default_factory=list)
    programmes: list[ProgrammeSpec] = Field(min_length=1)
