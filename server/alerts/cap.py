"""CAP 1.2 ingest: an OASIS Common Alerting Protocol message becomes a Loaxa alert.

Pure: bytes and the area names in, a :class:`CapMessage` or a :class:`CapError` out
(no database, no HTTP). Every refusal names the element and what is wrong with it,
because the sender is another system whose operator reads the message at 3 a.m.

Mapping (docs/alerts.md has the full table):

- ``status`` Actual → a real alert, Exercise → a drill; Test, System and Draft are not
  broadcast. ``msgType`` Alert sends, Update cancels what ``references`` names and
  sends the new one, Cancel cancels what ``references`` names; Ack and Error are refused.
- The ``info`` block used is the first whose ``language`` starts with ``vi``, else the
  first one.
- ``info/area``: each ``geocode`` with ``valueName`` ``VN-ADMIN`` is an official
  administrative code (province two digits, commune/ward five, as the area tree uses);
  without one, ``areaDesc`` is split on ``,`` and ``;`` and each name is matched to the
  tree with or without diacritics and with or without its "Xã"/"Phường"/"Tỉnh" prefix.
- ``resource`` with an ``audio/*`` ``mimeType`` and a base64 ``derefUri`` is the audio;
  otherwise ``headline``, ``description`` and ``instruction`` (what people must do) are
  read aloud, in that order.
- ``(sender, identifier)`` names one message for good: the API answers a repeat with the
  alert it already made. ``references`` triples (``sender,identifier,sent``) are parsed
  here; whether they name a message the server knows is the API's check.
- ``severity`` maps one to one (Unknown → severe); ``expires`` is the alert's expiry
  (default two hours from now).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

from lxml import etree

from loaxa_protocol import AlertSeverity
from loaxa_protocol.errors import LoaxaError
from loaxa_protocol.messages import INLINE_AUDIO_MAX_BYTES

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
XSD = Path(__file__).with_name("cap-1.2.xsd")
GEOCODE_NAME = "VN-ADMIN"
DEFAULT_TTL = timedelta(hours=2)
MAX_AUDIO_SOURCE_BYTES = 4 * 1024 * 1024
"""A ``derefUri`` larger than this cannot become 256 KiB of Opus speech worth sending."""

SEVERITY = {
    "Extreme": AlertSeverity.EXTREME,
    "Severe": AlertSeverity.SEVERE,
    "Moderate": AlertSeverity.MODERATE,
    "Minor": AlertSeverity.MINOR,
    "Unknown": AlertSeverity.SEVERE,
}
_PREFIXES = ("thanh pho ", "thi tran ", "thi xa ", "dac khu ", "tinh ", "xa ", "phuong ")
_SPLIT = re.compile(r"[;,]")


class CapError(LoaxaError):
    """The CAP message cannot become an alert; the text says which element and why."""


@dataclass(frozen=True)
class Reference:
    """One ``sender,identifier,sent`` triple of ``references``."""

    sender: str
    identifier: str
    sent: datetime

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{self.sent.isoformat()}"


@dataclass
class CapMessage:
    identifier: str
    sender: str
    msg_type: str
    drill: bool
    sent: datetime | None = None
    references: str | None = None
    referenced: list[Reference] = field(default_factory=list)
    title: str = ""
    severity: AlertSeverity = AlertSeverity.SEVERE
    text: str | None = None
    audio: bytes | None = None
    audio_name: str = "cap-audio"
    audio_where: str = "info/resource"
    info_where: str = "info[1]"
    expires_at: datetime | None = None
    area_codes: list[str] | None = None


@cache
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def _plain(text: str) -> str:
    return text.replace("{" + CAP_NS + "}", "")


def fold(name: str) -> str:
    """Lower case, no diacritics (đ → d), single spaces: how names are compared."""
    decomposed = unicodedata.normalize("NFD", name.replace("đ", "d").replace("Đ", "D"))
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.lower().split())


def _without_prefix(folded: str) -> str:
    for prefix in _PREFIXES:
        if folded.startswith(prefix):
            return folded[len(prefix) :]
    return folded


def match_area_name(name: str, names: Mapping[str, str]) -> list[str]:
    """Codes of areas called ``name``: exact (folded) first, then without the unit prefix."""
    wanted = fold(name)
    exact = sorted(code for code, n in names.items() if fold(n) == wanted)
    if exact:
        return exact
    bare = _without_prefix(wanted)
    return sorted(code for code, n in names.items() if _without_prefix(fold(n)) == bare)


def _parse_time(text: str) -> datetime:
    """An ISO date-time that must carry its offset (CAP requires one)."""
    parsed = datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time-zone offset")
    return parsed


def parse_cap(raw: bytes, names: Mapping[str, str], now: datetime) -> CapMessage:
    """Validate and map one CAP 1.2 message; raises CapError naming what is wrong."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(raw, parser)
    except etree.XMLSyntaxError as exc:
        raise CapError(f"malformed XML: {exc}") from exc
    if root.getroottree().docinfo.internalDTD is not None:
        # Entities are how XML bombs and file reads ride in; CAP never needs a DTD.
        raise CapError("malformed XML: a DOCTYPE is not allowed in a CAP message")
    if root.tag != f"{{{CAP_NS}}}alert":
        raise CapError(
            f"not a CAP 1.2 message: the root element is {_plain(root.tag)!r}, expected "
            f"'alert' in namespace {CAP_NS}"
        )
    schema = _schema()
    try:
        valid = schema.validate(root)
    except etree.XMLSchemaValidateError as exc:
        raise CapError(f"CAP 1.2 schema violation: {exc}") from exc
    if not valid:
        problems = [f"line {e.line}: {_plain(e.message)}" for e in schema.error_log][:3]
        raise CapError("CAP 1.2 schema violation: " + "; ".join(problems))

    def text_of(parent: etree._Element, name: str) -> str | None:
        found = parent.find(f"{{{CAP_NS}}}{name}")
        return found.text.strip() if found is not None and found.text else None

    status = text_of(root, "status") or ""
    msg_type = text_of(root, "msgType") or ""
    message = CapMessage(
        identifier=text_of(root, "identifier") or "",
        sender=text_of(root, "sender") or "",
        msg_type=msg_type,
        drill=status == "Exercise",
        sent=_parse_time(text_of(root, "sent") or ""),
        references=text_of(root, "references"),
    )
    if status not in {"Actual", "Exercise"}:
        raise CapError(
            f"status: {status!r} messages are not broadcast; send 'Actual' for a real alert "
            "or 'Exercise' for a drill"
        )
    if msg_type not in {"Alert", "Update", "Cancel"}:
        raise CapError(f"msgType: {msg_type!r} is not an alert; send Alert, Update or Cancel")
    if msg_type in {"Update", "Cancel"}:
        if not message.references:
            raise CapError(f"references: a {msg_type} must name the message it replaces")
        for triple in message.references.split():
            parts = triple.split(",")
            if len(parts) != 3:
                raise CapError(
                    f"references: {triple!r} is not 'sender,identifier,sent' (CAP 1.2 §3.2.1)"
                )
            try:
                sent = _parse_time(parts[2])
            except ValueError as exc:
                raise CapError(
                    f"references: {triple!r}: {parts[2]!r} is not a date-time with an offset "
                    "(the referenced message's sent)"
                ) from exc
            message.referenced.append(Reference(parts[0], parts[1], sent))
        if msg_type == "Cancel":
            return message

    infos = root.findall(f"{{{CAP_NS}}}info")
    if not infos:
        raise CapError(f"info: a {msg_type} needs an info block (what, where, how severe)")
    chosen = next(
        (i for i in infos if (text_of(i, "language") or "").lower().startswith("vi")), infos[0]
    )
    where = message.info_where = f"info[{infos.index(chosen) + 1}]"
    headline = text_of(chosen, "headline")
    event = text_of(chosen, "event") or ""
    description = text_of(chosen, "description")
    instruction = text_of(chosen, "instruction")
    message.title = (headline or event)[:200]
    message.severity = SEVERITY[text_of(chosen, "severity") or "Unknown"]
    spoken = " ".join(p.rstrip(".") + "." for p in (headline, description, instruction) if p)
    message.text = spoken or None

    expires = text_of(chosen, "expires")
    message.expires_at = _parse_time(expires) if expires else now + DEFAULT_TTL
    if message.expires_at <= now:
        raise CapError(
            f"{where}/expires: {expires} is already past (server time {now.isoformat()})"
        )

    _read_audio(chosen, where, message)
    message.area_codes = _areas(chosen, where, names)
    return message


def _read_audio(info: etree._Element, where: str, message: CapMessage) -> None:
    for index, resource in enumerate(info.findall(f"{{{CAP_NS}}}resource"), start=1):
        mime = (resource.findtext(f"{{{CAP_NS}}}mimeType") or "").strip().lower()
        if not mime.startswith("audio/"):
            continue
        here = f"{where}/resource[{index}]"
        data = resource.findtext(f"{{{CAP_NS}}}derefUri")
        if not data or not data.strip():
            uri = resource.findtext(f"{{{CAP_NS}}}uri")
            raise CapError(
                f"{here}/derefUri: audio must be carried in the message (base64 derefUri); "
                f"Loaxa does not fetch {uri or 'a uri'} while an alert waits"
            )
        try:
            audio = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CapError(f"{here}/derefUri: not valid base64 ({exc})") from exc
        if len(audio) > MAX_AUDIO_SOURCE_BYTES:
            kib = len(audio) // 1024
            raise CapError(
                f"{here}/derefUri: audio is {kib} KiB, inline alerts carry at most "
                f"{INLINE_AUDIO_MAX_BYTES // 1024} KiB; shorten it or use a canned message"
            )
        message.audio = audio
        desc = (resource.findtext(f"{{{CAP_NS}}}resourceDesc") or "cap-audio").strip()
        message.audio_name = f"{desc[:60]}.{mime.split('/', 1)[1][:8]}"
        message.audio_where = f"{here}/derefUri"
        return


def _areas(info: etree._Element, where: str, names: Mapping[str, str]) -> list[str]:
    areas = info.findall(f"{{{CAP_NS}}}area")
    if not areas:
        raise CapError(f"{where}/area: the message names no area")
    codes: set[str] = set()
    for index, area in enumerate(areas, start=1):
        here = f"{where}/area[{index}]"
        geocoded = False
        for geocode in area.findall(f"{{{CAP_NS}}}geocode"):
            value_name = (geocode.findtext(f"{{{CAP_NS}}}valueName") or "").strip()
            if value_name.upper() != GEOCODE_NAME:
                continue
            value = (geocode.findtext(f"{{{CAP_NS}}}value") or "").strip()
            if value not in names:
                raise CapError(
                    f"{here}/geocode: {GEOCODE_NAME} {value!r} is not an area code in the tree"
                )
            codes.add(value)
            geocoded = True
        if geocoded:
            continue
        desc = (area.findtext(f"{{{CAP_NS}}}areaDesc") or "").strip()
        for part in (p.strip() for p in _SPLIT.split(desc)):
            if not part:
                continue
            found = match_area_name(part, names)
            if not found:
                raise CapError(
                    f"{here}/areaDesc: {part!r} matches no area in the tree (and the area "
                    f"has no {GEOCODE_NAME} geocode)"
                )
            if len(found) > 1:
                listed = ", ".join(f"{c} ({names[c]})" for c in found)
                raise CapError(
                    f"{here}/areaDesc: {part!r} is ambiguous ({listed}); add a "
                    f"{GEOCODE_NAME} geocode"
                )
            codes.update(found)
    return sorted(codes)
