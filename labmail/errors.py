"""labmail's one family of exceptions.

Every error a student can cause (a typo in a domain, quotes pasted in a TXT
value, a DNS timeout, a wrong key) is raised as a :class:`LabmailError`
subclass whose message says what is wrong and what to do, in French first
(English with ``labmail.i18n.set_language("en")``)::

    LabmailError
    ├── ConfigError          configuration and identity (first name, domains)
    │   └── InvalidName      a DNS label or domain name that cannot be used
    ├── DNSError             DNS queries and zone changes
    │   ├── DNSLookupFailed  a query that did not give an answer (timeout, SERVFAIL…)
    │   ├── RecordError      a record typed in the DNS panel that is wrong
    │   └── UpdateRefused    the DNS server refused a change (key, zone, rule)
    └── LabError             the embedded lab (not running, cannot start…)

Two more belong to the notebooks' graded work (nbgrader), not to mistakes in a call:

    VerificationEchouee      a "Vérification" cell found the work not done or wrong (an AssertionError, as
                             nbgrader's test cells expect)
    ExerciceAFaire           an exercise left as distributed (the stub ``grading.a_faire()`` raises it)

Context is attached as attributes (``err.rfc``, ``err.context``) so that
notebooks and graders can use it.

In a notebook, every one of them shows as its message alone — one short line, in the current language —
never as a traceback through labmail's internals (IPython's ``_render_traceback_`` protocol). Set
``LABMAIL_TRACEBACK=1`` to get the full traceback back (for labmail's developers).
"""

from __future__ import annotations

import os
from typing import Any

from .i18n import Text, get_language

_RED, _RESET = "\x1b[0;31m", "\x1b[0m"


class _Explained:
    """A message in both languages, shown in notebooks without a traceback."""

    text: Text
    rfc: str | None = None
    _icon = "⚠"

    def message(self, lang: str | None = None) -> str:
        """The message in ``lang`` (default: the current language), with the RFC reference."""
        text = self.text.in_language(lang or get_language())
        if self.rfc:
            text += f" [{self.rfc}]"
        return text

    def __str__(self) -> str:
        return self.message()

    @property
    def _render_traceback_(self):
        """IPython shows these lines instead of a traceback (``LABMAIL_TRACEBACK=1``: the usual traceback)."""
        if os.environ.get("LABMAIL_TRACEBACK"):
            raise AttributeError("_render_traceback_")
        return lambda: [f"{_RED}{self._icon} {self.message()}{_RESET}"]


class LabmailError(_Explained, Exception):
    """Base class: a problem labmail can explain, with what to do about it."""

    def __init__(self, fr: str, en: str | None = None, *, rfc: str | None = None, **context: Any) -> None:
        self.text = Text(fr, en if en is not None else fr)
        self.rfc = rfc
        self.context = context
        super().__init__(fr)


class ConfigError(LabmailError):
    """The configuration or an identity value is unusable."""


class InvalidName(ConfigError):
    """A DNS label or domain name is not valid; the message says what to type instead."""


class DNSError(LabmailError):
    """A DNS query or zone change failed."""


class DNSLookupFailed(DNSError):
    """A DNS query got no usable answer (timeout, SERVFAIL, REFUSED...)."""


class RecordError(DNSError):
    """A record given to the DNS panel is wrong (name, type, value)."""


class UpdateRefused(DNSError):
    """The DNS server refused a dynamic update (RFC 2136) or a zone transfer."""


class MailError(LabmailError):
    """A mail client's problem: SMTP, IMAP or POP3 unreachable or refusing, a mailbox or folder unknown."""


class APIError(MailError):
    """The school server's API (Mailcow-compatible) refused or did not answer."""


class MessageError(LabmailError, ValueError):
    """A message that cannot be read, signed, sealed or analysed as given (empty, no Received header…)."""


class ReportError(MessageError):
    """A DMARC aggregate report that cannot be read (not XML, damaged archive, wrong root element)."""


class AutodiscoverError(LabmailError):
    """Client configuration (autoconfig, Autodiscover) that cannot be fetched or read."""


class CourseError(LabmailError):
    """The course's helpers cannot do what was asked (a mail that did not arrive, a mailbox the course did not make)."""


class UsageError(LabmailError, ValueError):
    """A function called with arguments it cannot take (an unknown standard, receiver, quiz, answer…)."""


class LabError(LabmailError):
    """The embedded lab could not be started, reached or stopped."""


class VerificationEchouee(_Explained, AssertionError):
    """A notebook's check failed: what is wrong and how to fix it (French first). An :class:`AssertionError`, so
    that nbgrader scores the test cell zero, and shown as one line, so that the student reads the message."""

    _icon = "✘"

    def __init__(self, fr: str, en: str | None = None) -> None:
        self.text = Text(fr, en if en is not None else fr)
        super().__init__(fr)


class ExerciceAFaire(_Explained, Exception):
    """An exercise cell still holds the distributed stub: the message says what to do."""

    _icon = "✋"

    def __init__(self, fr: str | None = None, en: str | None = None) -> None:
        self.text = Text(fr or ("Exercice à faire : remplacez les lignes « # VOTRE CODE ICI » et « grading.a_faire() » "
                                "par votre code (la consigne est juste au-dessus), puis exécutez la cellule."),
                         en or ("Exercise to do: replace the lines \"# VOTRE CODE ICI\" and \"grading.a_faire()\" with "
                                "your code (the instructions are just above), then run the cell."))
        super().__init__(self.text.fr)


def _notebook_handler(shell, etype, value, tb, tb_offset=None):
    """IPython custom exception handler for ``NameError`` (see :func:`install_notebook_display`). The error keeps its
    Python name (nbgrader matches it against the kernel's reply); what the student reads is the French line."""
    frame = tb
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    in_cell = frame is not None and frame.tb_frame.f_globals.get("__name__") == "__main__"
    if in_cell and getattr(value, "name", None):
        text = Text(f"« {value.name} » n'est pas défini : la cellule qui le définit, plus haut, n'a pas été exécutée "
                    "ou a échoué. Exécutez les cellules dans l'ordre depuis le début (après un redémarrage du noyau, "
                    "tout est à refaire : menu Exécuter › Exécuter toutes les cellules au-dessus), ou corrigez "
                    "l'orthographe du nom.",
                    f"\"{value.name}\" is not defined: the cell above that defines it was not run, or failed. Run the "
                    "cells in order from the top (after a kernel restart, everything has to be run again: Run › Run "
                    "All Above Selected Cell), or fix the spelling of the name.")
        stb = [f"{_RED}⚠ {text}{_RESET}"]
    else:  # a NameError inside a library: the usual traceback
        stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
    shell._showtraceback(etype, value, stb)
    return None


def install_notebook_display() -> bool:
    """In an IPython kernel, show a name used before the cell that defines it ran (``NameError`` in a cell) as one
    French line — what a student meets when a cell above was skipped or failed, or after a kernel restart (labmail's
    own errors need nothing: they render themselves so). :func:`labmail.course.prepare` calls it; it does nothing
    outside IPython, with ``LABMAIL_TRACEBACK=1``, or when another custom exception handler is installed. Returns
    whether labmail's display is in place."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the course's kernel
        return False
    shell = get_ipython()
    if shell is None or os.environ.get("LABMAIL_TRACEBACK"):
        return False
    if getattr(shell, "_labmail_errors", False):
        return True
    if shell.custom_exceptions:
        return False
    shell.set_custom_exc((NameError,), _notebook_handler)
    shell._labmail_errors = True
    return True


__all__ = [
    "install_notebook_display",
    "LabmailError",
    "ConfigError",
    "InvalidName",
    "DNSError",
    "DNSLookupFailed",
    "RecordError",
    "UpdateRefused",
    "LabError",
    "VerificationEchouee",
    "ExerciceAFaire",
]
