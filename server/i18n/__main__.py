"""Maintain the catalogues: ``python -m server.i18n extract|update|compile|check``.

``update`` = extract + merge the new msgids into every language's ``.po`` (old
translations kept, changed ones marked fuzzy); ``compile`` writes the ``.mo`` files the
server loads; ``check`` fails if any Vietnamese string is missing or fuzzy, so the
pages never fall back to English for a Vietnamese reader.
"""

from __future__ import annotations

import sys
from pathlib import Path

from babel.messages.frontend import CommandLineInterface
from babel.messages.pofile import read_po

from server.i18n import DOMAIN, LANGUAGES, LOCALES_DIR

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).parent / "babel.cfg"
POT = Path(__file__).parent / f"{DOMAIN}.pot"


def _babel(*args: str) -> None:
    CommandLineInterface().run(["pybabel", "-q", *args])


def extract() -> None:
    _babel(
        "extract", "-F", str(CONFIG), "-o", str(POT), "-k", "N_", "--no-location",
        "--sort-output", "--project", "Loaxa", "--copyright-holder", "Loaxa", str(ROOT / "server"),
    )  # fmt: skip


def update() -> None:
    extract()
    for code in LANGUAGES:
        po = LOCALES_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"
        if po.exists():
            _babel(
                "update", "-i", str(POT), "-d", str(LOCALES_DIR), "-l", code, "--no-fuzzy-matching"
            )
        else:
            _babel("init", "-i", str(POT), "-d", str(LOCALES_DIR), "-l", code)


def compile_all() -> None:
    _babel("compile", "-d", str(LOCALES_DIR), "--statistics")


def missing(code: str) -> list[str]:
    """msgids of ``code``'s catalogue with no (or only a fuzzy) translation."""
    po = LOCALES_DIR / code / "LC_MESSAGES" / f"{DOMAIN}.po"
    with po.open("rb") as file:
        catalog = read_po(file)
    return [
        str(m.id)
        for m in catalog
        if m.id and (m.fuzzy or not (all(m.string) if isinstance(m.string, tuple) else m.string))
    ]


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    if command == "extract":
        extract()
    elif command == "update":
        update()
    elif command == "compile":
        compile_all()
    elif command == "check":
        gaps = missing("vi")
        for msgid in gaps:
            print(f"vi: untranslated: {msgid!r}")
        return 1 if gaps else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
