"""Message catalogues for the web pages: Vietnamese first, English selectable.

Source strings (msgids) are English; ``locales/vi`` carries the Vietnamese every page
shows by default, ``locales/en`` is the identity catalogue. The language of the request
being served lives in a context variable, so the Jinja2 ``{% trans %}`` tags and the
Python helpers that build labels (``gettext`` below) agree without passing it around.

Refresh the catalogues with ``python -m server.i18n update`` and ``… compile``.
"""

from __future__ import annotations

import gettext as _gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

from babel.support import NullTranslations, Translations

LOCALES_DIR = Path(__file__).parent / "locales"
DOMAIN = "messages"
LANGUAGES: dict[str, str] = {"vi": "Tiếng Việt", "en": "English"}
"""Each language offered, named in itself (so a reader finds their own)."""
DEFAULT_LANGUAGE = "vi"
LANGUAGE_COOKIE = "loaxa_lang"

_current: ContextVar[str] = ContextVar("loaxa_language", default=DEFAULT_LANGUAGE)


@cache
def translations(language: str) -> _gettext.NullTranslations:
    """The compiled catalogue for ``language`` (loaded once); identity if it is missing."""
    if language not in LANGUAGES:
        language = DEFAULT_LANGUAGE
    loaded = Translations.load(str(LOCALES_DIR), [language], DOMAIN)
    return loaded if isinstance(loaded, Translations) else NullTranslations()


def pick_language(cookie: str | None) -> str:
    """The cookie's language if we offer it, else Vietnamese (never the browser's guess:
    a clerk's borrowed phone may well be set to English)."""
    return cookie if cookie in LANGUAGES else DEFAULT_LANGUAGE


def current_language() -> str:
    return _current.get()


def set_language(language: str) -> None:
    """Make ``language`` the one of the request being served (this context only)."""
    _current.set(pick_language(language))


@contextmanager
def language(code: str) -> Iterator[None]:
    """Temporarily translate into ``code`` (tests, e-mails, exports)."""
    token = _current.set(pick_language(code))
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return translations(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return translations(_current.get()).ngettext(singular, plural, n)


def pgettext(context: str, message: str) -> str:
    return translations(_current.get()).pgettext(context, message)


def N_(message: str) -> str:
    """Mark a string for extraction without translating it now (module-level labels)."""
    return message


_ = gettext
