"""The server's refusals in the reader's language, under the field they are about.

The REST API answers in English (``"items[2]: the text takes 41.0 s to speak but its
slot is 30 s; …"``); a clerk who reads only Vietnamese must understand the same refusal
on a page. :func:`explain` turns any refusal the pages catch (an ``HTTPException`` from
an API function, or a domain error of ``server.programmes``, ``server.alerts``,
``server.tts`` or ``server.audio``) into a :class:`Refusal`: the form field it concerns
and a sentence from the message catalogue.

Two sources, in this order:

1. a structured ``code`` with ``params`` on the domain error, found anywhere on the
   exception's ``__cause__`` chain (the API raises ``HTTPException(...) from exc``);
2. :data:`PATTERNS`, the one table that reads the English text of refusals that carry no
   code (each entry has its own test in ``tests/integration/test_pages_refusals.py``).

The field comes from the message's leading ``where:`` (``items[2]:`` → ``items.2``,
``targets.areas:`` → ``targets``); a refusal nobody could place goes to ``form``. Pure
apart from gettext: no FastAPI, no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.i18n import N_, gettext
from server.i18n.reasons import PERMISSIONS
from server.web.common import PRIORITY_LABELS, decimal, local_time

# ------------------------------------------------------------------ structured codes

CODES: dict[str, tuple[str, str | None]] = {
    # code: (msgid, field or None to keep the one the message names)
    "clash": (
        N_(
            "This time clashes with another programme: %(first)s overlaps %(second)s on "
            "station %(station)s at %(at)s. Move one of them or give one a different priority."
        ),
        "at",
    ),
    "speech_too_long": (
        N_(
            "Item %(item)s: the text takes %(spoken_s)s s to read aloud but its slot is "
            "%(slot_s)s s. Shorten the text or widen the slot."
        ),
        None,
    ),
    "start_in_past": (
        N_("The first time %(start)s has already passed (now %(now)s); choose a later one."),
        "at",
    ),
    "never_fires": (N_("With these days and dates it never plays; check the days."), "days"),
    "never_fires_again": (
        N_("With these days and dates it will never play again; check the dates."),
        "days",
    ),
    "too_often": (
        N_("It would play every %(seconds)s s; plays must be at least %(minimum)s s apart."),
        "days",
    ),
    "tts_empty": (N_("There is nothing to read aloud: the text is empty."), None),
    "tts_unspeakable": (
        N_("There is nothing to read aloud: the text has no letters or digits."),
        None,
    ),
    "tts_too_long": (
        N_(
            "The text has %(chars)s characters: too long to read aloud in one item (at most "
            "%(limit)s, about %(minutes)s minutes). Split it into several items."
        ),
        None,
    ),
    "alert_no_message": (
        N_("The alert has no message: write a text, choose an audio file or a recorded message."),
        "kind",
    ),
    "inline_too_big": (
        N_(
            "The audio is %(kib)s KiB; an alert can carry at most %(limit_kib)s KiB. Shorten "
            "it or use a recorded message."
        ),
        None,
    ),
    "media_busy": (
        N_(
            "The server is busy converting other recordings. Nothing was saved; try again in "
            "%(seconds)s seconds."
        ),
        "file",
    ),
}
"""Every ``code`` a domain error may carry, with its sentence (msgid) and field."""

CLASS_WORDS: dict[str, str] = {
    "TtsEngineMissing": N_("Text-to-speech is not installed on this server."),
    "TtsVoiceError": N_("This voice is not installed for text-to-speech."),
    "TtsSynthesisError": N_("Text-to-speech failed on the server; try again or shorten the text."),
}
"""Errors whose class alone says it all (their English text is for the log)."""

# ------------------------------------------------------------------ English text


@dataclass(frozen=True)
class Pattern:
    """One English refusal the pages can meet, and how to say it."""

    regex: re.Pattern[str]
    msgid: str
    field: str | None = None
    """None: the field the message names (``items[2]:`` …), else ``form``"""


def _p(regex: str, msgid: str, field: str | None = None) -> Pattern:
    return Pattern(re.compile(regex, re.IGNORECASE | re.DOTALL), msgid, field)


PATTERNS: tuple[Pattern, ...] = (
    # --- the two-person rule and the role checks (server/auth/deps.py, programmes API)
    _p(
        r"permission denied: programme\.approve — (?P<who>\S+) submitted this programme",
        N_("%(who)s sent this programme for approval, so a different approver must approve it."),
    ),
    _p(
        r"permission denied: (?P<permission>[\w.]+) in area (?P<area>\S+)",
        N_("Your roles do not allow you to %(permission)s in area %(area)s."),
    ),
    # --- who may schedule what, where (403 from the programmes and broadcasts APIs)
    _p(
        r"targets outside your area: (?P<names>[^;]+)",
        N_("These targets are outside your area: %(names)s."),
        "targets",
    ),
    _p(
        r"a (?P<priority>\w+) programme speaks for the province",
        N_(
            "A “%(priority)s” programme speaks for the province: a commune may use "
            "“Normal” or “Relay / background” only."
        ),
        "priority",
    ),
    # --- targets
    _p(
        r"unknown station\(s\) (?P<names>.+)",
        N_("These stations do not exist: %(names)s."),
        "targets",
    ),
    _p(r"unknown group\(s\) (?P<names>.+)", N_("These station groups do not exist: %(names)s.")),
    _p(r"unknown area\(s\) (?P<names>.+)", N_("These areas do not exist: %(names)s.")),
    _p(
        r"no (?:registered )?station is (?:reached|registered)",
        N_("No station is registered there yet, so nobody would hear it."),
        "targets",
    ),
    # --- sources
    _p(
        r"audio_id (?:audio )?(?P<id>\d+) does not exist",
        N_("The audio file no. %(id)s does not exist (any more); choose another one."),
    ),
    _p(
        r"stream (?P<url>\S+) answered HTTP (?P<code>\d+): not an audio stream",
        N_("The stream address %(url)s answered with error %(code)s: it is not an audio stream."),
    ),
    _p(
        r"stream (?P<url>\S+) is not audio",
        N_("The address %(url)s does not give audio (it may be a web page). Check the address."),
    ),
    _p(
        r"stream (?P<url>\S+) (?:could not be reached|answered HTTP (?P<code>\d+) just now)",
        N_("The stream %(url)s cannot be reached from the server right now."),
    ),
    _p(r"unknown message '", N_("Choose one of the recorded messages."), "canned"),
    # --- timing
    _p(
        r"start_at \S+ is in the past",
        N_("This time has already passed; choose a later one."),
        "at",
    ),
    _p(
        r"expires_at \S+ is in the past",
        N_("The end time has already passed; choose a later one."),
        "expires_at",
    ),
    _p(
        r"expires_at \S+ is more than (?P<hours>[\d.]+) h ahead",
        N_("An alert can last at most %(hours)s hours."),
        "expires_at",
    ),
    _p(
        r"rrule '(?P<rule>[^']*)'",
        N_("The repeat rule %(rule)s cannot be used; choose the days again."),
        "days",
    ),
    # --- alerts after sending
    _p(
        r"alert \d+ was created by (?P<who>\S+): a different officer must confirm",
        N_("%(who)s created this alert: a different officer must confirm it."),
        "form",
    ),
    _p(
        r"alert \d+ expired at \S+ before it was confirmed",
        N_("This alert expired before anyone confirmed it."),
        "form",
    ),
    _p(r"alert \d+ is (?:already )?(?P<state>\w+)", N_("This alert is already over."), "form"),
    # --- audio files (server/audio)
    _p(r"the file is empty", N_("The file is empty."), "file"),
    _p(
        r"entirely silent|the audio is silent|holds no samples",
        N_("The recording is silent: there is nothing to hear."),
        "file",
    ),
    _p(
        r"too long \((?P<length>[\d:]+)\); the limit is (?P<limit>[\d:]+)",
        N_("The recording is too long (%(length)s); at most %(limit)s."),
        "file",
    ),
    _p(
        r"truncated or corrupt",
        N_("The file is cut short or damaged; upload a complete copy."),
        "file",
    ),
    _p(
        r"contains no audio stream",
        N_("This file holds no sound (it may be a picture or a document)."),
        "file",
    ),
    _p(
        r"unsupported audio format",
        N_("This audio format cannot be read; save it as MP3, WAV, OGG or M4A and try again."),
        "file",
    ),
    _p(
        r"not readable audio, or corrupt",
        N_("This file could not be read as audio: it is not a sound file, or it is damaged."),
        "file",
    ),
    _p(
        r"encoding (?:to \S+ failed|took longer)|ffmpeg took longer",
        N_("The server could not convert this audio; try again later."),
        "file",
    ),
)
"""The English refusals without a code, most specific first."""

FALLBACK = N_("The server refused it: %(why)s")

# ------------------------------------------------------------------ fields

_WHERE = re.compile(r"^(?P<where>[a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): ", re.IGNORECASE)
FIELD_OF_WHERE: dict[str, str] = {
    "targets": "targets",
    "targets.stations": "targets",
    "targets.groups": "targets",
    "targets.areas": "targets",
    "area": "targets",
    "area_codes": "areas",
    "station_ids": "areas",
    "text": "text",
    "audio_id": "audio_id",
    "canned": "canned",
    "rrule": "days",
    "start": "at",
    "title": "title",
    "priority": "priority",
}


def field_of(where: str) -> str:
    """``items[2].fallback`` → ``items.2``; a known top-level name → the form's field."""
    item = re.match(r"items\[(\d+)\]", where)
    if item:
        return f"items.{item.group(1)}"
    return FIELD_OF_WHERE.get(where, FIELD_OF_WHERE.get(where.split(".")[0], "form"))


def _where(message: str) -> tuple[str | None, str]:
    """The leading ``where:`` of an English refusal (or None) and the rest."""
    found = _WHERE.match(message)
    if found is None:
        return None, message
    return found.group("where"), message[found.end() :]


# ------------------------------------------------------------------ parameters

_ITEM = re.compile(r"\bitem (\d+)\b")
_NAMED = re.compile(r"\b(area|group|station) ")
_KINDS = {"area": N_("area"), "group": N_("group"), "station": N_("station")}


def _words_in(value: str) -> str:
    """English words inside a parameter (``item 2``, ``area 01273``) in the reader's; the
    keys the form makes up (``[web-20260105-0500-a1b2c3]``) are noise to a clerk."""
    value = re.sub(r" \[web-[\w.-]+\]", "", value)
    value = _ITEM.sub(lambda m: gettext("item %(n)s") % {"n": m.group(1)}, value)
    value = re.sub(
        r"\bbroadcast (\d+) ", lambda m: gettext("bulletin %(n)s") % {"n": m.group(1)} + " ", value
    )
    value = re.sub(
        r" and (\d+) more$", lambda m: " " + gettext("and %(n)s more") % {"n": m.group(1)}, value
    )
    return value


def _param(name: str, value: Any) -> str:
    if isinstance(value, datetime):
        return local_time(value)[:-3] if value.tzinfo is not None else f"{value:%d/%m/%Y %H:%M}"
    if name == "permission" and value in PERMISSIONS:
        return gettext(PERMISSIONS[value])
    if name == "priority" and value in PRIORITY_LABELS:
        return gettext(PRIORITY_LABELS[value])
    if isinstance(value, float):
        return decimal(value, 0 if value.is_integer() else 1)
    if value is None:
        return "—"
    if name == "names":  # "area 01273, station st-1 (area 01279)"
        return _NAMED.sub(lambda m: gettext(_KINDS[m.group(1)]) + " ", _words_in(str(value)))
    return _words_in(str(value))


def _fill(msgid: str, params: Mapping[str, Any]) -> str:
    values = {name: _param(name, value) for name, value in params.items()}
    try:
        return gettext(msgid) % values
    except (KeyError, ValueError, TypeError):  # a translation naming an absent parameter
        return msgid % values


# ------------------------------------------------------------------ explain


@dataclass(frozen=True)
class Refusal:
    field: str
    """the form field it concerns (``items.2`` for the second item), ``form`` if none"""
    text: str
    """in the reader's language"""

    def as_errors(self) -> dict[str, str]:
        return {self.field: self.text}


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in found and len(found) < 8:
        found.append(current)
        current = current.__cause__ or current.__context__
    return found


def _message(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail) if detail is not None else str(exc)


def explain(exc: BaseException, remap: Callable[[str], str] | None = None) -> Refusal:
    """The refusal in the reader's words, placed on a field (``remap`` renames fields)."""
    chain = _chain(exc)
    where: str | None = None
    for link in chain:  # the outermost "where:" names the field best
        where, _rest = _where(_message(link))
        if where is not None:
            break
    field = field_of(where) if where is not None else "form"
    refusal = _explain(chain, field)
    if remap is not None:
        return Refusal(remap(refusal.field), refusal.text)
    return refusal


def _explain(chain: list[BaseException], field: str) -> Refusal:
    for link in chain:
        code = getattr(link, "code", "")
        if isinstance(code, str) and code in CODES:
            msgid, fixed = CODES[code]
            params = dict(getattr(link, "params", {}) or {})
            return Refusal(fixed or field, _fill(msgid, params))
    for link in chain:
        words = CLASS_WORDS.get(type(link).__name__)
        if words is not None:
            return Refusal(field, gettext(words))
    for link in chain:
        text = _where(_message(link))[1]
        for pattern in PATTERNS:
            found = pattern.regex.search(text)
            if found is not None:
                params = {k: v for k, v in found.groupdict().items() if v is not None}
                return Refusal(pattern.field or field, _fill(pattern.msgid, params))
    return Refusal(field, gettext(FALLBACK) % {"why": _message(chain[0])})


def translate_text(message: str) -> str:
    """An English refusal known only as text (e.g. stored), in the reader's words."""
    return explain(_Text(message)).text


class _Text(Exception):
    pass


# ------------------------------------------------------------------ what stations say

STATION_PATTERNS: tuple[Pattern, ...] = (
    # alarms (server/health/rules.py)
    _p(
        r"^unreachable since (?P<since>\S+) \((?P<minutes>\d+) min\)$",
        N_("Not reachable since %(since)s (%(minutes)s minutes)"),
    ),
    _p(r"^amplifier reports (?P<what>.+)$", N_("The amplifier reports a fault: %(what)s")),
    _p(r"^relay board does not respond$", N_("The relay board does not respond")),
    _p(
        r"^amplifier draws (?P<ma>[\d.]+) mA while playing$",
        N_("The amplifier draws only %(ma)s mA while playing (loudspeaker cut off?)"),
    ),
    _p(r"^amp_fault(?:: (?P<what>.+))?$", N_("Amplifier fault %(what)s")),
    _p(r"^relay_fault(?:: (?P<what>.+))?$", N_("Relay fault %(what)s")),
    _p(
        r"^(?P<free>[\d.]+) % disk free \(alarm below (?P<limit>[\d.]+) %\)$",
        N_("Only %(free)s %% of the storage is free (alarm below %(limit)s %%)"),
    ),
    _p(
        r"^CPU at (?P<temp>[\d.]+) °C \(alarm above (?P<limit>[\d.]+) °C\)$",
        N_("The processor is at %(temp)s °C (alarm above %(limit)s °C)"),
    ),
    _p(
        r"^clock off by (?P<ms>[+-]?\d+) ms \(alarm beyond ±(?P<limit>[\d.]+) ms\)$",
        N_("The station's clock is off by %(ms)s ms (alarm beyond ±%(limit)s ms)"),
    ),
    _p(
        r"^not played: (?P<items>.+?)(?: and (?P<more>\d+) more)?$",
        N_("Not played: %(items)s"),
    ),
    # command replies (node_firmware/core/machine.py)
    _p(
        r"^amplifier (?P<state>on|off) for (?P<seconds>\d+) s$",
        N_("amplifier %(state)s for %(seconds)s s"),
    ),
    _p(r"^volume (?P<percent>\d+) %$", N_("volume %(percent)s %%")),
    _p(r"^restarting$", N_("restarting")),
    _p(r"^this station has no test tone$", N_("this station has no test tone")),
    _p(r"^test tone (?P<outcome>\w+)$", N_("test tone: %(outcome)s")),
    _p(r"^plan arrived after the item ended$", N_("the schedule arrived after the item ended")),
    # play log and alert details (node_firmware/core/machine.py, asrun.py)
    _p(r"^played (?P<n>\d+) time\(s\)$", N_("played %(n)s time(s)")),
    _p(
        r"^stopped after (?P<done>\d+) of (?P<total>\d+) repetitions$",
        N_("stopped after %(done)s of %(total)s plays"),
    ),
    _p(
        r"^stopped at its expiry after (?P<done>\d+) of (?P<total>\d+) repetitions$",
        N_("stopped when it expired, after %(done)s of %(total)s plays"),
    ),
    _p(
        r"^cancelled before this copy arrived: not played$",
        N_("cancelled before it arrived: not played"),
    ),
    _p(
        r"^cancelled before the alert arrived: it will not play$",
        N_("cancelled before it arrived: not played"),
    ),
    _p(
        r"^a copy of an alert already received: not played again$",
        N_("a copy of an alert already received: not played again"),
    ),
    _p(r"^real alert \S+ is playing$", N_("a real alert is playing")),
    _p(r"^a drill never cuts one$", N_("a drill never interrupts a real alert")),
    _p(r"^canned audio \S+ is not in the cache$", N_("the prepared message is not on the station")),
    _p(
        r"^without its tone: not in the cache$", N_("without its warning tone (not on the station)")
    ),
    _p(
        r"^part (?P<part>\d+) still playing (?P<s>[\d.]+) s late$",
        N_("part %(part)s still playing %(s)s s late"),
    ),
    _p(r"^already in the cache$", N_("already on the station")),
    _p(r"^playing the fallback \S+$", N_("playing the stand-in audio")),
    _p(
        r"^no fallback in the cache: silent until the stream returns$",
        N_("no stand-in audio: silent until the stream returns"),
    ),
    _p(r"^switching (?P<state>on|off): (?P<why>.+)$", N_("switching %(state)s: %(why)s")),
    _p(
        r"^audio not downloaded by the start time$",
        N_("the audio was not downloaded by the start time"),
    ),
    _p(
        r"^the cached audio could not be verified by the start time$",
        N_("the audio on the station could not be checked by the start time"),
    ),
    _p(r"^(?:drill|alert) \S+ was playing$", N_("an emergency alert was playing")),
    _p(
        r"^(?:drill|alert) \S+ lasted the whole window$",
        N_("an emergency alert took the whole time"),
    ),
    _p(r"^its window ended before it began$", N_("its time ended before it could begin")),
    _p(r"^could not start within (?P<s>[\d.]+) s$", N_("could not start within %(s)s s")),
    _p(
        r"^\S+ \((?P<priority>\w+)\) was playing$",
        N_("an item of priority “%(priority)s” was playing"),
    ),
    _p(
        r"^pre-empted by \S+ \((?P<priority>\w+)\)$",
        N_("gave way to an item of priority “%(priority)s”"),
    ),
    _p(r"^removed from the plan$", N_("removed from the schedule")),
    _p(r"^by alert \S+$", N_("replaced by a newer alert")),
    _p(r"^the station restarted while it played$", N_("the station restarted while it played")),
    _p(r"^the station was not running at its time$", N_("the station was not running at its time")),
    _p(
        r"^amplifier on and playing \S+ but drawing (?P<ma>[\d.]+) mA$",
        N_("the amplifier is on and playing but draws only %(ma)s mA"),
    ),
    _p(r"^trusted keys: .+$", N_("trusted keys updated")),
)
"""Alarm details, station replies and play-log details, stored or sent as English text."""


_STATE_WORDS = {
    "on": N_("on"),
    "off": N_("off"),
    "played": N_("Played"),
    "failed": N_("Failed"),
    "interrupted": N_("Interrupted"),
    "planned": N_("Scheduled"),
    "delivered": N_("Schedule received"),
    "fetched": N_("Audio downloaded"),
    "playing": N_("Playing"),
}


def _station_param(name: str, value: str) -> str:
    if name == "since":
        try:
            return local_time(datetime.fromisoformat(value))[:-3]
        except ValueError:
            return value
    if name in ("state", "outcome"):
        return gettext(_STATE_WORDS.get(value, value))
    if name == "items":
        return re.sub(
            r"\((\w+)\)", lambda m: f"({gettext(_STATE_WORDS.get(m.group(1), m.group(1)))})", value
        )
    if name == "priority" and value in PRIORITY_LABELS:
        return gettext(PRIORITY_LABELS[value])
    if name in ("free", "temp", "ma", "limit", "s"):
        return decimal(float(value), 0 if float(value).is_integer() else 1)
    return value


def station_words(text: str | None) -> str:
    """An alarm's detail or a station's reply in the reader's words (parts joined by
    ``; `` are translated one by one; an unknown part stays as the station wrote it)."""
    if not text:
        return ""
    parts = []
    for part in text.split("; "):
        for pattern in STATION_PATTERNS:
            found = pattern.regex.search(part)
            if found is None:
                continue
            params = {k: _station_param(k, v or "") for k, v in found.groupdict().items()}
            words = gettext(pattern.msgid) % params
            if found.groupdict().get("more"):
                words += " " + gettext("and %(n)s more") % {"n": found.group("more")}
            parts.append(words.strip())
            break
        else:
            parts.append(part)
    return "; ".join(parts)
