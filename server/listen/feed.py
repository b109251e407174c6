"""A commune's podcast: RSS 2.0 with one enclosure per aired bulletin.

Pure: the caller gives the channel's words, absolute URLs and the entries. Podcast
apps need an enclosure's byte length and type, a stable guid (so an episode is not
fetched twice) and an RFC 822 ``pubDate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from xml.etree import ElementTree as ET

from server.listen.replay import Aired


@dataclass(frozen=True)
class Channel:
    title: str
    link: str
    description: str
    language: str
    updated_at: datetime | None
    """The newest episode's time (not the request's: the feed's ETag must stay put)."""


def podcast_rss(
    channel: Channel,
    entries: Sequence[Aired],
    audio_url: Callable[[Aired], str],
    entry_title: Callable[[Aired], str],
) -> bytes:
    """The feed as UTF-8 XML bytes, newest episode first (as ``entries`` come)."""
    rss = ET.Element("rss", version="2.0")
    head = ET.SubElement(rss, "channel")
    for tag, text in (
        ("title", channel.title),
        ("link", channel.link),
        ("description", channel.description),
        ("language", channel.language),
    ):
        ET.SubElement(head, tag).text = text
    if channel.updated_at is not None:
        ET.SubElement(head, "lastBuildDate").text = format_datetime(channel.updated_at)
    for entry in entries:
        item = ET.SubElement(head, "item")
        ET.SubElement(item, "title").text = entry_title(entry)
        ET.SubElement(item, "description").text = entry.part
        url = audio_url(entry)
        ET.SubElement(
            item, "enclosure", url=url, length=str(entry.size_bytes), type=entry.mime_type
        )
        stamp = entry.aired_at.strftime("%Y%m%dT%H%M%SZ")
        ET.SubElement(item, "guid", isPermaLink="false").text = f"{url}#{stamp}"
        ET.SubElement(item, "pubDate").text = format_datetime(entry.aired_at)
    return ET.tostring(rss, encoding="utf-8", xml_declaration=True)
