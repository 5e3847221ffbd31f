"""Header forensics: Authentication-Results, Received hops, ARC, and one :func:`analyze` that explains a message.

* :func:`parse_authentication_results` is tolerant (RFC 8601): it keeps comments such as Gmail's
  ``(p=QUARANTINE sp=QUARANTINE dis=NONE)``, accepts Microsoft 365's form without authserv-id, and keeps
  unknown methods (``compauth``, ``bimi``…). :func:`make_authentication_results` writes the lab's headers.
* :func:`parse_received` reads a ``Received`` line (from, by, via, with, id, for, date; TLS and
  authentication from ``with`` ESMTPS/ESMTPSA); :func:`hops` lists a message's hops, oldest first, with
  the delay between them and clock skew flagged.
* :func:`analyze` gives one :class:`Report`: headers, SPF/DKIM/DMARC verdicts (recomputed when DNS and the
  envelope are available, else read from the headers) and a diagnosis — what is wrong, why, how to fix it.
"""

from __future__ import annotations

import bisect
import email.utils
import functools
import html
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from typing import TYPE_CHECKING, Any

from ._rfc5322 import READ_POLICY, Token, lex, one_line, read_headers, read_message  # noqa: F401 - used by mail, replay, course
from ._rfc5322 import domain_of as _domain_of
from .authres import (RESULTS, AuthResults, MethodResult, Property, make_authentication_results,  # noqa: F401 - re-exported
                      parse_authentication_results)
from ._records import maker
from .errors import LabmailError, MessageError
from .i18n import Text, frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .resolver import Resolver

__all__ = ["AuthResults", "MethodResult", "Property", "RESULTS", "parse_authentication_results", "make_authentication_results", "Hop",
           "parse_received", "hops", "analyze", "Report", "Finding", "Envelope", "envelope_from_headers", "verify_arc", "arc_sign", "ARCResult"]


# ---------------------------------------------------------------------------
# Received
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Hop:
    """One Received header: who handed the message to whom, how, and when.

    ``from_helo`` is the name the client gave at EHLO/HELO (from a ``helo=``/``(EHLO x)`` comment when the server
    wrote one, else the word after ``from``, as Postfix and Sendmail write it); ``from_rdns`` the reverse name the
    server found; ``from_ip`` the connecting address (IPv6 zone index kept), ``from_port`` its port when written.
    """

    from_helo: str | None
    from_rdns: str | None
    from_ip: str | None
    by: str | None
    via: str | None
    with_: str | None
    id: str | None
    for_: str | None
    date: datetime | None
    tls: bool
    authenticated: bool
    comments: tuple[str, ...]
    raw: str
    from_name: str | None = None
    from_port: int | None = None
    envelope_from: str | None = None
    tls_version: str | None = None
    tls_cipher: str | None = None
    auth_user: str | None = None
    findings: tuple[Text, ...] = ()


_CLAUSES = ("from", "by", "via", "with", "id", "for")
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_DATE_RE = re.compile(rf"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s*,\s*)?\d{{1,2}}\s+(?:{_MONTHS})\s+\d{{2,4}}\s+\d{{1,2}}:\d{{2}}"
                      rf"(?::\d{{2}})?(?:\s*[+-]\d{{4}}|\s+[A-Z]{{1,5}})?", re.I)
_LITERAL_RE = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\](?::(\d{1,5}))?", re.I)  # [ip], [IPv6:…], [ip]:port


def _literal(match: re.Match | None) -> tuple[str | None, int | None]:
    """(address, port) of an address literal match; also ``[ip:port]`` (ecelerity) and ``[a.b.c.d.port]`` (Exim 3)."""
    if match is None:
        return None, None
    inside, port = match.group(1), int(match.group(2)) if match.group(2) else None
    if _ip(inside):
        return _ip(inside), port
    m = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3})[:.](\d{1,5})", inside)
    if m and _ip(m.group(1)):
        return m.group(1), int(m.group(2))
    return None, None


@functools.lru_cache(maxsize=None)
def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """A compiled pattern, compiled once (parse_received runs many of them on every hop)."""
    return re.compile(pattern, flags)


@functools.lru_cache(maxsize=4096)
def _ip(text: str | None) -> str | None:
    """``text`` if it is an IPv4 or IPv6 address (a zone index allowed), else None."""
    import ipaddress

    if not text:
        return None
    candidate = text.strip().strip("[]")
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return None
    return candidate


_NAME_RE = re.compile(r"(?i)^\s*received\s*:")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9.])?"
_CTEXT = r"""[^()\\";]"""  # comment text the fast path reads: no nesting, quoting or ";" inside
_NOTE = rf"\((?:{_CTEXT}++|\({_CTEXT}*+\))*+\)"  # a comment, with at most one level of comments inside (possessive:
# the alternatives start with different characters, so giving back never helps — and never goes exponential)
_new_hop = maker(Hop)
_NOT_CLAUSE = r"(?!(?i:from|by|via|with|id|for)(?![A-Za-z0-9._-]))"  # a clause keyword used as a name: the full parser decides
_FAST_RECEIVED = re.compile(
    rf"(?:from (?P<name>{_NOT_CLAUSE}{_HOST}|\[[0-9.]+\]) +\((?P<first>(?P<rdns>{_HOST}) \[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\])\)"
    rf"(?P<more>(?: +{_NOTE})*) +)?by (?P<by>{_NOT_CLAUSE}{_HOST})(?: +\((?P<byc>{_CTEXT}*+)\))?"
    rf" +with (?P<proto>{_NOT_CLAUSE}[A-Za-z0-9]+)(?: +id (?P<id>{_NOT_CLAUSE}[A-Za-z0-9._-]+))?"
    rf"(?: +for <(?P<rcpt>[^\s<>()\\\";]*)>)?(?P<after>(?: +{_NOTE})*)"
    rf" *; *(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), +(?P<day>\d{{1,2}}) +(?P<month>{_MONTHS}) +(?P<year>[1-9]\d{{3}})"
    rf" +(?P<clock>\d\d:\d\d:\d\d) +(?P<offset>[+-]\d{{4}})"
    rf"(?: +\((?P<zone>{_CTEXT}*)\))?")
assert tuple(_FAST_RECEIVED.groupindex) == ("name", "first", "rdns", "ip", "more", "by", "byc", "proto", "id", "rcpt", "after",
                                            "day", "month", "year", "clock", "offset", "zone")  # m.groups() order
_FAST_NOTE = re.compile(rf"\(((?:{_CTEXT}++|\({_CTEXT}*+\))*+)\)")  # a comment's text


def _note_text(raw: str) -> str:
    """A comment's text as the lexer gives it (white space runs as one space, trimmed)."""
    return " ".join(raw.split())


def _notes(block: str) -> list[str]:
    return list(map(_note_text, _FAST_NOTE.findall(block))) if block else []


_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS.split("|"), 1)}
_MONTH_DIGITS = {name: f"{number:02d}" for name, number in _MONTH_NUMBERS.items()}
_ZONES: dict[int, timezone] = {}


def _fast_date(year: str, month: str, day: str, clock: str, offset: str) -> datetime | None:
    """The date :func:`email.utils.parsedate_to_datetime` gives for these fields of the fast pattern (``clock``
    ``HH:MM:SS``, ``offset`` ``±HHMM``), or None where it would give no zone (``-0000``) or fail (a 31 February, an
    offset of a day or more): the full parser then says why."""
    if offset[3:] < "60" and clock < "24" and offset != "-0000":  # the ISO form says the same
        try:
            return datetime.fromisoformat(f"{year}-{_MONTH_DIGITS[month]}-{day:0>2}T{clock}{offset}")
        except ValueError:
            return None
    hh, mm, ss = clock.split(":")
    sign, zone_hh, zone_mm = offset[0], offset[1:3], offset[3:]
    seconds = int(zone_hh) * 3600 + int(zone_mm) * 60
    if sign == "-":
        if seconds == 0:
            return None
        seconds = -seconds
    zone = _ZONES.get(seconds)
    if zone is None:
        if not -86400 < seconds < 86400:
            return None
        zone = _ZONES.setdefault(seconds, timezone(timedelta(seconds=seconds)))
    try:
        return datetime(int(year), _MONTH_NUMBERS[month], int(day), int(hh), int(mm), int(ss), tzinfo=zone)
    except ValueError:
        return None


def _fast_received(text: str) -> Hop | None:
    """The hop of a Received in the form Postfix, the lab and Gmail write — ``[from HELO (RDNS [IP]) (…)] by HOST
    (…) with PROTO id ID for <RCPT> (…); DATE`` — read by one pattern; None for anything else, which
    :func:`_full_received` reads. Gives exactly what the full parser gives (tests compare both on generated and
    real headers): what the pattern accepts is a form where the full parser's heuristics have nothing to decide."""
    if not text.isascii():
        return None
    m = _FAST_RECEIVED.fullmatch(text)
    if m is None:
        return None
    lowered = text.lower()
    if "helo" in lowered or "ehlo" in lowered or "port=" in lowered or "envelope-" in lowered:
        return None  # what the full parser's heuristics read: it decides
    name, first, rdns, ip, more, by, byc, proto, id_, rcpt, after, day, month, year, clock, offset, zone = m.groups()
    date = _fast_date(year, month, day, clock, offset)
    if date is None:
        return None
    if name is not None:  # "from HELO (RDNS [IP])"; without it, a hop inside one system ("by HOST with …")
        ip = _ip(ip)
        if ip is None:
            return None
        rdns = rdns.rstrip(".")
        if (len(rdns) == 7 and rdns.lower() == "unknown") or (rdns[-1:].isdigit() and _ip(rdns)):  # the host pattern
            rdns = None  # holds no ":": an address there is IPv4, ending with a digit
        comments = [first, *_notes(more)] if more else [first]
    else:
        comments = []
    by_notes = [] if byc is None else [_note_text(byc)]
    after_notes = _notes(after)
    comments += by_notes
    comments += after_notes
    if zone is not None:
        comments.append(_note_text(zone))
    with_notes = after_notes + by_notes if id_ is None and rcpt is None else by_notes
    with_, tls, tls_version, tls_cipher, authenticated, auth_user = _transport(comments, [proto], with_notes)
    helo = None if name is None or (len(name) == 7 and name.lower() == "unknown") else name
    return _new_hop(helo, rdns, ip, by, None, with_, id_, rcpt, date, tls, authenticated, tuple(comments), text, name, None,
                    None, tls_version, tls_cipher, auth_user, ())


def parse_received(value: str) -> Hop:
    """Parse one Received header value (RFC 5321 §4.4 time-stamp line, RFC 5322 §3.6.7), as real servers write it.

    The connecting address is read from every TCP-info form seen in the wild — ``[ip]`` inside or outside a
    comment, ``(ip)`` (qmail, Exchange), ``(/ip)``, ``[IPv6:…]``, a link-local address with its zone index,
    ``[ip]:port`` — then from an address literal after ``from``. A hop without ``;`` still yields its date. Missing
    parts are ``None``, never an exception; what is odd is said in ``findings``.

    >>> hop = parse_received("from [95.248.141.113] (port=63559 helo=[192.168.178.65]) by esm19.siteground.biz "
    ...                      "with esmtpsa (TLS1.3) tls TLS_AES_256_GCM_SHA384 (Exim 4.98.1) "
    ...                      "(envelope-from <francesco@valla.it>) id 1veasj-00000000ODh-1OLP; Sat, 10 Jan 2026 15:28:01 +0000")
    >>> hop.from_ip, hop.from_port, hop.from_helo, hop.envelope_from, hop.tls_version, hop.authenticated
    ('95.248.141.113', 63559, '[192.168.178.65]', 'francesco@valla.it', 'TLS1.3', True)
    """
    text = _received_text(value)
    return _fast_received(text) or _full_received(text)


def _received_text(value) -> str:
    """What both Received parsers read: the value on one line, without a leading ``Received:``."""
    text = one_line(value if isinstance(value, str) else ("" if value is None else str(value)))
    if text.lstrip()[:1] in ("r", "R"):  # the name is rarely there: the pattern only runs where it can match
        text = _NAME_RE.sub("", text, count=1)
    return text.strip()


_HELO_WORD_RE = re.compile(r"\b(?:HELO|EHLO)\b", re.I)
_HELO_EQ_RE = re.compile(r"helo=", re.I)
_SPACE_RE = re.compile(r"\s")


def _helo_claims(note: str):
    """``claimed(i)``: is the address literal starting at ``i`` (a ``[``) in this comment the HELO argument, i.e. would
    ``helo=\\S*$|\\b(?:HELO|EHLO)\\b`` (re.I) match ``note[:i]``? Answered from positions found once, so a comment
    holding thousands of literals is read in linear time (searching each prefix was quadratic: 0.5 s for 72 KB)."""
    word = _HELO_WORD_RE.search(note)
    first_word_end = word.end() if word else None
    equals = [m.start() for m in _HELO_EQ_RE.finditer(note)]
    spaces = [m.start() for m in _SPACE_RE.finditer(note)]

    def claimed(i: int) -> bool:
        if first_word_end is not None and first_word_end <= i:
            return True  # a HELO or EHLO word before it
        k = bisect.bisect_right(equals, i - 5) - 1  # the last "helo=" that ends at or before i
        if k < 0:
            return False
        w = bisect.bisect_left(spaces, i) - 1  # the last white space before i
        return w < 0 or spaces[w] < equals[k]  # "helo=" then no white space up to i

    return claimed


def _full_received(text: str) -> Hop:
    """The whole grammar and every server form of :func:`parse_received`, on an unfolded value without its name."""
    findings: list[Text] = []
    lead = _rx(r"\(\s*(from\s[^()]*(?:\([^()]*\)[^()]*)*)\)", re.I).match(text)
    if lead:  # "(from KRYPTIK [70.20.57.51]) by …" (Symantec NAVGW): the from clause written as a comment
        text = lead.group(1) + text[lead.end():]
    tokens = lex(text, ";")
    semis = [i for i, t in enumerate(tokens) if t.kind == "special"]
    head_tokens, tail_tokens = (tokens[:semis[-1]], tokens[semis[-1] + 1:]) if semis else (tokens, [])
    comments: list[str] = []
    date = None
    date_text = "".join(t.text for t in tail_tokens if t.kind in ("word", "ws")).strip() if semis else ""
    tail_comments = [t.text for t in tail_tokens if t.kind == "comment"]
    if not semis:
        whole = "".join(t.text if t.kind != "comment" else f"({t.text})" for t in head_tokens)
        found = list(_DATE_RE.finditer(whole))
        if found:
            date_text = found[-1].group(0)
            findings.append(Text("pas de « ; » avant la date : date trouvée quand même", "no \";\" before the date: date found anyway"))
            cut = found[-1].start()
            head_tokens = lex(whole[:cut], ";")
    if date_text:
        match = _DATE_RE.search(date_text)
        try:
            date = email.utils.parsedate_to_datetime(match.group(0) if match else date_text)
        except (TypeError, ValueError, IndexError):
            date = None
        if date is not None and date.tzinfo is None:
            # "-0000": the time is UTC, the sender's zone unknown (RFC 5322 §3.3); a missing zone: no date
            date = date.replace(tzinfo=timezone.utc) if _rx(r"-0000\b").search(date_text) else None
    if date_text and date is None:
        findings.append(Text(f"date illisible « {date_text[:60]} » (RFC 5322 §3.3)", f"unreadable date \"{date_text[:60]}\" (RFC 5322 §3.3)"))
    # clauses, in order; comments stay attached to the clause they follow
    clauses: dict[str, list[Token]] = {}
    current = None
    for tok in head_tokens:
        if tok.kind == "ws" or tok.kind == "special":
            continue
        if tok.kind == "comment":
            comments.append(tok.text)
        word = tok.text.lower() if tok.kind == "word" else None
        if word in _CLAUSES and word not in clauses:
            current = word
            clauses[current] = []
            continue
        if word == "envelope-from" and current is not None:
            current = "envelope-from"
            clauses.setdefault(current, [])
            continue
        if current is not None:
            clauses[current].append(tok)
        elif tok.kind == "word":
            clauses.setdefault("", []).append(tok)
    comments += tail_comments

    def words(name: str) -> list[str]:
        return [t.text for t in clauses.get(name, []) if t.kind == "word"]

    def notes(name: str) -> list[str]:
        return [t.text for t in clauses.get(name, []) if t.kind == "comment"]

    by_words = words("by")
    if by_words and "with" not in clauses:
        glued = _rx(r"(.+\.[A-Za-z]{2,})with").fullmatch(by_words[0])
        if glued and len(by_words) > 1:  # "…yahoo.comwith SMTPs": the space was lost
            clauses["with"] = [Token("word", w, 0) for w in by_words[1:]]
            by_words = [glued.group(1)]
            findings.append(Text("« by » et « with » collés : séparés", "\"by\" and \"with\" glued together: split"))
    from_words, from_notes = words("from"), notes("from")
    from_name = from_words[0] if from_words else None
    ip = port = rdns = helo = None
    # 1. an address in a comment of the from clause: "(rdns [ip])", "([ip]:port helo=x)", "(ip)", "(/ip)"
    for note in from_notes:
        claimed = _helo_claims(note)
        literal = next((m for m in _LITERAL_RE.finditer(note) if _literal(m)[0]  # not the HELO argument: "helo=[ip]"
                        and not claimed(m.start())), None)
        if literal is not None:
            ip, port = _literal(literal)
            before = note[:literal.start()].strip().split()
            after = note[literal.end():].strip().split()
            if before and before[-1].lower() not in ("unknown", "helo", "ehlo") and not before[-1].endswith(("=", ":", "@")):
                rdns = before[-1].rstrip(".")
            elif after and not after[0].startswith(("(", '"')) and "=" not in after[0] and after[0].lower() not in ("helo", "ehlo"):
                rdns = after[0].rstrip(".")  # ZoneMTA: "([ip] host)"
            break
        bare = note.strip().lstrip("/").strip()
        m_bare = _rx(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})").fullmatch(bare)
        if _ip(bare) or (m_bare and _ip(m_bare.group(1))):  # "(ip)" qmail and Exchange, "(/ip)", "(ip:port)" XMail
            ip, port = (_ip(bare), port) if _ip(bare) or m_bare is None else (m_bare.group(1), int(m_bare.group(2)))
            break
        if _rx(r"(?:HELO|EHLO)\s", re.I).search(note):  # a HELO argument is what the client claims, never its address
            continue
        after_at = _LITERAL_RE.search(note.split("@")[-1]) if "@" in note else None
        if after_at is not None:  # qmail: (user@[ip])
            literal = after_at
            if _ip(literal.group(1)):
                ip = _ip(literal.group(1))
                break
    # 2. an address literal written after the from name, outside a comment (ZoneMTA "from foo [127.0.0.1]")
    if ip is None:
        for word in from_words[1:]:
            literal = _LITERAL_RE.fullmatch(word)
            if literal and _literal(literal)[0]:
                ip, port = _literal(literal)
                break
    # 3. the from name itself: "[ip]", "[ip]:port", "ip"
    if ip is None and from_name:
        literal = _LITERAL_RE.fullmatch(from_name)
        if literal and _literal(literal)[0]:
            ip, port = _literal(literal)
        elif _ip(from_name):
            ip = _ip(from_name)
    for note in from_notes:
        m = _rx(r"(?:^|[\s(])helo=(\S+?)\)?(?:\s|$)", re.I).search(note)
        if m:
            helo = m.group(1)
        m_port = _rx(r"(?:^|\s)port=(\d{1,5})").search(note)
        if m_port and port is None:
            port = int(m_port.group(1))
        m = _rx(r"\s*(?:HELO|EHLO)\s*(\S*)\s*$", re.I).match(note) or _rx(r"\"(?:HELO|EHLO)\s+([^\"\s]+)\"", re.I).search(note) \
            or _rx(r"(?:^|\s)(?:HELO|EHLO)\s+(\S+)\s*$", re.I).search(note)
        if m and helo is None:
            helo = m.group(1) or None
    if helo is not None and from_name and from_name.lower() != "unknown" and not _ip(from_name.strip("[]")) and rdns is None \
            and not _LITERAL_RE.fullmatch(from_name):
        rdns = from_name.rstrip(".")  # Exim and qmail write the reverse name after "from" and the HELO in a comment
    if helo is None and from_name and from_name.lower() != "unknown":
        helo = from_name
    if rdns and (rdns.lower() == "unknown" or _ip(rdns)):
        rdns = None
    envelope = None
    for note in comments + [" ".join(["envelope-from"] + words("envelope-from"))]:
        m = _rx(r"envelope-(?:from|sender)\s*<([^>]*)>", re.I).search(note)
        if m:
            envelope = m.group(1)
            break
    with_, tls, tls_version, tls_cipher, authenticated, auth_user = _transport(comments, words("with"),
                                                                              notes("with") + notes("by"))
    for_words = words("for")
    for_ = for_words[0].strip("<>;") if for_words else None
    if not clauses.get("by"):
        findings.append(Text("pas de clause « by »", "no \"by\" clause"))
    return Hop(helo, rdns, ip, by_words[0].rstrip(",") if by_words else None, " ".join(words("via")) or None, with_,
               next(iter(words("id")), None), for_, date, tls, authenticated, tuple(comments), text, from_name, port, envelope,
               tls_version, tls_cipher, auth_user, tuple(findings))


_USING_RE = re.compile(r"using (TLSv?[\d.]+|SSLv\d) with cipher (\S+)", re.I)
_VERSION_RE = re.compile(r"version=(TLS[\w.]*|SSLv\d[\w/]*),?\s+cipher=([\w-]+)", re.I)
_CIPHER_RE = re.compile(r"cipher=([\w-]+)")
_TLS_NOTE_RE = re.compile(r"\b(TLS\s?1[._]\d|TLSv1(?:\.\d)?)\b")
_AUTH_RES = ((re.compile(r"Authenticated sender:\s*([^)\s]+(?:\[[^\]]*\])?)", re.I), "authenticated sender:"),
             (re.compile(r"User authenticated as\s+(\S+)", re.I), "user authenticated as"),
             (re.compile(r"(?:^|\s)AUTH\s+([^\s,]+)"), "AUTH"), (re.compile(r"(?:^|\s)AUTH:\s*\w+\s+([^\s,]+)"), "AUTH"))


def _search_from(pattern: re.Pattern[str], text: str, lowered: str, word: str) -> re.Match | None:
    """``pattern.search(text)`` for a pattern whose matches start with ``word`` (any case; ``lowered`` is the ASCII
    ``text`` in lower case): the search starts where the word first appears, or is skipped."""
    start = lowered.find(word)
    return None if start < 0 else pattern.search(text, start)


def _transport(comments: list[str], wt: list[str], by_with_notes: list[str]) -> tuple[str | None, bool, str | None, str | None, bool, str | None]:
    """(with, tls, tls_version, tls_cipher, authenticated, auth_user) of a hop, from its comments, the words of its
    ``with`` clause and the comments of its ``by`` and ``with`` clauses."""
    if len(wt) == 1:
        with_ = (wt[0].strip() or None) if wt[0].strip(",;") else None
    else:
        with_ = " ".join(w for w in wt if w.strip(",;")).strip() or None
    joined = " ".join(comments)
    lowered = joined.lower()
    every = not joined.isascii()  # a pattern is skipped when a plain substring it needs is absent (ASCII only: re.I folds ſ to s)
    tls_version = tls_cipher = None
    # where a case-insensitive pattern needs a word, the search starts at its first occurrence (no match starts before)
    m = _USING_RE.search(joined) if every else _search_from(_USING_RE, joined, lowered, "using")
    if m is None:
        m = _VERSION_RE.search(joined) if every else _search_from(_VERSION_RE, joined, lowered, "version=")
    if m is not None:
        tls_version, tls_cipher = m.group(1), m.group(2)
    elif "cipher=" in joined:
        m = _CIPHER_RE.search(joined)
        tls_cipher = m.group(1) if m else None
    if by_with_notes:
        with_notes = " ".join(by_with_notes)
        m = _TLS_NOTE_RE.search(with_notes) if "TLS" in with_notes else None
        if m and tls_version is None:
            tls_version = m.group(1)
    if len(wt) > 1:  # Exim: "with esmtpsa (TLS1.3) tls TLS_AES_256_GCM_SHA384"
        words = [w.lower() for w in wt]
        if "tls" in words:
            i = words.index("tls")
            tls_cipher = tls_cipher or (wt[i + 1] if i + 1 < len(wt) else None)
    m = _rx(r"/TLS/([\w-]+)").search(with_) if with_ and "/TLS/" in with_ else None
    if m:
        tls_cipher = tls_cipher or m.group(1)
    proto = (wt[0] if wt else "").upper()
    tls = bool(tls_version or tls_cipher) or proto.startswith(("ESMTPS", "UTF8SMTPS", "LMTPS", "SMTPS")) or "/TLS" in proto \
        or "using tls" in lowered
    auth_user = None
    for pattern, needle in _AUTH_RES if every or "auth" in lowered else ():  # each needle holds "auth"
        if every or needle in (joined if needle.isupper() else lowered):
            m = pattern.search(joined)
            if m:
                auth_user = m.group(1)
                break
    authenticated = proto in ("ESMTPA", "ESMTPSA", "UTF8SMTPA", "UTF8SMTPSA", "LMTPA", "LMTPSA") or auth_user is not None \
        or "authenticated" in lowered
    return with_, tls, tls_version, tls_cipher, authenticated, auth_user


def hops(raw: bytes | str) -> "pandas.DataFrame":
    """The message's hops as a DataFrame, oldest first: from (HELO), IP, reverse name, by, protocol, TLS and its version,
    auth, envelope-from, date, delay, skew."""

    rows = _hop_rows(raw)
    return frame(rows, columns=["étape", "de", "ip", "nom_inverse", "par", "protocole", "tls", "version_tls", "authentifié",
                                       "enveloppe", "date", "délai_s", "décalage_horloge"])


def _hop_rows(raw: bytes | str, received=None) -> list[dict[str, Any]]:
    """The rows of :func:`hops`; ``received``: the message's Received values, top first, when already read."""
    if received is None:
        received = read_headers(raw).get_all("Received", [])
    parsed = [parse_received(v) for v in reversed(received)]
    rows: list[dict[str, Any]] = []
    previous = None
    for index, hop in enumerate(parsed, 1):
        delay = None
        if hop.date is not None and previous is not None:
            delay = (hop.date - previous).total_seconds()
        rows.append({"étape": index, "de": hop.from_helo, "ip": hop.from_ip, "nom_inverse": hop.from_rdns, "par": hop.by,
                     "protocole": hop.with_, "tls": hop.tls, "version_tls": hop.tls_version, "authentifié": hop.authenticated,
                     "enveloppe": hop.envelope_from, "date": hop.date, "délai_s": delay,
                     "décalage_horloge": bool(delay is not None and delay < 0)})
        if hop.date is not None:
            previous = hop.date
    return rows


# ---------------------------------------------------------------------------
# ARC
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ARCResult:
    """The ARC chain: ``cv`` (none, pass, fail) and one row per instance (newest first)."""

    cv: str
    reason: str
    instances: tuple[dict, ...]

    def __str__(self) -> str:
        lines = [f"arc={self.cv} ({self.reason})"]
        for inst in self.instances:
            lines.append(f"  i={inst.get('instance')}: AMS d={inst.get('ams-domain')} {'✔' if inst.get('ams-valid') else '✘'}, "
                         f"AS d={inst.get('as-domain')} cv={inst.get('cv')} {'✔' if inst.get('as-valid') else '✘'} — "
                         f"{(inst.get('aar-value') or '').strip()}")
        return "\n".join(lines)

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame([{"instance": i.get("instance"), "scellé par": i.get("as-domain"), "cv": i.get("cv"),
                              "sceau valide": i.get("as-valid"), "signature AMS valide": i.get("ams-valid"),
                              "résultats vus (AAR)": (i.get("aar-value") or "").strip()} for i in self.instances])


def arc_sign(raw: bytes | str, domain: str, selector: str, private_pem: bytes, authserv_id: str) -> bytes:
    """Add an ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) as a forwarder does (RFC 8617).

    The message must carry an ``Authentication-Results: <authserv_id>; …`` header: it is what the set seals.
    """
    import dkim

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    try:
        lines = dkim.arc_sign(data, selector.encode(), domain.encode(), private_pem, authserv_id.encode())
    except dkim.DKIMException as exc:
        raise MessageError(f"Scellement ARC impossible : {exc}", f"Cannot ARC-seal: {exc}", rfc="RFC 8617") from None
    if not lines:
        raise MessageError(
            f"Scellement ARC impossible : pas d'en-tête « Authentication-Results: {authserv_id}; … » à sceller.",
            f"Cannot ARC-seal: no \"Authentication-Results: {authserv_id}; …\" header to seal.", rfc="RFC 8617 §5.1")
    return b"".join(lines) + data


def verify_arc(raw: bytes | str, *, resolver: "Resolver | None" = None, world=None) -> ARCResult:
    """Verify the ARC chain (RFC 8617) with dkimpy, keys fetched through the world's DNS."""
    import dkim

    from .resolver import Resolver

    resolver = resolver or Resolver(world=world)
    data = raw.encode("utf-8") if isinstance(raw, str) else raw

    def dnsfunc(name, timeout=5):
        answer = resolver.query(name.decode().rstrip("."), "TXT")
        return answer.records[0].value.encode() if answer.records else None

    try:
        cv, results, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return ARCResult("fail", str(exc), ())
    rows = tuple({k.decode() if isinstance(k, bytes) else k: (v.decode() if isinstance(v, bytes) else v) for k, v in r.items()}
                 for r in results)
    return ARCResult(cv.decode() if isinstance(cv, bytes) else str(cv), str(reason), rows)


# ---------------------------------------------------------------------------
# analyze()
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """What the receiving server saw: client address, HELO, MAIL FROM."""

    ip: str
    mail_from: str
    helo: str


def envelope_from_headers(raw: bytes | str, *, receiver: str | None = None) -> Envelope | None:
    """The envelope a receiving server saw, read back from the headers it added.

    Client address and HELO from its ``Received`` header (the topmost, or the one ``by receiver``); MAIL FROM
    from ``Return-Path``, else from the ``smtp.mailfrom`` of its ``Authentication-Results``. None without a
    ``Received`` header that names the client's address.
    """

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    msg = message_from_bytes(data, policy=READ_POLICY)
    received = [parse_received(str(v)) for v in msg.get_all("Received", [])]
    if not received:
        return None
    hop = next((h for h in received if receiver and h.by == receiver), received[0])
    if not hop.from_ip:
        return None
    mail_from = str(msg.get("Return-Path", "")).strip().strip("<>")
    if not mail_from and msg.get("Authentication-Results"):
        spf = parse_authentication_results(str(msg["Authentication-Results"])).get("spf")
        mail_from = (spf.get("smtp.mailfrom") if spf else None) or ""
    return Envelope(hop.from_ip, mail_from, hop.from_helo or "")


@dataclass(frozen=True)
class Finding:
    """One diagnosis: severity, what is wrong, why it matters, how to fix it, and the RFC."""

    severity: str  # error, warning, info, ok
    what: Text
    why: Text
    fix: Text
    rfc: str = ""

    def __str__(self) -> str:
        return f"[{self.severity}] {self.what} — {self.why} → {self.fix} [{self.rfc}]"


def _findings_frame(findings) -> "pandas.DataFrame":
    return frame([{"gravité": f.severity, "constat": str(f.what), "pourquoi": str(f.why), "correction": str(f.fix),
                          "RFC": f.rfc} for f in findings], columns=["gravité", "constat", "pourquoi", "correction", "RFC"])


@dataclass(frozen=True)
class Report:
    """Everything :func:`analyze` found about one message."""

    headers: list[tuple[str, str]] = field(repr=False)
    from_domain: str | None
    spf: str
    spf_domain: str | None
    dkim: tuple[tuple[str, str], ...]
    dmarc: str
    source: str  # "recomputed" or "headers"
    authentication_results: tuple[AuthResults, ...]
    findings: tuple[Finding, ...]
    spf_detail: Any = None
    dkim_detail: tuple = ()
    dmarc_detail: Any = None
    hop_rows: tuple[dict, ...] = ()
    checks: Any = None  # labmail.judge.Checks when recomputed (iprev, block list, PTR names…)

    def headers_frame(self) -> "pandas.DataFrame":
        return frame([{"en-tête": k, "valeur": v} for k, v in self.headers], columns=["en-tête", "valeur"])

    def hops_frame(self) -> "pandas.DataFrame":
        return frame(list(self.hop_rows))

    def findings_frame(self) -> "pandas.DataFrame":
        return _findings_frame(self.findings)

    def __str__(self) -> str:
        dkim_text = ", ".join(f"{d}:{r}" for d, r in self.dkim) or "none"
        lines = [f"spf={self.spf} dkim={dkim_text} dmarc={self.dmarc} header.from={self.from_domain} ({self.source})"]
        lines += [str(f) for f in self.findings]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        colors = {"error": "#b00020", "warning": "#b26b00", "info": "#555", "ok": "#1b7f3b"}
        rows = "".join(f"<tr><td style='color:{colors.get(f.severity, '#555')}'>{f.severity}</td><td>{html.escape(str(f.what))}</td>"
                       f"<td>{html.escape(str(f.why))}</td><td>{html.escape(str(f.fix))}</td><td>{f.rfc}</td></tr>" for f in self.findings)
        dkim_text = ", ".join(f"{d}:{r}" for d, r in self.dkim) or "none"
        return (f"<div><b>spf={self.spf} dkim={html.escape(dkim_text)} dmarc={self.dmarc}</b> header.from="
                f"{html.escape(self.from_domain or '')} <small>({self.source})</small><table><tr><th></th><th>constat</th>"
                f"<th>pourquoi</th><th>correction</th><th>RFC</th></tr>{rows}</table></div>")


_new_report = maker(Report)


def analyze(raw: bytes | str, envelope: Envelope | None = None, *, resolver: "Resolver | None" = None, world=None,
            recompute: bool = True, authserv_id: str | None = None) -> Report:
    """Analyse a received message: verdicts (recomputed if possible, else read from headers) and a diagnosis.

    With an ``envelope`` (client IP, HELO, MAIL FROM) and a DNS, SPF is recomputed; DKIM needs only DNS;
    DMARC is computed from both. Without DNS (``recompute=False``) the verdicts are read from the
    Authentication-Results header (the topmost one, or the one of ``authserv_id``).
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if not data or data.isspace():
        raise MessageError("Message vide : collez la source complète du message (en-têtes compris).",
                           "Empty message: paste the full source of the message (headers included).")
    fields = read_headers(data).items()
    named: defaultdict[str, list] = defaultdict(list)  # one pass over the fields; email's get/get_all would walk them
    headers = []  # once per name
    for name, value in fields:  # the reading policy gives text
        named[name.lower()].append(value)
        headers.append((name, one_line(value) if "\n" in value else value))
    from_domain = _domain_of(named["from"][0]) if "from" in named else None
    ars = tuple(parse_authentication_results(str(v)) for v in named.get("authentication-results", ()))
    findings: list[Finding] = []
    checks = None
    if authserv_id:  # RFC 8601 §5: only the results of one's own boundary count; a header of another id is ignored
        chosen = next((a for a in ars if (a.authserv_id or "").lower() == authserv_id.lower()), None)
        if chosen is None and ars:
            findings.append(Finding("warning", Text(f"aucun Authentication-Results de {authserv_id} : les autres en-têtes sont ignorés",
                                                    f"no Authentication-Results from {authserv_id}: the other headers are ignored"),
                                    Text("n'importe qui peut écrire un Authentication-Results dans son message",
                                         "anyone can write an Authentication-Results header into their message"),
                                    Text("recalculez les verdicts (recompute=True) ou donnez l'authserv-id du destinataire",
                                         "recompute the verdicts (recompute=True) or give the receiver's authserv-id"), "RFC 8601 §5"))
    else:
        chosen = ars[0] if ars else None  # the topmost: added last, by the final receiver (RFC 8601 §5 trusts no other)
    spf_detail = dmarc_detail = None
    dkim_detail: tuple = ()
    if recompute and (resolver is not None or world is not None or _world_available()):
        from .resolver import Resolver
        from .judge import judge

        resolver = resolver or Resolver(world=world)
        source = "recomputed"
        from_headers = None
        if envelope is None:
            got = chosen.get("spf") if chosen else None
            from_headers = (got.result if got else "none",
                            ((got.get("smtp.mailfrom") or "").rsplit("@", 1)[-1] or None) if got else None)
        checks = judge(data, ip=envelope.ip if envelope else None, mail_from=envelope.mail_from if envelope else "",
                       helo=envelope.helo if envelope else "", resolver=resolver, spf_from_headers=from_headers)
        spf_detail, spf, spf_domain = checks.spf, checks.spf_value, checks.spf_domain
        dkim_detail = tuple(checks.dkim)
        dkim_pairs = tuple((c.domain, c.result if c.counts_for_dmarc or c.result != "pass" else "pass (t=y)") for c in dkim_detail)
        dmarc_detail = checks.dmarc
        dmarc = dmarc_detail.result if dmarc_detail is not None else "permerror"
    else:
        source = "headers"
        spf_r = chosen.get("spf") if chosen else None
        spf = spf_r.result if spf_r else "none"
        spf_domain = ((spf_r.get("smtp.mailfrom") or spf_r.get("smtp.helo") or "").rsplit("@", 1)[-1] or None) if spf_r else None
        dkim_pairs = tuple((r.get("header.d") or (r.get("header.i") or "").lstrip("@") or "?", r.result)
                           for r in (chosen.all("dkim") if chosen else []) if r.result != "none")
        dmarc_r = chosen.get("dmarc") if chosen else None
        dmarc = dmarc_r.result if dmarc_r else "none"
    findings += _diagnose(spf, spf_domain, spf_detail, dkim_pairs, dkim_detail, dmarc, dmarc_detail, from_domain, named, envelope)
    return _new_report(headers, from_domain, spf, spf_domain, dkim_pairs, dmarc, source, ars, tuple(findings), spf_detail,
                       dkim_detail, dmarc_detail, tuple(_hop_rows(data, received=named.get("received", ()))), checks)


def _world_available() -> bool:
    try:
        from .world import current

        current()
        return True
    except LabmailError:
        return False


def _diagnose(spf, spf_domain, spf_detail, dkim_pairs, dkim_detail, dmarc, dmarc_detail, from_domain, named, envelope) -> list[Finding]:
    """The findings of a message; ``named`` maps each lower-cased field name to its values."""
    out: list[Finding] = []
    if spf == "pass":
        out.append(Finding("ok", Text(f"SPF pass pour {spf_domain}", f"SPF pass for {spf_domain}"),
                           Text("le serveur d'envoi est autorisé par le domaine", "the sending server is authorised by the domain"),
                           Text("rien à faire", "nothing to do"), "RFC 7208 §2.6.3"))
    elif spf in ("fail", "softfail"):
        reason = spf_detail.reason if spf_detail is not None else Text("", "")
        ip = envelope.ip if envelope else "ADRESSE_IP_SERVEUR"
        out.append(Finding("error" if spf == "fail" else "warning",
                           Text(f"SPF {spf} pour {spf_domain} : {reason.fr}", f"SPF {spf} for {spf_domain}: {reason.en}"),
                           Text("le serveur qui a envoyé n'est pas dans l'enregistrement SPF du domaine",
                                "the sending server is not in the domain's SPF record"),
                           Text(f"ajoutez « ip4:{ip} » (ou « mx ») à l'enregistrement SPF de {spf_domain}",
                                f"add \"ip4:{ip}\" (or \"mx\") to the SPF record of {spf_domain}"), "RFC 7208 §5"))
    elif spf == "none":
        out.append(Finding("warning", Text(f"pas de SPF pour {spf_domain}", f"no SPF for {spf_domain}"),
                           Text("les destinataires ne peuvent pas savoir quels serveurs envoient pour ce domaine",
                                "receivers cannot tell which servers send for this domain"),
                           Text(f"publiez « v=spf1 ip4:ADRESSE_IP_SERVEUR -all » en TXT sur {spf_domain}",
                                f"publish \"v=spf1 ip4:SERVER_IP -all\" as TXT on {spf_domain}"), "RFC 7208 §3"))
    elif spf in ("permerror", "temperror"):
        reason = spf_detail.reason if spf_detail is not None else Text("", "")
        out.append(Finding("error", Text(f"SPF {spf} : {reason.fr}", f"SPF {spf}: {reason.en}"),
                           Text("l'enregistrement SPF ne peut pas être évalué", "the SPF record cannot be evaluated"),
                           Text("corrigez l'enregistrement (labmail.spf.lint)", "fix the record (labmail.spf.lint)"), "RFC 7208 §2.6"))
    if not dkim_pairs:
        out.append(Finding("warning", Text("message non signé (pas de DKIM-Signature)", "unsigned message (no DKIM-Signature)"),
                           Text("sans DKIM, rien ne prouve que le message n'a pas été modifié ; DMARC ne peut s'appuyer que sur SPF",
                                "without DKIM nothing proves the message was not altered; DMARC can only rely on SPF"),
                           Text("activez la signature DKIM et publiez la clé à <sélecteur>._domainkey", "enable DKIM signing and publish "
                                "the key at <selector>._domainkey"), "RFC 6376"))
    for check in dkim_detail:
        if check.result != "pass":
            out.append(Finding("error", Text(f"DKIM {check.result} (d={check.domain}) : {check.reason.fr}",
                                             f"DKIM {check.result} (d={check.domain}): {check.reason.en}"),
                               Text("la signature ne peut pas être validée", "the signature cannot be validated"),
                               Text({"key-not-found": "publiez la clé DKIM au nom indiqué",
                                     "body-hash": "ne modifiez pas le message après la signature (pied de page ajouté ?)",
                                     "key-invalid": "republiez la clé en une seule entrée TXT, chaînes de 255 caractères, sans guillemets"}
                                    .get(check.code, "voir la raison"),
                                    {"key-not-found": "publish the DKIM key at that name",
                                     "body-hash": "do not change the message after signing (footer added?)",
                                     "key-invalid": "publish the key again as one TXT record, 255-character strings, no quotes"}
                                    .get(check.code, "see the reason")), check.rfc))
        elif check.appended:
            out.append(Finding("warning", Text(f"DKIM l= : du texte a été ajouté après la partie signée ({len(check.appended)} caractères)",
                                               f"DKIM l=: text was added after the signed part ({len(check.appended)} characters)"),
                               Text("n'importe qui peut ajouter du contenu sans casser la signature",
                                    "anyone can add content without breaking the signature"),
                               Text("ne signez pas avec l=", "do not sign with l="), "RFC 6376 §8.2"))
    if dmarc == "pass":
        out.append(Finding("ok", Text("DMARC pass", "DMARC pass"), Text("SPF ou DKIM passe et est aligné avec le From",
                                                                         "SPF or DKIM passes and is aligned with From"),
                           Text("rien à faire", "nothing to do"), "RFC 9989"))
    elif dmarc == "fail":
        disposition = dmarc_detail.disposition if dmarc_detail is not None else "?"
        out.append(Finding("error", Text(f"DMARC fail (traitement : {disposition})", f"DMARC fail (disposition: {disposition})"),
                           Text("ni SPF ni DKIM ne passent avec un domaine aligné sur le From",
                                "neither SPF nor DKIM pass with a domain aligned with From"),
                           Text(f"faites passer SPF ou DKIM pour {from_domain} (ou un domaine aligné)",
                                f"make SPF or DKIM pass for {from_domain} (or an aligned domain)"), "RFC 9989"))
    elif dmarc == "none" and from_domain:
        out.append(Finding("warning", Text(f"pas de politique DMARC pour {from_domain}", f"no DMARC policy for {from_domain}"),
                           Text("les destinataires ne savent pas quoi faire d'un message usurpant ce domaine",
                                "receivers do not know what to do with mail forging this domain"),
                           Text(f"publiez « v=DMARC1; p=quarantine » en TXT sur _dmarc.{from_domain}",
                                f"publish \"v=DMARC1; p=quarantine\" as TXT on _dmarc.{from_domain}"), "RFC 9989 §4"))
    if dmarc_detail is not None:
        for verdict in (dmarc_detail.rfc9989,):
            for note in verdict.notes:
                out.append(Finding("info", note, Text("", ""), Text("", ""), "RFC 9989"))
    for name in ("Message-ID", "Date"):
        if name.lower() not in named:
            out.append(Finding("warning", Text(f"en-tête {name} absent", f"{name} header missing"),
                               Text("les grands fournisseurs y voient un signe de spam", "large providers see it as a spam sign"),
                               Text(f"ajoutez {name} (le MSA le fait d'habitude)", f"add {name} (the MSA usually does)"), "RFC 5322 §3.6"))
    return out


