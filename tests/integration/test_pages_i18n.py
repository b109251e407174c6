"""The message catalogues are complete and compiled: no page ever falls back to English
for a Vietnamese reader because someone added a string and forgot the catalogues."""

from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from server.i18n import DOMAIN, LOCALES_DIR, gettext, language
from server.i18n.__main__ import CONFIG, missing


def key(value: object) -> object:
    """A message id or string as a dict key (plural forms come as lists or tuples)."""
    return tuple(value) if isinstance(value, list | tuple) else value


def test_every_vietnamese_string_is_translated() -> None:
    assert missing("vi") == []


def test_the_compiled_catalogues_match_their_sources() -> None:
    # English is the source language: its catalogue is the identity, only Vietnamese counts.
    assert (LOCALES_DIR / "en" / "LC_MESSAGES" / f"{DOMAIN}.mo").is_file()
    for code in ("vi",):
        folder = LOCALES_DIR / code / "LC_MESSAGES"
        with (folder / f"{DOMAIN}.po").open("rb") as po, (folder / f"{DOMAIN}.mo").open("rb") as mo:
            source, compiled = read_po(po), read_mo(mo)
        wanted = {
            key(m.id): key(m.string)
            for m in source
            if m.id
            and not m.fuzzy
            and all(key(m.string) if isinstance(m.string, tuple) else [m.string])
        }
        got = {key(m.id): key(m.string) for m in compiled if m.id}
        assert got == wanted, f"{code}: run `python -m server.i18n compile`"


def test_every_string_in_the_code_is_in_the_catalogue(tmp_path: Path) -> None:
    from babel.messages.extract import extract_from_dir

    root = Path(__file__).resolve().parents[2] / "server"
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(root),
        method_map,
        options,
        keywords={
            "_": None,
            "N_": None,
            "gettext": None,
            "ngettext": (1, 2),
            "pgettext": ((1, "c"), 2),
        },
    ):
        found.add(message if isinstance(message, str) else message[0])
    with (LOCALES_DIR / "vi" / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        known = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(po) if m.id}
    assert CONFIG.is_file()
    assert {"Sign in", "Monday", "Upload progress"} <= found  # the extraction does find them
    assert found - known == set(), "run `python -m server.i18n update`, then translate"


def test_vietnamese_by_default_english_on_request() -> None:
    with language("vi"):
        assert gettext("Sign in") == "Đăng nhập"
    with language("en"):
        assert gettext("Sign in") == "Sign in"
    with language("fr"):  # not offered: Vietnamese
        assert gettext("Sign in") == "Đăng nhập"
