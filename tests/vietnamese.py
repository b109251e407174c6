"""Finds English from the server in a page meant to be Vietnamese.

A page read by a Vietnamese clerk may show names people typed (stations, titles,
usernames), codes (``cb-st-001``, ``01273``) and units (``LUFS``, ``mA``), but no sentence
or word of the server's own English. Three nets, each able to fail:

1. a whole message of the catalogue (an English msgid whose Vietnamese differs) as a text
   node: a missing ``_()`` or translation;
2. machine text: a Python dict (``{'state': …}``), a UTC ISO time, an action code
   (``programme.create``), a plan item id (``p2.1.1.202612090530``);
3. a run of three words of a message, or one English word of the catalogue's vocabulary
   that Vietnamese never uses (``played``, ``approve``): English that never went through
   the catalogue, such as a station's ``played 1 time(s)``.

Only what a person reads is checked: text nodes and the ``title``/``aria-label``/
``placeholder``/``alt`` attributes and button values, outside ``<script>``/``<style>`` and
outside an element that declares another language (``lang="en"`` on the "English" button,
``lang="zxx"`` on the audit log's raw record).
"""

from __future__ import annotations

import re
from functools import cache
from html.parser import HTMLParser

from babel.messages.pofile import read_po
from vietnam_provinces import Province, Ward

from server.i18n import LOCALES_DIR

POT = LOCALES_DIR.parent / "messages.pot"
LOANWORDS = {"podcast", "rss"}
"""Written the same in Vietnamese; a message made only of them is translated as itself."""

READ_ATTRIBUTES = ("title", "aria-label", "placeholder", "alt")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip
IDENTIFIER = re.compile(r"\S*[\d_@/\\-]\S*")
ASCII_WORD = re.compile(r"(?<![\w.])[A-Za-z]+(?![\w])")
NOT_A_FILE = "".join(rf"(?<!\.{ext})" for ext in ("wav", "mp3", "ogg", "m4a", "opus", "csv", "xml"))
MACHINE = (
    (re.compile(r"\{'|': |\"\w+\": "), "a Python dict or JSON"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}"), "an ISO (UTC) time"),
    (re.compile(r"\bp\d+\.\d+(?:-\d+)?\.\d+\.\d{12}"), "a plan item id"),
    (re.compile(r"\b(?:denied:)?[a-z_]+\.[a-z_]+(?:\.[a-z_]+)?\b" + NOT_A_FILE), "an action code"),
    (re.compile(r"\b(?:True|False|None)\b"), "a Python value"),
)


class _Readable(HTMLParser):
    """Collects what a person reads, skipping scripts, styles and other-language parts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._stack: list[tuple[str, bool]] = []  # (tag, skipped)

    def _skipping(self) -> bool:
        return any(skipped for _tag, skipped in self._stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        lang = named.get("lang")
        other_language = lang is not None and tag != "html" and not lang.startswith("vi")
        skipped = tag in ("script", "style") or other_language
        if not (skipped or self._skipping()):
            self.texts += [v for k, v in attrs if k in READ_ATTRIBUTES and v]
        if tag not in VOID:
            self._stack.append((tag, skipped))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                del self._stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if data.strip() and not self._skipping():
            self.texts.append(" ".join(data.split()))


def readable_texts(html: str) -> list[str]:
    parser = _Readable()
    parser.feed(html)
    return parser.texts


@cache
def _catalogue() -> tuple[frozenset[str], tuple[str, ...], frozenset[str]]:
    """(whole English messages, three-word runs of them, English-only words).

    The English comes from the template (``messages.pot``: every msgid the code uses),
    not from the Vietnamese catalogue, so a translation deleted or copied from the English
    cannot hide its own message. Only real translations (msgstr ≠ msgid) teach which
    ASCII words Vietnamese uses too (LUFS, VOV1, Loaxa, MP3…); so do the country's place
    names, whose syllables are often written without marks (Long, Bang, Hang…).
    """
    with POT.open("rb") as file:
        english = [str(m.id) for m in read_po(file) if m.id and isinstance(m.id, str)]
    with (LOCALES_DIR / "vi" / "LC_MESSAGES" / "messages.po").open("rb") as file:
        vietnamese = [
            str(m.string) for m in read_po(file) if m.string and str(m.string) != str(m.id)
        ]
    vietnamese_words = {w.lower() for text in vietnamese for w in ASCII_WORD.findall(text)}
    vietnamese_words |= LOANWORDS
    for province in Province.iter_all():
        for ward in Ward.iter_by_province(province.code):
            vietnamese_words |= {w.lower() for w in ASCII_WORD.findall(ward.name)}
    messages: set[str] = set()
    runs: set[str] = set()
    english_words: set[str] = set()
    for msgid in english:
        words = {w.lower() for w in ASCII_WORD.findall(msgid) if len(w) >= 3}
        if not words - vietnamese_words:
            continue  # "LUFS", "%(n)s s": the same in both languages
        messages.add(msgid)
        english_words |= words
        for fragment in re.split(r"%\(\w+\)[sd]|%%|[.:;,()“”\"?!…]", msgid):
            parts = fragment.split()
            runs |= {" ".join(parts[i : i + 3]) for i in range(len(parts) - 2)}
    return frozenset(messages), tuple(sorted(runs)), frozenset(english_words - vietnamese_words)


def english_in(texts: list[str]) -> list[str]:
    """Every piece of server English found, as ``"why: text"`` (empty: all Vietnamese)."""
    messages, runs, words = _catalogue()
    found: list[str] = []
    for text in texts:
        if text in messages:
            found.append(f"an English message: {text!r}")
            continue
        machine = next((what for pattern, what in MACHINE if pattern.search(text)), None)
        if machine is not None:
            found.append(f"{machine}: {text!r}")
            continue
        run = next((r for r in runs if r in text), None)
        if run is not None:
            found.append(f"English words {run!r}: {text!r}")
            continue
        plain = IDENTIFIER.sub(" ", text)
        english = [w for w in ASCII_WORD.findall(plain) if w.lower() in words]
        if english:
            found.append(f"English word {english[0]!r}: {text!r}")
    return found


def english_on_page(html: str) -> list[str]:
    return english_in(readable_texts(html))
