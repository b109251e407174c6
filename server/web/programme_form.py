"""The programme form's content: items, timing and targets as typed, checked, and turned
into the ``ProgrammeSpec`` the programmes API accepts (and back, to edit one).

Free of FastAPI and the database: the page module reads the posted fields into a
:class:`ProgrammeForm`, :func:`check` names every problem under its field in the
reader's language, and :func:`spec_of` builds the spec. An item is one of: an uploaded
file, a typed text read aloud, a stream relayed for some minutes (with an optional
fallback file), or silence; each with its own volume and repeat count.

The posted form carries the items as parallel lists (``item_kind``, ``item_audio``, …),
one entry per item row, so the page works without any script; buttons named ``op``
add (``add:tts``), remove (``remove:2``) or preview (``preview:2``) an item.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from loaxa_protocol.messages import Priority
from server.i18n import N_, gettext
from server.programmes.spec import (
    AudioItem,
    AudioSource,
    ItemBase,
    ItemSpec,
    ProgrammeSpec,
    SilenceItem,
    StreamItem,
    TtsItem,
)
from server.web.recurrence_words import days_of_rrule, weekly_rrule

FormItem = AudioItem | TtsItem | StreamItem | SilenceItem
ITEM_KINDS: dict[str, str] = {
    "audio": N_("Audio file"),
    "tts": N_("Text read aloud"),
    "stream": N_("Relay a stream (e.g. VOV1)"),
    "silence": N_("Silence"),
}
FORM_PRIORITIES = (Priority.NORMAL, Priority.PRIORITY, Priority.BACKGROUND)
TITLE_MAX = 120
TEXT_MAX = 5000
MAX_ITEMS = 20
ITEM_FIELDS = ("kind", "audio", "text", "url", "minutes", "fallback", "seconds", "volume", "repeat")


@dataclass
class ItemForm:
    """One item row as typed (text, so a refused form comes back as typed)."""

    kind: str = "audio"
    audio: str = ""
    text: str = ""
    url: str = ""
    minutes: str = ""
    fallback: str = ""
    seconds: str = ""
    volume: str = ""
    repeat: str = "1"
    spoken: str | None = None
    """the normalised text, once previewed"""
    listen: str | None = None
    """where the previewed speech can be heard (the rendering the stations will get)"""


@dataclass
class ProgrammeForm:
    title: str = ""
    day: str = ""
    at: str = ""
    priority: str = Priority.NORMAL.value
    repeat: str = "once"
    days: list[str] = field(default_factory=list)
    areas: list[str] = field(default_factory=list)
    stations: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    items: list[ItemForm] = field(default_factory=list)

    @property
    def one_file_bulletin(self) -> bool:
        """One file, played once at its own volume, to whole communes: a plain bulletin."""
        return (
            self.repeat == "once"
            and len(self.items) == 1
            and self.items[0].kind == "audio"
            and not self.items[0].volume
            and self.items[0].repeat in ("", "1")
            and not self.stations
            and not self.groups
        )


def items_from_lists(lists: dict[str, list[str]], audio_id: str = "") -> list[ItemForm]:
    """The item rows from the posted parallel lists; an old-style ``audio_id`` alone is
    one audio item (links from the audio library still say ``?audio_id=``)."""
    kinds = lists.get("kind") or []
    if not kinds:
        return [ItemForm(kind="audio", audio=audio_id)] if audio_id else []
    rows = []
    for n, kind in enumerate(kinds[:MAX_ITEMS]):
        values = {
            name: (lists.get(name) or [])[n] if n < len(lists.get(name) or []) else ""
            for name in ITEM_FIELDS
        }
        values["kind"] = kind if kind in ITEM_KINDS else "audio"
        rows.append(ItemForm(**values))
    return rows


def apply_op(form: ProgrammeForm, op: str) -> bool:
    """Add or remove an item row; True when ``op`` was one (the form is shown again)."""
    verb, _, arg = op.partition(":")
    if verb in ("add", "remove", "up") and not form.days:
        # The day boxes are disabled (so not posted) while "once" is chosen: keep the
        # default Monday to Saturday for when the clerk switches to weekly.
        form.days = [str(d) for d in range(6)]
    if verb == "add" and arg in ITEM_KINDS and len(form.items) < MAX_ITEMS:
        form.items.append(ItemForm(kind=arg, minutes="60" if arg == "stream" else ""))
        return True
    if verb in ("remove", "up") and arg.isdigit() and 1 <= int(arg) <= len(form.items):
        n = int(arg) - 1
        if verb == "remove":
            del form.items[n]
        elif n > 0:
            form.items[n - 1], form.items[n] = form.items[n], form.items[n - 1]
        return True
    return False


# ------------------------------------------------------------------ dates as typed

_DAY = re.compile(r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})\s*$")
_CLOCK = re.compile(r"^\s*(\d{1,2})[:hH.](\d{2})\s*$")


def day_text(day: date) -> str:
    """``31/12/2026``: how the page writes a date, whatever the browser's language."""
    return day.strftime("%d/%m/%Y")


def parse_day(text: str) -> date:
    """A date as a clerk types it (``31/12/2026``, ``7/1/2027``); ISO ``2026-12-31`` too
    (older links and scripts). The inputs are plain text so that no browser shows them in
    its own order (an English Chromium writes ``12/31/2026`` in a native date box)."""
    found = _DAY.match(text)
    if found is None:
        return date.fromisoformat(text.strip())
    day, month, year = (int(g) for g in found.groups())
    return date(year, month, day)


def parse_clock(text: str) -> time:
    """``05:30``, ``5:30`` or ``5h30``: 24-hour time as Vietnamese write it."""
    found = _CLOCK.match(text)
    if found is None:
        raise ValueError(f"not a time: {text!r}")
    return time(int(found.group(1)), int(found.group(2)))


# ------------------------------------------------------------------ checking


@dataclass
class Checked:
    """A form that passed the page's checks: the values the spec needs."""

    start_local: datetime
    days: list[int]
    items: list[FormItem]


def _number(text: str, low: float, high: float, integer: bool = False) -> float | None:
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        return None
    if not low <= value <= high or (integer and not value.is_integer()):
        return None
    return value


def _check_item(
    n: int, item: ItemForm, audio_ids: set[int]
) -> tuple[dict[str, str], FormItem | None]:
    """One item's problems (keys ``items.N.field``) or the spec item."""
    errors: dict[str, str] = {}
    key = f"items.{n}"
    volume: int | None = None
    if item.volume.strip():
        v = _number(item.volume, 0, 100, integer=True)
        if v is None:
            errors[f"{key}.volume"] = gettext("The volume is a whole number from 0 to 100.")
        else:
            volume = int(v)
    r = _number(item.repeat or "1", 1, 20, integer=True)
    if r is None:
        errors[f"{key}.repeat"] = gettext("Play it from 1 to 20 times.")
    common: dict[str, Any] = {"volume": volume, "repeat": int(r or 1)}

    def audio_of(text: str, name: str, required: bool) -> int | None:
        if not text:
            if required:
                errors[f"{key}.{name}"] = gettext("Choose the audio to play.")
            return None
        if not text.isdigit() or int(text) not in audio_ids:
            errors[f"{key}.{name}"] = gettext("This audio does not exist (any more).")
            return None
        return int(text)

    spec: FormItem | None = None
    if item.kind == "audio":
        audio_id = audio_of(item.audio, "audio", True)
        if audio_id is not None and not errors:
            spec = AudioItem(audio_id=audio_id, **common)
    elif item.kind == "tts":
        text = item.text.strip()
        if not text:
            errors[f"{key}.text"] = gettext("Type the text to be read aloud.")
        elif len(text) > TEXT_MAX:
            errors[f"{key}.text"] = gettext("The text is too long: at most %(n)s characters.") % {
                "n": TEXT_MAX
            }
        elif not errors:
            spec = TtsItem(text=text, **common)
    elif item.kind == "stream":
        url = item.url.strip()
        if not url.lower().startswith(("http://", "https://")) or len(url) > 500 or " " in url:
            errors[f"{key}.url"] = gettext(
                "Enter the stream's address, starting with http:// or https://."
            )
        minutes = _number(item.minutes, 1, 24 * 60)
        if minutes is None:
            errors[f"{key}.minutes"] = gettext("Relay it from 1 to 1440 minutes.")
        fallback = audio_of(item.fallback, "fallback", False)
        if not errors and minutes is not None:
            spec = StreamItem(
                url=url,
                window_min=minutes,
                fallback=AudioSource(audio_id=fallback) if fallback is not None else None,
                **common,
            )
    elif item.kind == "silence":
        seconds = _number(item.seconds, 1, 4 * 3600)
        if seconds is None:
            errors[f"{key}.seconds"] = gettext("Silence lasts from 1 to 14400 seconds.")
        elif not errors:
            spec = SilenceItem(seconds=seconds, **common)
    return errors, spec


def check(
    form: ProgrammeForm,
    now: datetime,
    local_tz: Any,
    allowed: dict[str, set[str]],
    audio_ids: set[int],
    editing: bool = False,
) -> tuple[dict[str, str], Checked | None]:
    """Every field checked, every problem named under its field, in the reader's words.

    ``allowed`` holds the areas, stations and groups the reader may schedule on.
    """
    errors: dict[str, str] = {}
    if not form.title.strip():
        errors["title"] = gettext("Write a title, e.g. “Morning news”.")
    elif len(form.title.strip()) > TITLE_MAX:
        errors["title"] = gettext("The title is too long: at most %(n)s characters.") % {
            "n": TITLE_MAX
        }
    day: date | None = None
    clock: time | None = None
    try:
        day = parse_day(form.day)
    except ValueError:
        errors["day"] = gettext("Enter the date, e.g. 31/12/2025.")
    try:
        clock = parse_clock(form.at)
    except ValueError:
        errors["at"] = gettext("Enter the time, e.g. 05:30.")
    days: list[int] = []
    if form.repeat == "weekly":
        days = sorted({int(d) for d in form.days if d.isdigit() and 0 <= int(d) <= 6})
        if not days:
            errors["days"] = gettext("Tick at least one day of the week.")
    elif form.repeat != "once":
        errors["repeat"] = gettext("Choose how often it plays.")
    start: datetime | None = None
    if day is not None and clock is not None:
        start = datetime.combine(day, clock, local_tz)
        if start <= now and form.repeat == "once":
            errors["at"] = gettext("This time has already passed; choose a later one.")
    if form.priority not in {p.value for p in FORM_PRIORITIES}:
        errors["priority"] = gettext("Choose a priority from the list.")
    if not (form.areas or form.stations or form.groups):
        errors["targets"] = gettext("Choose at least one commune, station or group.")
    elif (
        set(form.areas) - allowed["areas"]
        or set(form.stations) - allowed["stations"]
        or set(form.groups) - allowed["groups"]
    ):
        errors["targets"] = gettext("You may not schedule on some of the chosen places.")
    items: list[FormItem] = []
    if not form.items:
        errors["items"] = gettext("Add at least one item: a file, a text, a relay or silence.")
    for n, row in enumerate(form.items, start=1):
        item_errors, item = _check_item(n, row, audio_ids)
        errors.update(item_errors)
        if item is not None:
            items.append(item)
    if errors or start is None:
        return errors, None
    return {}, Checked(start.replace(tzinfo=None), days, items)


def owner_area(
    form: ProgrammeForm, station_areas: dict[str, str], group_areas: dict[str, str]
) -> str:
    """The area that owns the programme: the first commune, else the first station's or
    group's area (the API checks the reader may edit there)."""
    if form.areas:
        return form.areas[0]
    for station in form.stations:
        if station in station_areas:
            return station_areas[station]
    for group in form.groups:
        if group in group_areas:
            return group_areas[group]
    return ""


def item_title(item: ItemBase, title: str) -> str:
    """What timelines and clash messages call the item: its text's start, the stream's
    address, or the programme's title."""
    if isinstance(item, TtsItem):
        words = " ".join(item.text.split())
        return words if len(words) <= 60 else words[:59] + "…"
    if isinstance(item, StreamItem):
        return item.url.split("://", 1)[-1][:120]
    if isinstance(item, SilenceItem):
        return ""
    return title[:120]


def spec_of(form: ProgrammeForm, checked: Checked, key: str, area: str) -> ProgrammeSpec:
    title = form.title.strip()
    items: list[ItemSpec] = [
        item.model_copy(update={"title": item_title(item, title)}) for item in checked.items
    ]
    return ProgrammeSpec(
        key=key,
        title=title,
        area=area,
        priority=Priority(form.priority),
        start=checked.start_local,
        rrule=weekly_rrule(checked.days) if form.repeat == "weekly" else None,
        targets={  # type: ignore[arg-type]
            "areas": form.areas,
            "stations": form.stations,
            "groups": form.groups,
        },
        items=items,
    )


def form_of_spec(spec: ProgrammeSpec) -> ProgrammeForm | None:
    """The form for a programme the form could have made; None for any other (a schedule
    file's playlist, exceptions, or a rule other than days of the week)."""
    days = days_of_rrule(spec.rrule)
    if (spec.rrule is not None and days is None) or spec.exceptions or spec.proposal:
        return None
    rows: list[ItemForm] = []
    for item in spec.items:
        common = {
            "volume": "" if item.volume is None else str(item.volume),
            "repeat": str(item.repeat),
        }
        if isinstance(item, AudioItem) and item.audio_id is not None:
            rows.append(ItemForm(kind="audio", audio=str(item.audio_id), **common))
        elif isinstance(item, TtsItem) and item.voice is None and item.slot_s is None:
            rows.append(ItemForm(kind="tts", text=item.text, **common))
        elif isinstance(item, StreamItem) and (item.fallback is None or item.fallback.audio_id):
            fallback = item.fallback.audio_id if item.fallback is not None else None
            rows.append(
                ItemForm(
                    kind="stream",
                    url=item.url,
                    minutes=f"{item.window_min:g}",
                    fallback="" if fallback is None else str(fallback),
                    **common,
                )
            )
        elif isinstance(item, SilenceItem):
            rows.append(ItemForm(kind="silence", seconds=f"{item.seconds:g}", **common))
        else:
            return None
        if item.gap_s:
            return None
    return ProgrammeForm(
        title=spec.title,
        day=day_text(spec.start.date()),
        at=spec.start.strftime("%H:%M"),
        priority=spec.priority.value,
        repeat="weekly" if days is not None else "once",
        days=[str(d) for d in (days or range(6))],
        areas=list(spec.targets.areas),
        stations=list(spec.targets.stations),
        groups=list(spec.targets.groups),
        items=rows,
    )
