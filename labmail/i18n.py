"""Languages of labmail's messages: French first, English available.

Every message a student can see exists in both languages. The current
language comes from :func:`set_language`, else from the ``LABMAIL_LANG``
environment variable (or ``COURSE_LANG``, as set by many JupyterHub
images), else French.

>>> from labmail.i18n import set_language, tr
>>> set_language("en")
>>> tr("Bonjour", "Hello")
'Hello'
>>> set_language("fr")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

LANGUAGES = ("fr", "en")
_current: str | None = None


def set_language(lang: str | None) -> None:
    """Choose the language of messages (``"fr"`` or ``"en"``; ``None`` = from the environment)."""
    global _current
    if lang is not None and lang not in LANGUAGES:
        raise ValueError(f"langue inconnue {lang!r} : choisissez 'fr' ou 'en' / unknown language, use 'fr' or 'en'")
    _current = lang


def get_language() -> str:
    """The language messages are shown in now."""
    if _current is not None:
        return _current
    for var in ("LABMAIL_LANG", "COURSE_LANG"):
        value = os.environ.get(var, "").strip().lower()[:2]
        if value in LANGUAGES:
            return value
    return "fr"


@dataclass(frozen=True)
class Text:
    """A message in both languages; ``str()`` gives the current language."""

    fr: str
    en: str

    def __str__(self) -> str:
        return self.en if get_language() == "en" else self.fr

    def in_language(self, lang: str) -> str:
        return self.en if lang == "en" else self.fr


def tr(fr: str, en: str) -> str:
    """Pick the French or English text according to the current language."""
    return en if get_language() == "en" else fr
