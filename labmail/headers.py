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

import email.utils
import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import message_from_bytes, policy
from typing import TYPE_CHECKING

from ._rfc5322 import Token, lex
from .errors import LabmailError
from .i18n import Text

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .dns import Resolver

__all__ = ["AuthResults", "MethodResult", "Property", "RESULTS", "parse_authentication_results", "make_authentication_results", "Hop",
           "parse_received", "hops", "analyze", "Report", "Finding", "Envelope", "envelope_from_headers", "verify_arc", "arc_sign", "ARCResult"]


# ---------------------------------------------------------------------------
# Authentication-Results (RFC 8601)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Property:
    """One property of a result: ``ptype.name=value`` (RFC 8601 §2.2), or a bare ``name=value`` without ptype
    as Microsoft 365 writes (``action=none``), with the comments that follow it."""

    ptype: str | None
    name: str
    value: str
    comments: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.ptype}.{self.name}" if self.ptype else self.name


@dataclass(frozen=True)
class MethodResult:
    """One ``method=result`` of an Authentication-Results header, with its properties and comments.

    ``comments`` lists every comment of the result in order; ``positions`` says what each one follows:
    ``"method"`` (the method name or its ``=``), ``"result"``, ``"reason"``, or a property key such as
    ``"header.d"``. ``items`` keeps every property in order, repeated ones included.
    """

    method: str
    result: str
    version: str | None = None
    reason: str | None = None
    properties: dict = field(default_factory=dict)
    comments: tuple[str, ...] = ()
    positions: tuple[tuple[str, str], ...] = ()
    items: tuple[Property, ...] = ()
    for_: str | None = None

    def get(self, prop: str, default: str | None = None) -> str | None:
        return self.properties.get(prop.lower(), default)


@dataclass(frozen=True)
class AuthResults:
    """A parsed Authentication-Results (or ARC-Authentication-Results) header.

    ``comments`` are the header-level comments with what they follow (``"start"``, ``"instance"``,
    ``"authserv-id"``, ``"version"``, ``"none"``); ``stray`` keeps the items that are not ``method=result``
    (Exchange's bare tenant domain…); ``findings`` says, in French and English, what was not by the grammar.
    """

    authserv_id: str | None
    version: str | None
    results: tuple[MethodResult, ...]
    raw: str = ""
    instance: int | None = None
    comments: tuple[tuple[str, str], ...] = ()
    stray: tuple[str, ...] = ()
    findings: tuple[Text, ...] = ()
    none: bool = False

    def get(self, method: str) -> MethodResult | None:
        """The first result of ``method`` (``"spf"``, ``"dkim"``, ``"dmarc"``…)."""
        return next((r for r in self.results if r.method == method.lower()), None)

    def all(self, method: str) -> list[MethodResult]:
        return [r for r in self.results if r.method == method.lower()]

    def _comment(self, where: str) -> str | None:
        return next((text for position, text in self.comments if position == where), None)

    @property
    def authserv_comment(self) -> str | None:
        """The comment after the authserv-id, e.g. Gmail's ``(Postfix)`` or RFC 8601 B.7's ``(foobar)``."""
        return self._comment("authserv-id")

    @property
    def version_comment(self) -> str | None:
        return self._comment("version")

    def to_dataframe(self) -> "pandas.DataFrame":
        import pandas as pd

        return pd.DataFrame([{"serveur": self.authserv_id, "méthode": r.method, "résultat": r.result, "raison": r.reason,
                              "propriétés": " ".join(f"{p.key}={p.value}" for p in r.items) or
                              " ".join(f"{k}={v}" for k, v in r.properties.items()),
                              "commentaires": " ".join(r.comments)} for r in self.results],
                            columns=["serveur", "méthode", "résultat", "raison", "propriétés", "commentaires"])


#: Result words of each method (RFC 8601 §2.7, RFC 7489 §11.2, RFC 8617 §4.4, RFC 9989); others are kept, with a finding.
RESULTS = {
    "auth": ("none", "pass", "fail", "temperror", "permerror"),
    "dkim": ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror"),
    "domainkeys": ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror"),
    "spf": ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"),
    "sender-id": ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror", "policy"),
    "iprev": ("pass", "fail", "temperror", "permerror"),
    "dmarc": ("none", "pass", "fail", "temperror", "permerror"),
    "arc": ("none", "pass", "fail"),
}


class _Stream:
    """Tokens of a header with white space dropped; each remembers whether white space (a fold) came before it."""

    def __init__(self, text: str, specials: str) -> None:
        self.items: list[tuple[Token, bool, bool]] = []
        space = fold = False
        for tok in lex(text, specials):
            if tok.kind == "ws":
                space, fold = True, fold or tok.fold
                continue
            self.items.append((tok, space, fold))
            space = fold = False
        self.pos = 0

    def peek(self, skip_comments: bool = False, offset: int = 0) -> Token | None:
        i, seen = self.pos, 0
        while i < len(self.items):
            tok = self.items[i][0]
            if skip_comments and tok.kind == "comment":
                i += 1
                continue
            if seen == offset:
                return tok
            seen += 1
            i += 1
        return None

    def spaced(self) -> tuple[bool, bool]:
        """(white space before the next token, a fold among it)."""
        return (self.items[self.pos][1], self.items[self.pos][2]) if self.pos < len(self.items) else (False, False)

    def next(self) -> Token:
        tok = self.items[self.pos][0]
        self.pos += 1
        return tok

    def comments(self) -> list[str]:
        out = []
        while self.pos < len(self.items) and self.items[self.pos][0].kind == "comment":
            out.append(self.next().text)
        return out

    def at(self, kind: str, text: str | None = None, *, skip_comments: bool = False) -> bool:
        tok = self.peek(skip_comments)
        return tok is not None and tok.kind == kind and (text is None or tok.text == text)

    def done(self) -> bool:
        return self.pos >= len(self.items)


def _finding(fr: str, en: str) -> Text:
    return Text(fr, en)


def parse_authentication_results(value: str) -> AuthResults:
    """Parse an Authentication-Results (or ARC-Authentication-Results) value, or a whole header line, by RFC 8601's
    ABNF with comments and folding wherever the grammar allows them — and tolerantly: Microsoft 365's form without
    authserv-id, bare ``key=value`` items, Exchange's bare tokens, non-standard result words, a trailing ``;`` and
    ``for <rcpt>`` are parsed; malformed input gives a partial result with :attr:`AuthResults.findings`, never an
    exception.

    >>> ar = parse_authentication_results("foo.example.net (foobar) 1 (baz); dkim (Because I like it) / 1 "
    ...                                   "(One yay) = (wait for it) fail policy (A dot can go here) . (like that) "
    ...                                   "expired (this surprised me) = (as I wasn't expecting it) 1362471462")
    >>> ar.authserv_id, ar.version, ar.results[0].method, ar.results[0].version, ar.results[0].result
    ('foo.example.net', '1', 'dkim', '1', 'fail')
    >>> ar.results[0].get("policy.expired"), ar.authserv_comment
    ('1362471462', 'foobar')
    """
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = re.sub(r"(?is)^\s*(arc-)?authentication-results\s*:", "", text, count=1)
    stream = _Stream(text, ";=")
    findings: list[Text] = []
    header_comments: list[tuple[str, str]] = []
    stray: list[str] = []
    for tok, _s, _f in stream.items:
        if not tok.closed:
            kind = "commentaire" if tok.kind == "comment" else "chaîne entre guillemets"
            findings.append(_finding(f"{kind} non fermé(e) à la position {tok.start} : lu jusqu'à la fin",
                                     f"unclosed {'comment' if tok.kind == 'comment' else 'quoted string'} at position "
                                     f"{tok.start}: read to the end"))
    header_comments += [("start", c) for c in stream.comments()]
    instance = None
    # ARC-Authentication-Results: "i=" [CFWS] instance ";" (RFC 8617 §4.1.1)
    first, second = stream.peek(True), stream.peek(True, 1)
    if (first is not None and first.kind == "word" and first.text.lower() == "i" and second is not None
            and second.kind == "special" and second.text == "="):
        stream.next()
        stream.comments()
        stream.next()
        header_comments += [("instance", c) for c in stream.comments()]
        tok = stream.peek()
        if tok is not None and tok.kind == "word" and tok.text.isdigit():
            instance = int(stream.next().text)
        else:
            findings.append(_finding("instance ARC « i= » sans nombre", "ARC instance \"i=\" without a number"))
        header_comments += [("instance", c) for c in stream.comments()]
        if stream.at("special", ";"):
            stream.next()
        header_comments += [("instance", c) for c in stream.comments()]
    authserv = version = None
    first, second = stream.peek(True), stream.peek(True, 1)
    if first is None:
        findings.append(_finding("en-tête vide : ni authserv-id ni résultat", "empty header: no authserv-id and no result"))
    elif first.kind == "special" and first.text == ";":
        findings.append(_finding("authserv-id manquant avant le premier « ; »", "authserv-id missing before the first \";\""))
    elif second is not None and second.kind == "special" and second.text == "=":
        findings.append(_finding("pas d'authserv-id : le premier élément est déjà un résultat (forme de Microsoft 365)",
                                 "no authserv-id: the first item is already a result (Microsoft 365's form)"))
    else:
        stream.comments()
        authserv = stream.next().text
        header_comments += [("authserv-id", c) for c in stream.comments()]
        tok = stream.peek()
        if tok is not None and tok.kind == "word" and tok.text.isdigit():
            version = stream.next().text
            header_comments += [("version", c) for c in stream.comments()]
    results: list[MethodResult] = []
    if authserv is not None and not stream.done() and not stream.at("special", ";"):
        findings.append(_finding("« ; » manquant après l'authserv-id : la suite est lue comme un résultat",
                                 "\";\" missing after the authserv-id: what follows is read as a result"))
        results += _resinfo(stream, [], findings, stray)
    none = False
    leading = authserv is None and first is not None and not (first.kind == "special" and first.text == ";")
    while not stream.done():
        if not leading:
            tok = stream.next()
            if not (tok.kind == "special" and tok.text == ";"):  # cannot happen: every item stops at ";"
                continue
        leading = False
        before = stream.comments()
        if stream.done():
            findings.append(_finding("« ; » final : toléré", "trailing \";\": tolerated"))
            header_comments += [("none" if none else "end", c) for c in before]
            break
        if stream.at("special", ";"):
            findings.append(_finding("élément vide entre deux « ; »", "empty item between two \";\""))
            continue
        nxt, after = stream.peek(True), stream.peek(True, 1)
        if nxt.kind == "word" and nxt.text.lower() == "none" and (after is None or (after.kind == "special" and after.text == ";")):
            stream.next()
            none = True
            header_comments += [("none", c) for c in before + stream.comments()]
            continue
        results += _resinfo(stream, before, findings, stray)
    if none and results:
        findings.append(_finding("« none » à côté de résultats : contradictoire", "\"none\" beside results: contradictory"))
    return AuthResults(authserv, version, tuple(results), re.sub(r"\r?\n[ \t]+", " ", text).strip(), instance,
                       tuple(header_comments), tuple(stray), tuple(findings), none)


def _words_until(stream: _Stream, stop: str, positions: list, where: str) -> tuple[list[str], bool]:
    """Words (and quoted strings) up to the special ``stop`` (consumed) or to ";"/the end; comments go to positions."""
    words: list[str] = []
    while not stream.done():
        tok = stream.peek()
        if tok.kind == "comment":
            positions.append((where, stream.next().text))
        elif tok.kind == "special" and tok.text == stop:
            stream.next()
            return words, True
        elif tok.kind == "special" and tok.text == ";":
            return words, False
        else:
            space, _fold = stream.spaced()
            stream.next()
            text = tok.text if tok.kind != "quoted" else '"' + tok.text + '"'
            if words and not space:
                words[-1] += text
            else:
                words.append(text)
    return words, False


def _value(stream: _Stream, findings: list[Text], key: str) -> str:
    tok = stream.peek()
    if tok is None or tok.kind == "special" and tok.text == ";":
        findings.append(_finding(f"{key}= sans valeur", f"{key}= without a value"))
        return ""
    if tok.kind == "quoted":  # a quoted-string is the whole value
        stream.next()
        return tok.text
    if tok.kind == "special":  # "==": a value made of "=" signs
        value = ""
    else:
        stream.next()
        value = tok.text
    while not stream.done():  # unquoted "=" padding and adjacent pieces (base64 header.b=…==) belong to the value
        space, _fold = stream.spaced()
        nxt = stream.peek()
        if space or nxt.kind == "comment" or (nxt.kind == "special" and nxt.text == ";"):
            break
        stream.next()
        value += nxt.text
    # local-part [CFWS] "@" domain (RFC 8601 §2.2 pvalue): "user (c) @example.com"
    while True:
        nxt, follow = stream.peek(True), stream.peek(True, 1)
        if nxt is None or nxt.kind != "word":
            break
        space, fold = stream.spaced()
        joins_at = value.endswith("@") or nxt.text.startswith("@")
        starts_key = (nxt.text.endswith(".") or (follow is not None and (
            (follow.kind == "special" and follow.text == "=") or (follow.kind == "word" and follow.text.startswith(".")))))
        continues = fold and "=" not in nxt.text and nxt.text.lower() != "for" and not starts_key
        if not joins_at and not continues:
            break
        if not joins_at:
            findings.append(_finding(f"valeur de {key} coupée par un pli : recollée", f"value of {key} split by a fold: joined"))
        stream.comments()
        value += stream.next().text
    return value


@dataclass
class _Pair:
    key: str
    value: str
    key_comments: list[str]  # inside the key and before "=": they follow the previous element
    eq_comments: list[str]  # after "=", before the value
    comments: list[str]  # after the value
    loose: list[str]  # words before the key that belong to no pair


def _pairs(stream: _Stream, findings: list[Text]) -> tuple[list[_Pair], list[str]]:
    """The ``key=value`` pairs of one item, up to ";" or the end (CFWS anywhere the ABNF allows it), and the words
    left over at the end (no "=" after them)."""
    pairs: list[_Pair] = []
    while not stream.done() and not stream.at("special", ";"):
        key_positions: list[tuple[str, str]] = []
        words, found = _words_until(stream, "=", key_positions, "")
        keys = re.sub(r"\s*([./])\s*", r"\1", " ".join(words)).split()
        if not found:
            return pairs, keys
        key = keys[-1] if keys else ""
        between = stream.comments()
        value = _value(stream, findings, key or "?")
        pairs.append(_Pair(key, value, [c for _w, c in key_positions], between, stream.comments(), keys[:-1]))
    return pairs, []


def _resinfo(stream: _Stream, before: list[str], findings: list[Text], stray: list[str]) -> list[MethodResult]:
    """One resinfo: ``method[/version]=result [reason=…] [ptype.property=value …]``, read as key=value pairs.

    Also read: bare keys after the result (``action=none``, ``x-bits=1024``) as properties without ptype, a
    ``for <rcpt>`` clause, and Yahoo's order where properties come before their method (several methods then)."""
    pairs, tail = _pairs(stream, findings)
    results: list[MethodResult] = []
    if not pairs:
        words = " ".join(tail)
        if words:
            stray.append(words)
            findings.append(_finding(f"« {words} » n'est pas « méthode=résultat » : gardé tel quel (jeton nu d'Exchange ?)",
                                     f"\"{words}\" is not \"method=result\": kept as is (Exchange's bare token?)"))
        return results
    yahoo = "." in pairs[0].key
    if yahoo and any("." not in pair.key and pair.key.lower() != "reason" for pair in pairs):
        findings.append(_finding("propriétés avant leur méthode (ordre de Yahoo) : rattachées à la méthode qui suit",
                                 "properties before their method (Yahoo's order): attached to the method that follows"))
    pending: list[_Pair] = []
    current: dict | None = None
    method_after = [False] * (len(pairs) + 1)  # is there a method after pair i? (one pass: no quadratic scan)
    for i in range(len(pairs) - 1, -1, -1):
        method_after[i] = method_after[i + 1] or ("." not in pairs[i].key and pairs[i].key.lower() != "reason")

    def close() -> None:
        if current is not None:
            results.append(MethodResult(current["method"], current["result"], current["version"], current["reason"],
                                        current["properties"], tuple(c for _p, c in current["positions"]),
                                        tuple(current["positions"]), tuple(current["items"]), current["for"]))

    def loose(words: list[str], method: str) -> None:
        i = 0
        while i < len(words):
            if words[i].lower() == "for" and i + 1 < len(words) and current is not None:
                current["for"] = words[i + 1].strip("<>")
                i += 2
                continue
            stray.append(words[i])
            findings.append(_finding(f"jeton isolé « {words[i]} » dans le résultat {method} : gardé tel quel",
                                     f"stray token \"{words[i]}\" in the {method} result: kept as is"))
            i += 1

    def add_property(pair: _Pair) -> None:
        last = current["items"][-1].key if current["items"] else ("reason" if current["reason"] is not None else "result")
        current["positions"] += [(last, c) for c in pair.key_comments]
        if pair.key.lower() == "reason":
            current["reason"] = pair.value if current["reason"] is None else current["reason"]
            current["positions"] += [("reason", c) for c in pair.eq_comments + pair.comments]
            return
        if not pair.key:
            findings.append(_finding("« =valeur » sans nom de propriété", "\"=value\" without a property name"))
        ptype, dot, name = pair.key.partition(".")
        own = tuple(pair.eq_comments + pair.comments)
        prop = Property(ptype.lower(), name.lower(), pair.value, own) if dot else Property(None, pair.key.lower(), pair.value, own)
        current["items"].append(prop)
        current["properties"].setdefault(prop.key, pair.value)
        current["positions"] += [(prop.key, c) for c in own]

    for index, pair in enumerate(pairs):
        is_method = index == 0 if not yahoo else ("." not in pair.key and pair.key.lower() != "reason")
        if not yahoo and index and pair.key.lower() in RESULTS and pair.value.lower() in RESULTS[pair.key.lower()]:
            is_method = True  # "spf=pass … dkim=pass": a ";" is missing, this is the next result
            findings.append(_finding(f"« ; » manquant avant {pair.key.lower()}={pair.value.lower()} : lu comme un nouveau résultat",
                                     f"\";\" missing before {pair.key.lower()}={pair.value.lower()}: read as a new result"))
        if is_method:
            close()
            words = pair.loose
            if words:
                stray.append(" ".join(words))
                findings.append(_finding(f"texte inattendu avant la méthode : « {' '.join(words)} »",
                                         f"unexpected text before the method: \"{' '.join(words)}\""))
            method, _, version = pair.key.partition("/")
            method = method.lower()
            if not method:
                findings.append(_finding("« =résultat » sans méthode", "\"=result\" without a method"))
            result = pair.value.lower()
            if not result:
                findings.append(_finding(f"{method}= sans résultat", f"{method}= without a result"))
            elif method in RESULTS and result not in RESULTS[method]:
                findings.append(_finding(
                    f"résultat « {result} » non standard pour {method} (RFC 8601 §2.7 : {', '.join(RESULTS[method])})",
                    f"non-standard result \"{result}\" for {method} (RFC 8601 §2.7: {', '.join(RESULTS[method])})"))
            current = {"method": method, "result": result, "version": version or None, "reason": None, "properties": {},
                       "items": [], "for": None,
                       "positions": [("method", c) for c in (before if not results else [])] +
                                    [("method", c) for c in pair.key_comments + pair.eq_comments] +
                                    [("result", c) for c in pair.comments]}
            for held in pending:
                add_property(held)
            pending = []
            continue
        if current is None:
            pending.append(pair)
            continue
        loose(pair.loose, current["method"])
        if yahoo and "." in pair.key and method_after[index + 1]:
            pending.append(pair)  # Yahoo: belongs to the next method
            continue
        add_property(pair)
    if current is not None:
        loose(tail, current["method"])
    close()
    for pair in pending:  # properties that no method follows (a "smtp.remote-ip=…;" item of its own)
        stray.append(f"{pair.key}={pair.value}")
        findings.append(_finding(f"propriété sans méthode « {pair.key}={pair.value} » : gardée telle quelle",
                                 f"property without a method \"{pair.key}={pair.value}\": kept as is"))
    return results


def make_authentication_results(authserv_id: str, results: list[MethodResult]) -> str:
    """Write an Authentication-Results value (RFC 8601) — ``authserv-id; method=result (comment) ptype.prop=value; …``."""
    if not results:
        return f"{authserv_id}; none"
    parts = [authserv_id]
    for r in results:
        piece = f"{r.method}={r.result}"
        for comment in r.comments:
            piece += f" ({comment.replace('(', '[').replace(')', ']')})"
        if r.reason:
            piece += ' reason="' + r.reason.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for key, val in r.properties.items():
            val = str(val)
            if not re.fullmatch(r"[A-Za-z0-9@._+\-/=:]+", val):
                val = '"' + val.replace("\\", "\\\\").replace('"', '\\"') + '"'
            piece += f" {key}={val}"
        parts.append(piece)
    return ";\r\n\t".join(parts)


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
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    text = re.sub(r"(?i)^\s*received\s*:", "", re.sub(r"\r?\n[ \t]+", " ", text)).strip()
    findings: list[Text] = []
    lead = re.match(r"\(\s*(from\s[^()]*(?:\([^()]*\)[^()]*)*)\)", text, re.I)
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
            date = date.replace(tzinfo=timezone.utc) if re.search(r"-0000\b", date_text) else None
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
        glued = re.fullmatch(r"(.+\.[A-Za-z]{2,})with", by_words[0])
        if glued and len(by_words) > 1:  # "…yahoo.comwith SMTPs": the space was lost
            clauses["with"] = [Token("word", w, 0) for w in by_words[1:]]
            by_words = [glued.group(1)]
            findings.append(Text("« by » et « with » collés : séparés", "\"by\" and \"with\" glued together: split"))
    from_words, from_notes = words("from"), notes("from")
    from_name = from_words[0] if from_words else None
    ip = port = rdns = helo = None
    # 1. an address in a comment of the from clause: "(rdns [ip])", "([ip]:port helo=x)", "(ip)", "(/ip)"
    for note in from_notes:
        literal = next((m for m in _LITERAL_RE.finditer(note) if _literal(m)[0]  # not the HELO argument: "helo=[ip]"
                        and not re.search(r"helo=\S*$|\b(?:HELO|EHLO)\b", note[:m.start()], re.I)), None)
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
        m_bare = re.fullmatch(r"(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})", bare)
        if _ip(bare) or (m_bare and _ip(m_bare.group(1))):  # "(ip)" qmail and Exchange, "(/ip)", "(ip:port)" XMail
            ip, port = (_ip(bare), port) if _ip(bare) else (m_bare.group(1), int(m_bare.group(2)))
            break
        if re.search(r"(?:HELO|EHLO)\s", note, re.I):  # a HELO argument is what the client claims, never its address
            continue
        if "@" in note and _LITERAL_RE.search(note.split("@")[-1]):  # qmail: (user@[ip])
            literal = _LITERAL_RE.search(note.split("@")[-1])
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
        m = re.search(r"(?:^|[\s(])helo=(\S+?)\)?(?:\s|$)", note, re.I)
        if m:
            helo = m.group(1)
        m_port = re.search(r"(?:^|\s)port=(\d{1,5})", note)
        if m_port and port is None:
            port = int(m_port.group(1))
        m = re.match(r"\s*(?:HELO|EHLO)\s*(\S*)\s*$", note, re.I) or re.search(r"\"(?:HELO|EHLO)\s+([^\"\s]+)\"", note, re.I) \
            or re.search(r"(?:^|\s)(?:HELO|EHLO)\s+(\S+)\s*$", note, re.I)
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
        m = re.search(r"envelope-(?:from|sender)\s*<([^>]*)>", note, re.I)
        if m:
            envelope = m.group(1)
            break
    with_ = " ".join(w for w in words("with") if w.strip(",;")).strip() or None
    joined = " ".join(comments)
    tls_version = tls_cipher = None
    m = re.search(r"using (TLSv?[\d.]+|SSLv\d) with cipher (\S+)", joined, re.I)
    if m:
        tls_version, tls_cipher = m.group(1), m.group(2)
    m = m or re.search(r"version=(TLS[\w.]*|SSLv\d[\w/]*),?\s+cipher=([\w-]+)", joined, re.I)
    if m and tls_version is None:
        tls_version, tls_cipher = m.group(1), m.group(2)
    elif tls_version is None:
        m = re.search(r"cipher=([\w-]+)", joined)
        tls_cipher = m.group(1) if m else None
    with_notes = " ".join(notes("with") + notes("by"))
    m = re.search(r"\b(TLS\s?1[._]\d|TLSv1(?:\.\d)?)\b", with_notes)
    if m and tls_version is None:
        tls_version = m.group(1)
    wt = words("with")
    if "tls" in [w.lower() for w in wt]:  # Exim: "with esmtpsa (TLS1.3) tls TLS_AES_256_GCM_SHA384"
        i = [w.lower() for w in wt].index("tls")
        tls_cipher = tls_cipher or (wt[i + 1] if i + 1 < len(wt) else None)
    m = re.search(r"/TLS/([\w-]+)", with_ or "")
    if m:
        tls_cipher = tls_cipher or m.group(1)
    proto = (wt[0] if wt else "").upper()
    tls = bool(tls_version or tls_cipher) or proto.startswith(("ESMTPS", "UTF8SMTPS", "LMTPS", "SMTPS")) or "/TLS" in proto \
        or "using tls" in joined.lower()
    auth_user = None
    m = re.search(r"Authenticated sender:\s*([^)\s]+(?:\[[^\]]*\])?)", joined, re.I) or \
        re.search(r"User authenticated as\s+(\S+)", joined, re.I) or re.search(r"(?:^|\s)AUTH\s+([^\s,]+)", joined) or \
        re.search(r"(?:^|\s)AUTH:\s*\w+\s+([^\s,]+)", joined)
    if m:
        auth_user = m.group(1)
    authenticated = proto in ("ESMTPA", "ESMTPSA", "UTF8SMTPA", "UTF8SMTPSA", "LMTPA", "LMTPSA") or auth_user is not None \
        or "authenticated" in joined.lower()
    for_words = words("for")
    for_ = for_words[0].strip("<>;") if for_words else None
    if not clauses.get("by"):
        findings.append(Text("pas de clause « by »", "no \"by\" clause"))
    return Hop(helo, rdns, ip, by_words[0].rstrip(",") if by_words else None, " ".join(words("via")) or None, with_,
               (words("id") or [None])[0], for_, date, tls, authenticated, tuple(comments), text, from_name, port, envelope,
               tls_version, tls_cipher, auth_user, tuple(findings))


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


_message = read_message


def hops(raw: bytes | str) -> "pandas.DataFrame":
    """The message's hops as a DataFrame, oldest first: from (HELO), IP, reverse name, by, protocol, TLS and its version,
    auth, envelope-from, date, delay, skew."""
    import pandas as pd

    rows = _hop_rows(raw)
    return pd.DataFrame(rows, columns=["étape", "de", "ip", "nom_inverse", "par", "protocole", "tls", "version_tls", "authentifié",
                                       "enveloppe", "date", "délai_s", "décalage_horloge"])


def _hop_rows(raw: bytes | str) -> list[dict]:
    msg = _message(raw)
    parsed = [parse_received(str(v)) for v in reversed(msg.get_all("Received", []))]
    rows, previous = [], None
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
        import pandas as pd

        return pd.DataFrame([{"instance": i.get("instance"), "scellé par": i.get("as-domain"), "cv": i.get("cv"),
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
        raise LabmailError(f"Scellement ARC impossible : {exc}", f"Cannot ARC-seal: {exc}", rfc="RFC 8617") from None
    if not lines:
        raise LabmailError(
            f"Scellement ARC impossible : pas d'en-tête « Authentication-Results: {authserv_id}; … » à sceller.",
            f"Cannot ARC-seal: no \"Authentication-Results: {authserv_id}; …\" header to seal.", rfc="RFC 8617 §5.1")
    return b"".join(lines) + data


def verify_arc(raw: bytes | str, *, resolver: "Resolver | None" = None, world=None) -> ARCResult:
    """Verify the ARC chain (RFC 8617) with dkimpy, keys fetched through the world's DNS."""
    import dkim

    from .dns import Resolver

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
    from email import message_from_bytes

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
    import pandas as pd

    return pd.DataFrame([{"gravité": f.severity, "constat": str(f.what), "pourquoi": str(f.why), "correction": str(f.fix),
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
    spf_detail: object = None
    dkim_detail: tuple = ()
    dmarc_detail: object = None
    hop_rows: tuple[dict, ...] = ()

    def headers_frame(self) -> "pandas.DataFrame":
        import pandas as pd

        return pd.DataFrame([{"en-tête": k, "valeur": v} for k, v in self.headers], columns=["en-tête", "valeur"])

    def hops_frame(self) -> "pandas.DataFrame":
        import pandas as pd

        return pd.DataFrame(list(self.hop_rows))

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


def _domain_of(address: str | None) -> str | None:
    if not address:
        return None
    _name, addr = email.utils.parseaddr(address)
    if "@" not in addr:
        return None
    return addr.rsplit("@", 1)[1].strip().rstrip(".").lower() or None


def analyze(raw: bytes | str, envelope: Envelope | None = None, *, resolver: "Resolver | None" = None, world=None,
            recompute: bool = True, authserv_id: str | None = None) -> Report:
    """Analyse a received message: verdicts (recomputed if possible, else read from headers) and a diagnosis.

    With an ``envelope`` (client IP, HELO, MAIL FROM) and a DNS, SPF is recomputed; DKIM needs only DNS;
    DMARC is computed from both. Without DNS (``recompute=False``) the verdicts are read from the
    Authentication-Results header (the topmost one, or the one of ``authserv_id``).
    """
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    if not data.strip():
        raise LabmailError("Message vide : collez la source complète du message (en-têtes compris).",
                           "Empty message: paste the full source of the message (headers included).")
    msg = _message(data)
    headers = [(k, re.sub(r"\r?\n[ \t]+", " ", str(v))) for k, v in msg.items()]
    from_domain = _domain_of(msg.get("From"))
    ars = tuple(parse_authentication_results(str(v)) for v in msg.get_all("Authentication-Results", []))
    findings: list[Finding] = []
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
        from . import dkim as _dkim
        from . import dmarc as _dmarc
        from . import spf as _spf
        from .dns import Resolver

        resolver = resolver or Resolver(world=world)
        source = "recomputed"
        if envelope is not None:
            spf_detail = _spf.evaluate(envelope.ip, envelope.mail_from, envelope.helo, resolver=resolver)
            spf, spf_domain = spf_detail.result.value, spf_detail.domain
        else:
            got = chosen.get("spf") if chosen else None
            spf = got.result if got else "none"
            spf_domain = (got.get("smtp.mailfrom") or "").rsplit("@", 1)[-1] or None if got else None
        dkim_detail = tuple(_dkim.verify(data, resolver=resolver))
        dkim_pairs = tuple((c.domain, c.result if c.counts_for_dmarc or c.result != "pass" else "pass (t=y)") for c in dkim_detail)
        if from_domain:
            dmarc_detail = _dmarc.evaluate(from_domain, spf_result=spf, spf_domain=spf_domain,
                                           dkim=[(c.domain, "pass" if c.counts_for_dmarc else c.result) for c in dkim_detail],
                                           resolver=resolver)
            dmarc = dmarc_detail.result
        else:
            dmarc = "permerror"
    else:
        source = "headers"
        spf_r = chosen.get("spf") if chosen else None
        spf = spf_r.result if spf_r else "none"
        spf_domain = ((spf_r.get("smtp.mailfrom") or spf_r.get("smtp.helo") or "").rsplit("@", 1)[-1] or None) if spf_r else None
        dkim_pairs = tuple((r.get("header.d") or (r.get("header.i") or "").lstrip("@") or "?", r.result)
                           for r in (chosen.all("dkim") if chosen else []) if r.result != "none")
        dmarc_r = chosen.get("dmarc") if chosen else None
        dmarc = dmarc_r.result if dmarc_r else "none"
    findings += _diagnose(spf, spf_domain, spf_detail, dkim_pairs, dkim_detail, dmarc, dmarc_detail, from_domain, msg, envelope)
    return Report(headers, from_domain, spf, spf_domain, dkim_pairs, dmarc, source, ars, tuple(findings), spf_detail,
                  dkim_detail, dmarc_detail, tuple(_hop_rows(data)))


def _world_available() -> bool:
    try:
        from .world import current

        current()
        return True
    except LabmailError:
        return False


def _diagnose(spf, spf_domain, spf_detail, dkim_pairs, dkim_detail, dmarc, dmarc_detail, from_domain, msg, envelope) -> list[Finding]:
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
        if msg.get(name) is None:
            out.append(Finding("warning", Text(f"en-tête {name} absent", f"{name} header missing"),
                               Text("les grands fournisseurs y voient un signe de spam", "large providers see it as a spam sign"),
                               Text(f"ajoutez {name} (le MSA le fait d'habitude)", f"add {name} (the MSA usually does)"), "RFC 5322 §3.6"))
    return out


