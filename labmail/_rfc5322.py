"""A lexer for structured header fields (RFC 5322 §3.2): comments, quoted strings, folding — shared by the
Authentication-Results and Received parsers of :mod:`labmail.headers`.

Comments nest and may hold quoted pairs; a fold (CRLF + WSP) is white space that remembers it was a fold.
The lexer never raises: an unclosed comment or quoted string ends at the end of the text and is marked
``closed=False`` so the parser can say so.
"""

from __future__ import annotations

import email.utils
import functools
import re
from typing import NamedTuple
from email import message_from_bytes, policy
from email.message import Message
from email.parser import BytesParser

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WS = re.compile(r"[ \t\r\n]+")
_CTEXT = re.compile(r"[^()\\]+")  # a run inside a comment with no parenthesis and no backslash
_QTEXT = re.compile(r'[^"\\]+')  # a run inside a quoted string with no quote and no backslash
_SPACES = re.compile(r"\s+")


@functools.lru_cache(maxsize=8)
def _word_re(specials: str) -> re.Pattern[str]:
    """A run of word characters: anything but white space, parentheses, double quotes and the specials."""
    return re.compile(r'[^ \t\r\n()"' + re.escape(specials) + "]+")


class Token(NamedTuple):
    """One lexical item: ``word``, ``quoted`` (content unescaped), ``comment`` (content, nested comments kept
    with their parentheses), ``special`` (one of the specials asked for) or ``ws`` (``fold`` if it held a CRLF).
    (A named tuple: a header makes many of them.)"""

    kind: str
    text: str
    start: int
    fold: bool = False
    closed: bool = True


_FOLD_LF_RUN = re.compile(r"\n[ \t]+")


def one_line(text: str) -> str:
    """A folded header value on one line, as headers are shown: each fold (CRLF and the white space after it) becomes
    one space."""
    if "\n" not in text:
        return text
    # CRLF before white space made LF first: a pattern starting with a plain character is searched ~4× faster
    return _FOLD_LF_RUN.sub(" ", text.replace("\r\n ", "\n ").replace("\r\n\t", "\n\t"))


def unfold(text: str) -> str:
    """RFC 5322 §2.2.3: unfolding removes the CRLF before the WSP of a fold (the WSP stays)."""
    return _FOLD.sub("", text)


def _enclosed(text: str, i: int, plain: re.Pattern[str], *, nested: bool) -> tuple[str, int, bool]:
    """The content of the comment (``nested``: parentheses nest) or quoted string opening at ``i``, quoted pairs
    unescaped; returns (content, index after it, whether it was closed). Runs of plain characters are skipped by
    ``plain`` at once."""
    n, j, depth, buf = len(text), i + 1, 1, []
    close = ")" if nested else '"'
    while j < n:
        run = plain.match(text, j)
        if run is not None:
            buf.append(run.group())
            j = run.end()
            continue
        c = text[j]
        if c == "\\" and j + 1 < n:
            buf.append(text[j + 1])
            j += 2
            continue
        if nested and c == "(":
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return "".join(buf), j + 1, True
        buf.append(c)
        j += 1
    return "".join(buf), j, False


def lex(text: str, specials: str = ";=") -> list[Token]:
    """Split ``text`` into tokens; every character outside comments, quotes and white space that is not one of
    ``specials`` belongs to a word (so dots, slashes, ``@`` and brackets stay inside words)."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    word = _word_re(specials)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            j = _WS.match(text, i).end()  # type: ignore[union-attr]  # ch is white space: it matches
            tokens.append(Token("ws", " ", i, fold="\n" in text[i:j]))
            i = j
        elif ch == "(":
            raw, j, closed = _enclosed(text, i, _CTEXT, nested=True)
            tokens.append(Token("comment", _SPACES.sub(" ", unfold(raw)).strip(), i, closed=closed))
            i = j
        elif ch == '"':
            raw, j, closed = _enclosed(text, i, _QTEXT, nested=False)
            tokens.append(Token("quoted", unfold(raw), i, closed=closed))
            i = j
        elif ch in specials:
            tokens.append(Token("special", ch, i))
            i += 1
        else:
            m = word.match(text, i)
            j = m.end() if m else i + 1  # no match: a stray ")", a word of its own
            tokens.append(Token("word", text[i:j], i))
            i = j
    return tokens


class _Raw8bit(policy.Compat32):
    """``compat32`` (headers kept as received, nothing refolded), except that a header carrying raw 8-bit bytes —
    UTF-8 as RFC 6532 allows, or anything else — reads as text (UTF-8, undecodable bytes replaced) instead of an
    ``email.header.Header`` that string functions (``parseaddr``…) choke on."""

    def header_fetch_parse(self, name, value):
        if isinstance(value, str) and not value.isascii():
            return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return value


#: The policy every reader of received mail in labmail uses (the lab's servers included).
READ_POLICY = _Raw8bit()


def read_message(raw: bytes | str):
    """A received message, headers as received and readable even with raw 8-bit bytes (:data:`READ_POLICY`)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    return message_from_bytes(data, policy=READ_POLICY)


def read_headers(raw: bytes | str):
    """The header section of a message as :func:`read_message` reads it; the body is kept as text, not parsed (a
    header analysis need not walk a message's MIME parts and attachments).

    A header section in the form every mail system writes (CRLF line ends, or LF only for a file or a pasted
    message; each field ``name:value`` with folded lines starting with white space; an empty line before the body) is
    split by one pattern; anything else (a bare CR, mixed line ends, a line that is no field, an mbox ``From`` line, no
    empty line…) goes through :mod:`email`'s parser, whose defects and recovery rules decide. Both give the same
    message (tests compare fields, body and defects)."""
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    fast = _fast_headers(data)
    return fast if fast is not None else BytesParser(policy=READ_POLICY).parsebytes(data, headersonly=True)


_FIELD_SPLIT = {b"\r\n": re.compile(r"\r\n(?![ \t])"), b"\n": re.compile(r"\n(?![ \t])")}  # a line end not followed by a fold
_FIELD_NAME = re.compile(r"[\041-\071\073-\176]+:")  # RFC 5322 §3.6.8 ftext, as email's feedparser reads it


def _fast_headers(data: bytes):
    """:func:`read_headers`'s message for a well-formed header section — CRLF line ends (as on the wire) or LF only
    (a file, a pasted message) — or None: the feed parser decides."""
    for nl in (b"\r\n", b"\n"):
        end = data.find(nl + nl)
        if end <= 0 or data[:1] in (b" ", b"\t", b"\r", b"\n"):
            continue
        head = data[:end]
        if nl == b"\r\n":
            ends = head.count(nl)
            if head.count(b"\r") != ends or head.count(b"\n") != ends:
                continue  # a bare CR or LF: the feed parser takes each as a line end
        elif b"\r" in head:
            continue
        msg = Message(policy=READ_POLICY)
        match = _FIELD_NAME.match
        for field in _FIELD_SPLIT[nl].split(head.decode("ascii", "surrogateescape")):
            named = match(field)
            if named is None:
                return None  # not a field: the feed parser ends the header section there and notes a defect
            colon = named.end()
            msg.set_raw(field[:colon - 1], field[colon:].lstrip(" \t"))
        msg.set_payload(data[end + 2 * len(nl):].decode("ascii", "surrogateescape"))
        return msg
    return None


_RAW_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")


def raw_fields(head: bytes) -> list[bytes]:
    """A header section's fields as stored (CRLF line ends, the blank line left out), each with its folded lines —
    for the servers that must keep, drop or send fields byte for byte."""
    return _RAW_FIELD_SPLIT.split(head) if head else []


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 §3.2.3
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_ADDRESS = re.compile(rf"(?:(?:{_ATEXT} )*<{_ATEXT}(?:\.{_ATEXT})*@({_DOMAIN})>|{_ATEXT}(?:\.{_ATEXT})*@({_DOMAIN}))")


def domain_of(address: str | None) -> str | None:
    """The lower-cased domain of a From-like address (``A <a@d.test>`` → ``d.test``), as :func:`email.utils.parseaddr`
    reads it; None when there is no address. The plain forms (``Name Words <local@domain>``, ``local@domain``) are read
    by one pattern, the rest by parseaddr (tests compare both)."""
    if not address:
        return None
    simple = _SIMPLE_ADDRESS.fullmatch(address)
    if simple is not None:
        return (simple.group(1) or simple.group(2)).lower()
    try:
        _name, addr = email.utils.parseaddr(address)
    except RecursionError:  # thousands of nested comments: email's parser recurses once per level
        return None
    if "@" not in addr:
        return None
    return addr.rsplit("@", 1)[1].strip().rstrip(".").lower() or None
