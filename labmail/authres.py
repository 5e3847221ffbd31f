"""Authentication-Results (RFC 8601): read by the ABNF of §2.2 — comments and folding wherever the grammar allows
them — and tolerantly (Microsoft 365, Exchange, Yahoo…), and written as a receiver stamps it.

:func:`parse_authentication_results` never raises: what departs from the grammar is said in
:attr:`AuthResults.findings`. :func:`make_authentication_results` writes strict RFC 8601. Also read by
:mod:`labmail.headers`, which re-exports these names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._records import maker
from ._rfc5322 import Token, lex, one_line
from .i18n import Text, frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Property", "MethodResult", "AuthResults", "RESULTS", "parse_authentication_results",
           "make_authentication_results"]


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
        return frame([{"serveur": self.authserv_id, "méthode": r.method, "résultat": r.result, "raison": r.reason,
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

    def head(self) -> Token:
        """The next token (the caller knows the stream is not done)."""
        tok = self.peek()
        assert tok is not None
        return tok

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


_NAME_RE = re.compile(r"(?is)^\s*(arc-)?authentication-results\s*:")
_new_property, _new_result, _new_results = maker(Property), maker(MethodResult), maker(AuthResults)
# The fast path's grammar: the form receivers write (Gmail, rspamd, OpenDMARC, the lab) — "id [version]; method=result
# (comment) reason=value ptype.property=value (comment) …; …" with no nested comment, no CFWS around "=", and quotes
# only around a whole value holding no escape, fold nor ";".
_W = r"[ \t\r\n]"
_FAST_TEXT = r"""[^()\\";]"""
_FAST_VALUE = r"""[^\s()";\\=][^\s()";\\]*(?<!@)"""
_FAST_NOTES = rf"(?:{_W}*\({_FAST_TEXT}*\))*"
_FAST_QUOTED = '"[^";\\\\\r\n]*"'  # a quoted value without escape, fold or ";": Gmail's smtp.mailfrom="a+b=c@d"
_FAST_RESINFO = (rf"{_W}*[A-Za-z0-9][A-Za-z0-9_-]*(?:/[0-9]+)?={_FAST_VALUE}{_FAST_NOTES}"
                 rf"(?:{_W}+reason=(?:{_FAST_QUOTED}|{_FAST_VALUE}){_FAST_NOTES})?"
                 rf"(?:{_W}+[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+=(?:{_FAST_QUOTED}|{_FAST_VALUE}){_FAST_NOTES})*{_W}*")
_FAST_AR = re.compile(rf"""{_W}*(?P<id>[^\s()";\\=]+)(?:{_W}+(?P<version>[0-9]+))?{_W}*;(?P<results>{_FAST_RESINFO}(?:;{_FAST_RESINFO})*)""")
_FAST_ITEM = re.compile(rf"""(?P<key>[^\s()="]+)=(?:"(?P<quoted>[^"]*)"|(?P<value>{_FAST_VALUE}))|\((?P<note>{_FAST_TEXT}*)\)""")


def _fast_parse(text: str) -> AuthResults | None:
    """The header receivers write, read by two patterns; None for anything else, which :func:`_full_parse` reads.
    Gives exactly what the full parser gives (tests compare both on generated, RFC and real headers)."""
    if not text.isascii():
        return None
    m = _FAST_AR.fullmatch(text)
    if m is None:
        return None
    results = []
    for resinfo in m.group("results").split(";"):
        method = result = version = reason = None
        properties: dict[str, str] = {}
        positions: list[tuple[str, str]] = []
        items: list[Property] = []
        last = "result"
        for key, quoted, value, note in _FAST_ITEM.findall(resinfo):  # a group that took no part is ""
            if not key:  # a comment: the key is never empty
                note = " ".join(note.split())
                positions.append((last, note))
                if items and last == items[-1].key:
                    items[-1] = _new_property(items[-1].ptype, items[-1].name, items[-1].value, items[-1].comments + (note,))
                continue
            if not value:  # the value is never empty: it was in quotes (which may hold nothing)
                value = quoted
            if method is None:
                method, _, version = key.partition("/")
                method, result = method.lower(), value.lower()
                if method in RESULTS and result not in RESULTS[method]:
                    return None  # a non-standard result: the full parser says so
            elif key == "reason":
                reason, last = value, "reason"
            else:
                last = key.lower()  # Property.key: the pattern gives every property a ptype
                ptype, _, name = last.partition(".")
                items.append(_new_property(ptype, name, value, ()))
                properties.setdefault(last, value)
        assert method is not None and result is not None  # the pattern holds one method=result per item
        results.append(_new_result(method, result, version or None, reason, properties,
                                   tuple([c for _p, c in positions]), tuple(positions), tuple(items), None))
    return _new_results(m.group("id"), m.group("version"), tuple(results), one_line(text).strip(), None, (), (), (),
                        False)


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
    text = _NAME_RE.sub("", text, count=1)
    return _fast_parse(text) or _full_parse(text)


def _full_parse(text: str) -> AuthResults:
    """The whole RFC 8601 grammar and every tolerance of :func:`parse_authentication_results` (value without its name)."""
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
        number = stream.peek()
        if number is not None and number.kind == "word" and number.text.isdigit():
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
        maybe_version = stream.peek()
        if maybe_version is not None and maybe_version.kind == "word" and maybe_version.text.isdigit():
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
        if nxt is not None and nxt.kind == "word" and nxt.text.lower() == "none" and (after is None or (after.kind == "special" and after.text == ";")):
            stream.next()
            none = True
            header_comments += [("none", c) for c in before + stream.comments()]
            continue
        results += _resinfo(stream, before, findings, stray)
    if none and results:
        findings.append(_finding("« none » à côté de résultats : contradictoire", "\"none\" beside results: contradictory"))
    return AuthResults(authserv, version, tuple(results), one_line(text).strip(), instance,
                       tuple(header_comments), tuple(stray), tuple(findings), none)


def _words_until(stream: _Stream, stop: str, positions: list, where: str) -> tuple[list[str], bool]:
    """Words (and quoted strings) up to the special ``stop`` (consumed) or to ";"/the end; comments go to positions."""
    words: list[str] = []
    while not stream.done():
        tok = stream.head()
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
        nxt = stream.head()
        if space or nxt.kind == "comment" or (nxt.kind == "special" and nxt.text == ";"):
            break
        stream.next()
        value += nxt.text
    # local-part [CFWS] "@" domain (RFC 8601 §2.2 pvalue): "user (c) @example.com"
    while True:
        word, follow = stream.peek(True), stream.peek(True, 1)
        if word is None or word.kind != "word":
            break
        space, fold = stream.spaced()
        joins_at = value.endswith("@") or word.text.startswith("@")
        starts_key = (word.text.endswith(".") or (follow is not None and (
            (follow.kind == "special" and follow.text == "=") or (follow.kind == "word" and follow.text.startswith(".")))))
        continues = fold and "=" not in word.text and word.text.lower() != "for" and not starts_key
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


def _glued(text: str) -> list[str]:
    """The words of ``text`` with the white space around "." and "/" removed (``header . d`` → ``header.d``): what
    ``re.sub(r"\\s*([./])\\s*", r"\\1", text).split()`` gives, in linear time — that pattern tries every position of a
    long run of white space to its end (a value of 100 KB of spaces took 53 s)."""
    pieces: list[list[str]] = []
    for token in text.split():
        if pieces and (pieces[-1][-1][-1] in "./" or token[0] in "./"):
            pieces[-1].append(token)
        else:
            pieces.append([token])
    return ["".join(p) for p in pieces]


def _pairs(stream: _Stream, findings: list[Text]) -> tuple[list[_Pair], list[str]]:
    """The ``key=value`` pairs of one item, up to ";" or the end (CFWS anywhere the ABNF allows it), and the words
    left over at the end (no "=" after them)."""
    pairs: list[_Pair] = []
    while not stream.done() and not stream.at("special", ";"):
        key_positions: list[tuple[str, str]] = []
        words, found = _words_until(stream, "=", key_positions, "")
        keys = _glued(" ".join(words))
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
    current: dict[str, Any] | None = None
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
        assert current is not None
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
            before_method = pair.loose
            if before_method:
                stray.append(" ".join(before_method))
                findings.append(_finding(f"texte inattendu avant la méthode : « {' '.join(before_method)} »",
                                         f"unexpected text before the method: \"{' '.join(before_method)}\""))
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
