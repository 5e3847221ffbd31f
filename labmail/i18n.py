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


#: Column names of labmail's tables, French (as in the code) → English: a DataFrame follows the language setting.
COLUMN_NAMES = {
    "attendu": "expected", "authentifié": "authenticated", "balise": "tag", "commentaires": "comments",
    "constat": "finding", "correction": "fix", "correspond": "matches", "de": "from", "domaine": "domain",
    "début": "begin", "décalage_horloge": "clock_skew", "délai_s": "delay_s", "détail": "detail", "en-tête": "header",
    "enveloppe": "envelope_from", "explication": "explanation", "fin": "end", "gravité": "severity",
    "identifiant": "username", "méthode": "method", "nom": "name", "nom_inverse": "reverse_name", "où": "where",
    "par": "by", "pourquoi": "why", "profondeur": "depth", "propriétés": "properties", "protocole": "protocol",
    "rapporteur": "reporter", "raison": "reason", "requêtes DNS": "DNS queries", "requêtes comptées": "lookups counted",
    "requêtes vides": "void lookups", "résultat": "result", "résultats vus (AAR)": "results seen (AAR)",
    "résumé": "summary", "rôle": "role", "scellé par": "sealed by", "sceau valide": "seal valid",
    "serveur": "server", "signature AMS valide": "AMS signature valid", "signification": "meaning",
    "statut": "status", "sécurité": "security", "terme": "term", "titre": "title", "trouvé": "found",
    "valeur": "value", "version_tls": "tls_version", "étape": "step", "étudiant": "student",
}


def column(name: str) -> str:
    """A column's name in the current language (``column("domaine")`` is ``"domain"`` in English)."""
    return COLUMN_NAMES.get(name, name) if get_language() == "en" else name


def frame(data=None, columns=None):
    """A pandas DataFrame whose column names follow the language setting (the code writes them in French).
    pandas is imported here, when a table is asked for: the engine itself never needs it."""
    import pandas as pd

    table = pd.DataFrame(data, columns=columns)
    if get_language() == "en":
        table = table.rename(columns=lambda name: COLUMN_NAMES.get(name, name))
    return table
