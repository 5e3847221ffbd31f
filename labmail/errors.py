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

Context is attached as attributes (``err.rfc``, ``err.context``) so that
notebooks and graders can use it.
"""

from __future__ import annotations

from typing import Any

from .i18n import Text, get_language


class LabmailError(Exception):
    """Base class: a problem labmail can explain, with what to do about it."""

    def __init__(self, fr: str, en: str | None = None, *, rfc: str | None = None, **context: Any) -> None:
        self.text = Text(fr, en if en is not None else fr)
        self.rfc = rfc
        self.context = context
        super().__init__(fr)

    def message(self, lang: str | None = None) -> str:
        """The message in ``lang`` (default: the current language), with the RFC reference."""
        text = self.text.in_language(lang or get_language())
        if self.rfc:
            text += f" [{self.rfc}]"
        return text

    def __str__(self) -> str:
        return self.message()


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


class LabError(LabmailError):
    """The embedded lab could not be started, reached or stopped."""


__all__ = [
    "LabmailError",
    "ConfigError",
    "InvalidName",
    "DNSError",
    "DNSLookupFailed",
    "RecordError",
    "UpdateRefused",
    "LabError",
]
