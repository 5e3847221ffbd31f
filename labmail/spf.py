"""SPF (RFC 7208) evaluated step by step, with a trace a student can read.

:func:`evaluate` runs ``check_host()`` for the MAIL FROM identity (or the HELO
identity for bounces with an empty MAIL FROM) and returns an
:class:`SPFEvaluation`: the result, the term that matched, the DNS queries
made, the lookup and void-lookup counters, and for each decision the RFC
section behind it. :func:`lint` reviews a record the way a careful admin
would (syntax with positions, ``+all``, ``ptr``, lookup counts, dead
includes, two records, badly split strings).

>>> r = evaluate("203.0.113.10", "tintin@jean.labmail.cloud", "mailcow.labmail.cloud")  # doctest: +SKIP
>>> r.result, r.matched                                                                 # doctest: +SKIP
(<SPFResult.PASS: 'pass'>, 'ip4:203.0.113.10')

Verdicts agree with pyspf, the reference implementation (tests/test_spf_differential.py);
where pyspf departs from the RFC the difference is documented there.
"""

from __future__ import annotations

import enum
import functools
import html
import ipaddress
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .resolver import LookupResult, Outcome, Resolver
from .errors import LabmailError, UsageError
from .i18n import Text, frame, tr

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["SPFResult", "SPFEvaluation", "TraceStep", "Term", "SPFSyntaxError", "parse", "evaluate", "lint", "Finding",
           "MAX_LOOKUPS", "MAX_VOID_LOOKUPS"]

MAX_LOOKUPS = 10  # RFC 7208 §4.6.4
MAX_VOID_LOOKUPS = 2  # RFC 7208 §4.6.4
MAX_MX = 10
MAX_PTR = 10
MAX_CNAME = 10

#: Test hook: count ``redirect=`` as pyspf 2.0.14 does, when the record is parsed rather than when the
#: redirect is followed (RFC 7208 §4.6.4 counts terms "during SPF evaluation"). Used only to prove, in the
#: differential test, that this is the one cause of disagreement. Never set it elsewhere.
_PYSPF_REDIRECT_QUIRK = False


class SPFResult(str, enum.Enum):
    """The seven SPF results (RFC 7208 §2.6)."""

    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"

    @property
    def meaning(self) -> str:
        return str(_MEANINGS[self])


_MEANINGS = {
    SPFResult.NONE: Text("aucun enregistrement SPF : le domaine ne dit rien", "no SPF record: the domain says nothing"),
    SPFResult.NEUTRAL: Text("le domaine ne se prononce pas sur cette adresse", "the domain makes no assertion about this address"),
    SPFResult.PASS: Text("l'adresse est autorisée à envoyer pour ce domaine", "the address is authorised to send for this domain"),
    SPFResult.FAIL: Text("l'adresse n'est PAS autorisée (rejet conseillé)", "the address is NOT authorised (rejection advised)"),
    SPFResult.SOFTFAIL: Text("l'adresse n'est probablement pas autorisée (message suspect, pas rejeté)",
                             "the address is probably not authorised (suspicious, not rejected)"),
    SPFResult.TEMPERROR: Text("erreur DNS temporaire : réessayer plus tard", "temporary DNS error: try again later"),
    SPFResult.PERMERROR: Text("l'enregistrement est inutilisable (erreur à corriger par le domaine)",
                              "the record cannot be used (an error the domain must fix)"),
}
_QUALIFIERS = {"+": SPFResult.PASS, "-": SPFResult.FAIL, "~": SPFResult.SOFTFAIL, "?": SPFResult.NEUTRAL}
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")
_MODIFIER_RE = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)  # always .fullmatch (a "$" would pass a final "\n")
_MACRO_RE = re.compile(r"%(?:\{([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}|%|_|-)")
_TOPLABEL = re.compile(r"[0-9A-Za-z]*[A-Za-z][0-9A-Za-z]*|[0-9A-Za-z]+-[0-9A-Za-z\-]*[0-9A-Za-z]")
_CIDR_RE = re.compile(r"(.*?)(?:/(0|[1-9][0-9]*))?(?://(0|[1-9][0-9]*))?", re.S)


class SPFSyntaxError(LabmailError):
    """An SPF record that does not follow the RFC 7208 grammar (``position`` = offset in the record)."""

    @property
    def position(self) -> int | None:
        return self.context.get("position")


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One term of an SPF record: a directive (qualifier + mechanism) or a modifier."""

    text: str
    position: int
    kind: str  # "mechanism" or "modifier"
    name: str
    qualifier: str = "+"
    value: str | None = None  # domain-spec, network or modifier value
    cidr4: int | None = None
    cidr6: int | None = None

    @property
    def result(self) -> SPFResult:
        return _QUALIFIERS[self.qualifier]

    @property
    def does_lookup(self) -> bool:
        return self.name in _LOOKUP_TERMS


def _syntax(position: int, fr: str, en: str) -> SPFSyntaxError:
    return SPFSyntaxError(f"{fr} (position {position})", f"{en} (position {position})", rfc="RFC 7208 §12",
                          position=position)


def _check_macro_string(text: str, position: int, *, exp: bool = False) -> None:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "%":
            m = _MACRO_RE.match(text, i)
            if m is None:
                raise _syntax(position + i, f"macro invalide « {text[i:i + 6]} » : écrivez %{{x}}, %%, %_ ou %-",
                              f"invalid macro \"{text[i:i + 6]}\": write %{{x}}, %%, %_ or %-")
            letter = m.group(1)
            if letter is not None:
                if letter.lower() not in "slodiphvcrt":
                    raise _syntax(position + i, f"lettre de macro inconnue « {letter} »", f"unknown macro letter \"{letter}\"")
                if letter.lower() in "crt" and not exp:
                    raise _syntax(position + i, f"la macro %{{{letter}}} n'est permise que dans le texte d'exp=",
                                  f"macro %{{{letter}}} is only allowed in exp= text")
                if m.group(2) and int(m.group(2)) == 0:
                    raise _syntax(position + i, "le nombre de parties d'une macro doit être non nul",
                                  "a macro's number of parts must be non-zero")
            i = m.end()
        elif not (0x21 <= ord(ch) <= 0x7E):
            raise _syntax(position + i, f"caractère interdit « {ch!r} »", f"forbidden character {ch!r}")
        else:
            i += 1


def _check_domain_spec(spec: str, position: int) -> None:
    if not spec:
        raise _syntax(position, "nom de domaine manquant", "missing domain name")
    _check_macro_string(spec, position)
    # domain-end = ( "." toplabel [ "." ] ) / macro-expand
    if _MACRO_RE.fullmatch(spec[spec.rfind("%"):]) and spec.endswith("}"):
        return
    body = spec[:-1] if spec.endswith(".") else spec
    if "." not in body or not _TOPLABEL.fullmatch(body.rsplit(".", 1)[1]):
        raise _syntax(position, f"« {spec} » n'est pas un nom de domaine complet (il faut un dernier label alphabétique, "
                                "ex. example.com)",
                      f"\"{spec}\" is not a fully qualified domain name (it needs an alphabetic last label, e.g. example.com)")


def _parse_term(text: str, position: int) -> Term:
    mod = _MODIFIER_RE.fullmatch(text)
    if mod:
        name, value = mod.group(1).lower(), mod.group(2)
        if name in ("redirect", "exp"):
            _check_domain_spec(value, position + len(name) + 1)
        else:
            _check_macro_string(value, position + len(name) + 1)
        return Term(text, position, "modifier", name, value=value)
    qualifier = "+"
    body = text
    if body[:1] in _QUALIFIERS:
        qualifier, body = body[0], body[1:]
    match = _CIDR_RE.fullmatch(body)
    assert match is not None
    head, c4, c6 = match.group(1), match.group(2), match.group(3)
    name, _, arg = head.partition(":")
    name = name.lower()
    has_arg = ":" in head
    cidr4 = int(c4) if c4 is not None else None
    cidr6 = int(c6) if c6 is not None else None
    if name not in _MECHANISMS:
        hint = {"prt": "ptr", "ipv4": "ip4", "ipv6": "ip6", "inlcude": "include", "includes": "include"}.get(name)
        extra = tr(f" — vouliez-vous dire « {hint} » ?", f" — did you mean \"{hint}\"?") if hint else ""
        raise _syntax(position, f"mécanisme inconnu « {text} »{extra}", f"unknown mechanism \"{text}\"{extra}")
    if name == "all":
        if has_arg or c4 is not None or c6 is not None:
            raise _syntax(position, f"« {text} » : all ne prend aucun argument", f"\"{text}\": all takes no argument")
        return Term(text, position, "mechanism", name, qualifier)
    if name in ("ip4", "ip6"):
        if not has_arg:
            raise _syntax(position, f"« {text} » : adresse manquante (ex. {name}:203.0.113.10)",
                          f"\"{text}\": missing address (e.g. {name}:203.0.113.10)")
        if cidr6 is not None:
            raise _syntax(position, f"« {text} » : double préfixe // interdit pour {name}", f"\"{text}\": // not allowed for {name}")
        try:
            if "%" in arg or arg != arg.strip():
                raise ValueError
            addr = ipaddress.ip_address(arg)
        except ValueError:
            raise _syntax(position, f"« {arg} » n'est pas une adresse {name.upper()} valide",
                          f"\"{arg}\" is not a valid {name.upper()} address") from None
        if (addr.version == 4) != (name == "ip4"):
            raise _syntax(position, f"« {arg} » n'est pas une adresse {name.upper()}", f"\"{arg}\" is not an {name.upper()} address")
        limit = 32 if name == "ip4" else 128
        if cidr4 is not None and cidr4 > limit:
            raise _syntax(position, f"préfixe /{cidr4} trop long pour {name} (max /{limit})", f"prefix /{cidr4} too long for {name} (max /{limit})")
        return Term(text, position, "mechanism", name, qualifier, arg, cidr4)
    if name in ("include", "exists"):
        if not has_arg or not arg:
            raise _syntax(position, f"« {text} » : domaine manquant ({name}:exemple.com)", f"\"{text}\": missing domain ({name}:example.com)")
        if c4 is not None or c6 is not None:
            raise _syntax(position, f"« {text} » : pas de préfixe CIDR pour {name}", f"\"{text}\": no CIDR prefix for {name}")
        _check_domain_spec(arg, position + len(text) - len(body) + len(name) + 1)
        return Term(text, position, "mechanism", name, qualifier, arg)
    # a, mx, ptr
    if has_arg:
        _check_domain_spec(arg, position + len(text) - len(body) + len(name) + 1)
    if name == "ptr" and (c4 is not None or c6 is not None):
        raise _syntax(position, f"« {text} » : pas de préfixe CIDR pour ptr", f"\"{text}\": no CIDR prefix for ptr")
    if cidr4 is not None and cidr4 > 32:
        raise _syntax(position, f"préfixe IPv4 /{cidr4} trop long (max /32)", f"IPv4 prefix /{cidr4} too long (max /32)")
    if cidr6 is not None and cidr6 > 128:
        raise _syntax(position, f"préfixe IPv6 //{cidr6} trop long (max //128)", f"IPv6 prefix //{cidr6} too long (max //128)")
    return Term(text, position, "mechanism", name, qualifier, arg if has_arg else None, cidr4, cidr6)


def is_spf_record(text: str) -> bool:
    """Does this TXT value declare SPF (``v=spf1`` then a space or the end, any case)? (RFC 7208 §4.5)"""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def parse(record: str) -> list[Term]:
    """Parse an SPF record into terms; raise :class:`SPFSyntaxError` with the position of the first error.

    >>> [t.text for t in parse("v=spf1 mx ip4:203.0.113.10 -all")]
    ['mx', 'ip4:203.0.113.10', '-all']
    """
    if not is_spf_record(record):
        raise _syntax(0, "un enregistrement SPF commence par « v=spf1 » suivi d'un espace",
                      "an SPF record starts with \"v=spf1\" followed by a space")
    try:
        record.encode("ascii")
    except UnicodeEncodeError:
        bad = next(i for i, ch in enumerate(record) if ord(ch) > 127)
        raise _syntax(bad, "caractère non ASCII dans l'enregistrement", "non-ASCII character in the record") from None
    control = next((i for i, ch in enumerate(record) if ch != " " and not 0x21 <= ord(ch) <= 0x7E), None)
    if control is not None:  # RFC 7208 §12: terms are separated by SP only; a tab or a line feed is not part of any term
        shown = {"\n": "saut de ligne \\n", "\r": "retour chariot \\r", "\t": "tabulation \\t"}.get(record[control], f"{ord(record[control]):#04x}")
        raise _syntax(control, f"caractère de contrôle ({shown}) dans l'enregistrement : les termes ne sont séparés que par des espaces",
                      f"control character ({shown.split(' ')[-1]}) in the record: terms are separated by spaces only")
    terms: list[Term] = []
    position = 6
    seen: set[str] = set()
    for piece in record[6:].split(" "):
        if piece:
            term = _parse_term(piece, position)
            if term.kind == "modifier" and term.name in ("redirect", "exp"):
                if term.name in seen:
                    raise _syntax(position, f"le modificateur {term.name}= apparaît deux fois", f"modifier {term.name}= appears twice")
                seen.add(term.name)
            terms.append(term)
        position += len(piece) + 1
    return terms


@functools.lru_cache(maxsize=2048)
def _parsed(record: str) -> tuple[Term, ...]:
    """parse() memoized: a receiving server sees the same few records again and again (terms are immutable)."""
    return tuple(parse(record))


# ---------------------------------------------------------------------------
# Macros (RFC 7208 §7)
# ---------------------------------------------------------------------------
class _Perm(Exception):
    def __init__(self, text: Text, rfc: str) -> None:
        super().__init__(text.en)
        self.text, self.rfc = text, rfc


class _Temp(Exception):
    def __init__(self, text: Text, rfc: str = "RFC 7208 §4.4") -> None:
        super().__init__(text.en)
        self.text, self.rfc = text, rfc


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DNSQuery:
    """A DNS query made during the evaluation, with what came back."""

    name: str
    type: str
    outcome: str
    answers: tuple[str, ...] = ()

    def __str__(self) -> str:
        answers = ", ".join(self.answers) if self.answers else self.outcome
        return f"{self.name} {self.type} → {answers}"


@dataclass(frozen=True)
class TraceStep:
    """One step of the evaluation: which domain, which term, what happened and why."""

    depth: int
    domain: str
    term: str
    detail: Text
    queries: tuple[DNSQuery, ...] = ()
    lookups: int = 0
    void_lookups: int = 0
    matched: bool | None = None
    rfc: str = ""

    def __str__(self) -> str:
        mark = {True: "✔", False: "✘", None: "•"}[self.matched]
        return f"{'  ' * self.depth}{mark} [{self.domain}] {self.term}: {self.detail}"


@dataclass(frozen=True)
class SPFEvaluation:
    """What :func:`evaluate` found: result, reasons, trace."""

    result: SPFResult
    identity: str  # "mailfrom" or "helo"
    domain: str
    sender: str
    ip: str
    helo: str
    reason: Text
    matched: str | None = None
    matched_domain: str | None = None
    explanation: str | None = None  # exp= text of the domain on fail
    record: str | None = None
    lookups: int = 0
    void_lookups: int = 0
    trace: tuple[TraceStep, ...] = ()
    rfc: str = ""
    elapsed_ms: float = 0.0

    def __str__(self) -> str:
        head = tr(f"SPF {self.result.value} pour {self.ip} au nom de {self.domain} ({self.identity}) : {self.reason}",
                  f"SPF {self.result.value} for {self.ip} on behalf of {self.domain} ({self.identity}): {self.reason}")
        counts = tr(f"requêtes DNS comptées : {self.lookups}/{MAX_LOOKUPS}, vides : {self.void_lookups}/{MAX_VOID_LOOKUPS}",
                    f"DNS lookups counted: {self.lookups}/{MAX_LOOKUPS}, void: {self.void_lookups}/{MAX_VOID_LOOKUPS}")
        lines = [head, "  " + counts] + ["  " + str(step) for step in self.trace]
        if self.explanation:
            lines.append("  exp: " + self.explanation)
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        color = {SPFResult.PASS: "#1b7f3b", SPFResult.FAIL: "#b00020", SPFResult.PERMERROR: "#b00020",
                 SPFResult.SOFTFAIL: "#b26b00", SPFResult.TEMPERROR: "#b26b00"}.get(self.result, "#555")
        rows = "".join(
            f"<tr><td style='padding-left:{s.depth}em'>{html.escape(s.domain)}</td><td><code>{html.escape(s.term)}</code></td>"
            f"<td>{ {True: '✔', False: '✘', None: ''}[s.matched] }</td><td>{html.escape(str(s.detail))}</td>"
            f"<td>{s.lookups}/{s.void_lookups}</td><td>{html.escape(s.rfc)}</td></tr>" for s in self.trace)
        return (f"<div><b>SPF <span style='color:{color}'>{self.result.value}</span></b> — {html.escape(str(self.reason))}"
                f"<table><tr><th>domaine</th><th>terme</th><th></th><th>détail</th><th>req./vides</th><th>RFC</th></tr>"
                f"{rows}</table></div>")

    def received_spf(self, receiver: str = "mx.labmail.test") -> str:
        """The ``Received-SPF`` header value (RFC 7208 §9.1)."""
        comment = f"{receiver}: {self.reason.en}"
        return (f"{self.result.value} ({comment}) client-ip={self.ip}; envelope-from=\"{self.sender}\"; "
                f"helo={self.helo}; receiver={receiver}; identity={self.identity}")

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame(
            [{"profondeur": s.depth, "domaine": s.domain, "terme": s.term, "correspond": s.matched, "détail": str(s.detail),
              "requêtes DNS": "; ".join(str(q) for q in s.queries), "requêtes comptées": s.lookups,
              "requêtes vides": s.void_lookups, "RFC": s.rfc} for s in self.trace])


@dataclass
class _Context:
    resolver: Resolver
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    sender: str
    helo: str
    deadline: float
    lookups: int = 0
    voids: int = 0
    trace: list[TraceStep] = field(default_factory=list)
    pending: list[DNSQuery] = field(default_factory=list)
    cache: dict = field(default_factory=dict)
    receiver: str = "unknown"
    record_override: str | None = None
    top_record: str | None = None
    records: dict = field(default_factory=dict)

    @property
    def v6(self) -> bool:
        return self.ip.version == 6

    # -- DNS ------------------------------------------------------------------
    def query(self, name: str, rdtype: str, *, count_void: bool = True) -> list:
        """Records of ``name``/``rdtype`` (CNAMEs followed); counts void answers; raises _Temp on DNS errors."""
        name = name.rstrip(".").lower()
        if not name or any(not 0 < len(label) < 64 for label in name.split(".")):
            return []
        key = (name, rdtype)
        if key in self.cache:
            result: LookupResult = self.cache[key]
        else:
            if time.monotonic() > self.deadline:
                raise _Temp(Text("temps d'évaluation dépassé (limite de 20 s)", "evaluation time exceeded (20 s limit)"),
                            "RFC 7208 §4.6.4")
            result = self.resolver.query(name, rdtype)
            if len(result.cnames) > MAX_CNAME:
                raise _Perm(Text("chaîne de CNAME trop longue", "CNAME chain too long"), "RFC 7208 §4.6.4")
        rdatas = [r.rdata for r in result.records]
        self.pending.append(DNSQuery(name, rdtype, result.outcome.value, tuple(r.value for r in result.records)))
        if result.outcome in (Outcome.TIMEOUT, Outcome.SERVFAIL, Outcome.UNREACHABLE, Outcome.ERROR, Outcome.REFUSED):
            raise _Temp(Text(f"erreur DNS sur {name} {rdtype} ({result.outcome.value})",
                             f"DNS error on {name} {rdtype} ({result.outcome.value})"))
        if rdatas:
            self.cache[key] = result
            if rdtype == "MX":  # addresses of the MX hosts from the additional section: no extra query (as pyspf)
                self._cache_additional(result)
        elif count_void:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise _Perm(Text(f"plus de {MAX_VOID_LOOKUPS} requêtes DNS sans réponse (« void lookups »)",
                                 f"more than {MAX_VOID_LOOKUPS} DNS queries with no answer (void lookups)"), "RFC 7208 §4.6.4")
        return rdatas

    def _cache_additional(self, result: LookupResult) -> None:
        from .resolver import Record

        grouped: dict[tuple[str, str], list[Record]] = {}
        for rec in result.additional:
            grouped.setdefault((rec.name.rstrip(".").lower(), rec.type), []).append(rec)
        for (name, rtype), recs in grouped.items():
            if (name, rtype) not in self.cache:
                self.cache[(name, rtype)] = LookupResult(name, rtype, Outcome.ANSWER, tuple(recs), server=result.server)

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Perm(Text(f"plus de {MAX_LOOKUPS} termes qui interrogent le DNS (« {term} » est le {self.lookups}e)",
                             f"more than {MAX_LOOKUPS} DNS-querying terms (\"{term}\" is number {self.lookups})"),
                        "RFC 7208 §4.6.4")

    def step(self, depth: int, domain: str, term: str, detail: Text, matched: bool | None, rfc: str) -> None:
        self.trace.append(TraceStep(depth, domain, term, detail, tuple(self.pending), self.lookups, self.voids, matched, rfc))
        self.pending = []

    # -- macros ----------------------------------------------------------------
    def expand(self, spec: str, domain: str, *, exp: bool = False) -> str:
        local, _, sender_domain = self.sender.rpartition("@")

        def value(letter: str) -> str:
            if letter == "s":
                return self.sender
            if letter == "l":
                return local or "postmaster"
            if letter == "o":
                return sender_domain
            if letter == "d":
                return domain
            if letter == "i":
                if self.v6:
                    return ".".join(self.ip.exploded.replace(":", ""))
                return str(self.ip)
            if letter == "v":
                return "ip6" if self.v6 else "in-addr"
            if letter == "h":
                return self.helo
            if letter == "p":
                return self.validated_ptr(domain)
            if letter == "c":
                return str(self.ip)
            if letter == "r":
                return self.receiver
            if letter == "t":
                return str(int(time.time()))
            raise _Perm(Text(f"macro inconnue %{{{letter}}}", f"unknown macro %{{{letter}}}"), "RFC 7208 §7.2")

        def replace(m: re.Match) -> str:
            text = m.group(0)
            if text == "%%":
                return "%"
            if text == "%_":
                return " "
            if text == "%-":
                return "%20"
            letter, digits, reverse, delimiters = m.group(1), m.group(2), m.group(3), m.group(4)
            if letter.lower() in "crt" and not exp:
                raise _Perm(Text(f"%{{{letter}}} n'est permise que dans exp=", f"%{{{letter}}} only allowed in exp="), "RFC 7208 §7.2")
            result = value(letter.lower())
            if digits or reverse or delimiters:
                parts = re.split("[" + re.escape(delimiters or ".") + "]", result)
                if reverse:
                    parts.reverse()
                if digits:
                    count = int(digits)
                    if count == 0:
                        raise _Perm(Text("nombre de parties nul dans une macro", "zero parts in a macro"), "RFC 7208 §7.3")
                    parts = parts[-count:]
                result = ".".join(parts)
            if letter.isupper():
                result = urllib.parse.quote(result, safe="~")
            return result

        expanded = _MACRO_RE.sub(replace, spec)
        if exp:
            return expanded
        if expanded.endswith("."):
            expanded = expanded[:-1]
        while len(expanded) > 253 and "." in expanded:  # RFC 7208 §7.3: drop labels from the left
            expanded = expanded.split(".", 1)[1]
        return expanded

    def validated_names(self) -> list[str]:
        """PTR names of the client address whose A/AAAA include it (RFC 7208 §5.5), first 10 PTR names only."""
        reverse = self.ip.reverse_pointer
        names = [r.target.to_text().rstrip(".") for r in self.query(reverse, "PTR")]
        valid = []
        for name in names[:MAX_PTR]:
            addrs = self.query(name, "AAAA" if self.v6 else "A")
            if any(ipaddress.ip_address(a.address) == self.ip for a in addrs):
                valid.append(name)
        return valid

    def validated_ptr(self, domain: str) -> str:
        names = self.validated_names()
        for name in names:
            if name.lower() == domain.lower():
                return name
        for name in names:
            if name.lower().endswith("." + domain.lower()):
                return name
        return names[0] if names else "unknown"

    def addresses_match(self, rdatas: list, cidr: int) -> bool:
        for r in rdatas:
            net = ipaddress.ip_network(f"{r.address}/{cidr}", strict=False)
            if self.ip in net:
                return True
        return False


def _record_of(ctx: _Context, domain: str, depth: int, why: str) -> tuple[str | None, str]:
    """Fetch the SPF record of ``domain`` (RFC 7208 §4.4–4.5): (record or None, status)."""
    if why == "check_host" and ctx.record_override is not None:
        ctx.top_record = ctx.record_override
        ctx.step(depth, domain, why, Text(f"enregistrement donné (non publié) : {ctx.record_override}",
                                          f"given record (not published): {ctx.record_override}"), None, "RFC 7208 §4.5")
        return ctx.record_override, "ok"
    rdatas = ctx.query(domain, "TXT")
    records = []
    for r in rdatas:
        try:
            text = b"".join(r.strings).decode("ascii")
        except UnicodeDecodeError:
            if b"".join(r.strings)[:7].lower() in (b"v=spf1", b"v=spf1 "):
                raise _Perm(Text("caractères non ASCII dans l'enregistrement SPF", "non-ASCII characters in the SPF record"),
                            "RFC 7208 §3") from None
            continue
        if is_spf_record(text):
            records.append(text)
    if len(records) > 1:
        ctx.step(depth, domain, why, Text(f"{len(records)} enregistrements SPF publiés : il en faut un seul",
                                          f"{len(records)} SPF records published: there must be exactly one"), False, "RFC 7208 §4.5")
        raise _Perm(Text(f"{domain} publie {len(records)} enregistrements SPF", f"{domain} publishes {len(records)} SPF records"),
                    "RFC 7208 §4.5")
    if not records:
        ctx.step(depth, domain, why, Text("aucun enregistrement « v=spf1 » dans le TXT", "no \"v=spf1\" TXT record"),
                 None, "RFC 7208 §4.5")
        return None, "none"
    ctx.step(depth, domain, why, Text(f"enregistrement trouvé : {records[0]}", f"record found: {records[0]}"), None, "RFC 7208 §4.5")
    if why == "check_host":
        ctx.top_record = records[0]
    return records[0], "ok"


def _check_host(ctx: _Context, domain: str, depth: int, why: str) -> tuple[SPFResult, str | None, str | None, str | None]:
    """RFC 7208 §4: returns (result, matched term, domain of the matched term, explanation)."""
    record, _status = _record_of(ctx, domain, depth, why)
    if record is None:
        return SPFResult.NONE, None, None, None
    ctx.records[domain] = record
    try:
        terms = _parsed(record)
    except SPFSyntaxError as exc:
        ctx.step(depth, domain, "v=spf1 …", Text(exc.text.fr, exc.text.en), False, "RFC 7208 §4.6")
        raise _Perm(Text(f"erreur de syntaxe dans l'enregistrement de {domain} : {exc.text.fr}",
                         f"syntax error in the record of {domain}: {exc.text.en}"), "RFC 7208 §4.6") from None
    # Expand every domain-spec first: a bad macro is a syntax error of the whole record.
    specs: dict[int, str] = {}
    for index, term in enumerate(terms):
        if term.kind == "mechanism" and term.name in ("a", "mx", "ptr", "include", "exists"):
            specs[index] = ctx.expand(term.value, domain) if term.value is not None else domain
        elif term.kind == "modifier" and term.name == "redirect":
            specs[index] = ctx.expand(term.value or "", domain)  # redirect= always has a value (grammar)
    redirect = next((i for i, t in enumerate(terms) if t.kind == "modifier" and t.name == "redirect"), None)
    if redirect is not None and _PYSPF_REDIRECT_QUIRK:
        ctx.count_lookup(terms[redirect].text)  # pyspf counts redirect= before any mechanism (see module doc)
    exp_term = next((t for t in terms if t.kind == "modifier" and t.name == "exp"), None)

    for index, term in enumerate(terms):
        if term.kind == "modifier":
            continue
        name = term.name
        target = specs.get(index, "")  # "" for all, ip4, ip6: no domain-spec
        matched = False
        rfc = f"RFC 7208 §5.{_MECHANISMS.index(name) + 1}"
        if name == "all":
            matched = True
            detail = Text("« all » correspond à toute adresse", "\"all\" matches any address")
        elif name == "ip4" or name == "ip6":
            if (name == "ip6") == ctx.v6:
                prefix = term.cidr4 if term.cidr4 is not None else (128 if ctx.v6 else 32)
                matched = ctx.ip in ipaddress.ip_network(f"{term.value}/{prefix}", strict=False)
                detail = Text(f"{ctx.ip} {'est' if matched else 'n’est pas'} dans {term.value}/{prefix}",
                              f"{ctx.ip} {'is' if matched else 'is not'} in {term.value}/{prefix}")
            else:
                detail = Text(f"{name} ne s'applique pas à une adresse IPv{ctx.ip.version}",
                              f"{name} does not apply to an IPv{ctx.ip.version} address")
            rfc = "RFC 7208 §5.6"
        elif name in ("a", "mx"):
            ctx.count_lookup(term.text)
            rtype = "AAAA" if ctx.v6 else "A"
            prefix = (term.cidr6 if term.cidr6 is not None else 128) if ctx.v6 else (term.cidr4 if term.cidr4 is not None else 32)
            if name == "a":
                addrs = ctx.query(target, rtype)
                what = Text(f"adresses de {target}", f"addresses of {target}")
            else:
                mxs = ctx.query(target, "MX")
                if len(mxs) > MAX_MX:
                    ctx.step(depth, domain, term.text, Text(f"{len(mxs)} MX : plus de {MAX_MX}", f"{len(mxs)} MX: more than {MAX_MX}"),
                             False, "RFC 7208 §4.6.4")
                    raise _Perm(Text(f"{target} a plus de {MAX_MX} MX", f"{target} has more than {MAX_MX} MX"), "RFC 7208 §4.6.4")
                addrs = []
                for mx in sorted(mxs, key=lambda r: (r.preference, r.exchange.to_text())):
                    addrs += ctx.query(mx.exchange.to_text(), rtype)
                what = Text(f"adresses des MX de {target}", f"addresses of the MX of {target}")
            matched = ctx.addresses_match(addrs, prefix)
            shown = ", ".join(a.address for a in addrs) or "∅"
            detail = Text(f"{what.fr} : {shown} ; /{prefix} {'contient' if matched else 'ne contient pas'} {ctx.ip}",
                          f"{what.en}: {shown}; /{prefix} {'contains' if matched else 'does not contain'} {ctx.ip}")
        elif name == "ptr":
            ctx.count_lookup(term.text)
            names = ctx.validated_names()
            matched = any(n.lower() == target.lower() or n.lower().endswith("." + target.lower()) for n in names)
            detail = Text(f"noms validés de {ctx.ip} : {', '.join(names) or '∅'} (mécanisme déconseillé)",
                          f"validated names of {ctx.ip}: {', '.join(names) or '∅'} (mechanism discouraged)")
        elif name == "exists":
            ctx.count_lookup(term.text)
            matched = bool(ctx.query(target, "A"))
            detail = Text(f"{target} {'a' if matched else 'n’a pas'} d'adresse A", f"{target} {'has' if matched else 'has no'} A record")
        else:  # include
            ctx.count_lookup(term.text)
            ctx.step(depth, domain, term.text, Text(f"évaluation de {target}", f"evaluating {target}"), None, "RFC 7208 §5.2")
            sub, _m, _md, _e = _check_host(ctx, target, depth + 1, "include")
            if sub is SPFResult.PASS:
                matched = True
            elif sub is SPFResult.TEMPERROR:
                raise _Temp(Text(f"erreur temporaire dans {target}", f"temporary error in {target}"), "RFC 7208 §5.2")
            elif sub in (SPFResult.PERMERROR, SPFResult.NONE):
                ctx.step(depth, domain, term.text, Text(f"include de {target} : {sub.value} ⇒ permerror",
                                                        f"include of {target}: {sub.value} ⇒ permerror"), False, "RFC 7208 §5.2")
                raise _Perm(Text(f"include:{target} n'a pas d'enregistrement SPF utilisable",
                                 f"include:{target} has no usable SPF record"), "RFC 7208 §5.2")
            detail = Text(f"résultat de {target} : {sub.value} ⇒ {'correspond' if matched else 'ne correspond pas'}",
                          f"result of {target}: {sub.value} ⇒ {'match' if matched else 'no match'}")
        ctx.step(depth, domain, term.text, detail, matched, rfc)
        if matched:
            explanation = None
            if term.result is SPFResult.FAIL and exp_term is not None:
                explanation = _explanation(ctx, exp_term.value or "", domain)
            return term.result, term.text, domain, explanation

    if redirect is not None:
        target = specs[redirect]
        if not _PYSPF_REDIRECT_QUIRK:
            ctx.count_lookup(terms[redirect].text)
        ctx.step(depth, domain, terms[redirect].text, Text(f"aucun mécanisme ne correspond : on suit redirect vers {target}",
                                                           f"no mechanism matched: following redirect to {target}"), None, "RFC 7208 §6.1")
        result, matched_term, matched_domain, explanation = _check_host(ctx, target, depth, "redirect")
        if result is SPFResult.NONE:
            raise _Perm(Text(f"redirect={target} : pas d'enregistrement SPF", f"redirect={target}: no SPF record"), "RFC 7208 §6.1")
        return result, matched_term, matched_domain, explanation
    ctx.step(depth, domain, "(fin)", Text("aucun mécanisme ne correspond : résultat neutral",
                                          "no mechanism matched: result neutral"), None, "RFC 7208 §4.7")
    return SPFResult.NEUTRAL, None, None, None


def _explanation(ctx: _Context, spec: str, domain: str) -> str | None:
    """The exp= text (RFC 7208 §6.2); any problem means no explanation, never another result."""
    try:
        target = ctx.expand(spec, domain)
        rdatas = ctx.query(target, "TXT", count_void=False)
        if len(rdatas) != 1:
            return None
        text = b"".join(rdatas[0].strings).decode("ascii")
        _check_macro_string(text.replace(" ", "%_"), 0, exp=True)
        return ctx.expand(text, domain, exp=True)
    except (_Perm, _Temp, SPFSyntaxError, UnicodeDecodeError):
        return None


def evaluate(ip: str, mail_from: str, helo: str, *, identity: str | None = None, resolver: Resolver | None = None,
             world=None, timeout: float = 20.0, receiver: str = "unknown", record: str | None = None) -> SPFEvaluation:
    """Run SPF's ``check_host()`` for a connection and return the result with its trace.

    Parameters
    ----------
    ip : str
        The SMTP client's address (what the receiving server saw).
    mail_from : str
        The envelope sender (MAIL FROM); empty or ``"<>"`` for a bounce, then the HELO identity is checked.
    helo : str
        The name given in HELO/EHLO.
    identity : {"mailfrom", "helo"}, optional
        Force the identity to check (default: MAIL FROM, or HELO for an empty MAIL FROM).
    resolver : labmail.dns.Resolver, optional
        Where DNS questions go (default: the world's resolver).
    timeout : float
        Bound on the whole evaluation (RFC 7208 §4.6.4 asks for at least 20 s); never more.
    record : str, optional
        Evaluate this record for the domain instead of the published one (try a record before publishing it).
    """
    start = time.perf_counter()
    try:
        addr = ipaddress.ip_address(str(ip).strip())
    except ValueError:
        raise UsageError(f"« {ip} » n'est pas une adresse IP (ex. 203.0.113.10).", f"\"{ip}\" is not an IP address (e.g. 203.0.113.10).") from None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    helo = (helo or "").strip().rstrip(".")
    sender = (mail_from or "").strip().strip("<>")
    kind = identity or ("mailfrom" if sender else "helo")
    if kind == "helo" or not sender:
        sender = f"postmaster@{helo}"
    elif "@" not in sender:
        sender = f"postmaster@{sender}"
    local, _, domain = sender.rpartition("@")
    if not local:
        sender = f"postmaster@{domain}"
    domain = domain.rstrip(".")
    ctx = _Context(resolver or Resolver(world=world, timeout=min(timeout, 2.0)), addr, sender, helo,
                   time.monotonic() + timeout, receiver=receiver, record_override=record)
    labels = domain.split(".")
    if len(labels) < 2 or any(not 0 < len(label) < 64 for label in labels):
        reason = Text(f"« {domain} » n'est pas un nom de domaine complet : pas de vérification SPF",
                      f"\"{domain}\" is not a fully qualified domain name: no SPF check")
        return SPFEvaluation(SPFResult.NONE, kind, domain, sender, str(addr), helo, reason, rfc="RFC 7208 §4.3")
    matched = matched_domain = explanation = None
    try:
        result, matched, matched_domain, explanation = _check_host(ctx, domain, 0, "check_host")
        reason = _reason(result, matched, matched_domain, addr, domain, ctx.records.get(matched_domain or ""))
        rfc = "RFC 7208 §4.7" if matched is None else "RFC 7208 §4.6.2"
    except _Perm as exc:
        result, reason, rfc = SPFResult.PERMERROR, exc.text, exc.rfc
        ctx.step(0, domain, "permerror", exc.text, False, exc.rfc)
    except _Temp as exc:
        result, reason, rfc = SPFResult.TEMPERROR, exc.text, exc.rfc
        ctx.step(0, domain, "temperror", exc.text, False, exc.rfc)
    return SPFEvaluation(result, kind, domain, sender, str(addr), helo, reason, matched, matched_domain, explanation, ctx.top_record,
                         ctx.lookups, ctx.voids, tuple(ctx.trace), rfc, round((time.perf_counter() - start) * 1000, 2))


def _reason(result: SPFResult, matched: str | None, where: str | None, ip, domain: str, record: str | None = None) -> Text:
    if result is SPFResult.NONE:
        return Text(f"{domain} ne publie pas d'enregistrement SPF", f"{domain} publishes no SPF record")
    if matched is None:
        return Text(f"aucun mécanisme de {domain} ne correspond à {ip} : neutral", f"no mechanism of {domain} matches {ip}: neutral")
    if result in (SPFResult.FAIL, SPFResult.SOFTFAIL) and record:
        fr = f"{ip} n'est pas autorisée par « {record} » ({where}, terme « {matched} ») : {_MEANINGS[result].fr}"
        en = f"{ip} is not authorised by \"{record}\" ({where}, term \"{matched}\"): {_MEANINGS[result].en}"
    else:
        fr = f"{ip} correspond à « {matched} » de {where} : {_MEANINGS[result].fr}"
        en = f"{ip} matches \"{matched}\" of {where}: {_MEANINGS[result].en}"
    if result in (SPFResult.FAIL, SPFResult.SOFTFAIL) and isinstance(ip, ipaddress.IPv4Address):
        fr += f". Si ce serveur est légitime, ajoutez « ip4:{ip} » à l'enregistrement de {domain}"
        en += f". If this server is legitimate, add \"ip4:{ip}\" to the record of {domain}"
    return Text(fr, en)


# ---------------------------------------------------------------------------
# Lint
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One remark of :func:`lint`: severity (``error``, ``warning``, ``info``), what, where, RFC."""

    severity: str
    code: str
    message: Text
    position: int | None = None
    rfc: str = ""

    def __str__(self) -> str:
        where = f" (position {self.position})" if self.position is not None else ""
        return f"[{self.severity}] {self.message}{where} [{self.rfc}]"


def _static_lookups(record: str, resolver: Resolver | None, seen: frozenset[str], depth: int = 0) -> tuple[int, list[str]]:
    """Count DNS-querying terms through includes and redirect, as checkdmarc does (no IP, no early match)."""
    try:
        terms = parse(record)
    except SPFSyntaxError:
        return 0, []
    count, missing = 0, []
    for term in terms:
        if not term.does_lookup:
            continue
        count += 1
        if term.name in ("include", "redirect") and resolver is not None and depth < 10 and "%" not in (term.value or ""):
            target = (term.value or "").rstrip(".").lower()
            if target in seen:
                continue
            answer = resolver.query(target, "TXT")
            texts = [r.value for r in answer.records if is_spf_record(r.value)]
            if len(texts) != 1:
                missing.append(target)
                continue
            sub, sub_missing = _static_lookups(texts[0], resolver, seen | {target}, depth + 1)
            count += sub
            missing += sub_missing
    return count, missing


def lint(record: str | None = None, *, domain: str | None = None, ip: str | None = None, strings: list[str] | None = None,
         resolver: Resolver | None = None, world=None) -> list[Finding]:
    """Review an SPF record (given, or published by ``domain``) and list what is wrong or risky.

    ``strings`` gives the TXT record as the separate strings it is published in, to catch a record
    split without a space at a string boundary. With ``ip``, the lookup count is also evaluated for that
    address (the evaluation may stop before the 10-lookup limit is reached).
    """
    findings: list[Finding] = []
    if strings is not None and record is None:
        record = "".join(strings)
    needs_dns = domain is not None or ip is not None or record is not None
    if resolver is None and needs_dns:
        try:
            resolver = Resolver(world=world)
        except LabmailError:
            resolver = None
    if record is None and domain is not None and resolver is not None:
        answer = resolver.query(domain, "TXT")
        spf_records = [r for r in answer.records if is_spf_record(r.value)]
        if len(spf_records) > 1:
            findings.append(Finding("error", "two-records", Text(
                f"{domain} publie {len(spf_records)} enregistrements SPF : résultat permerror pour tout le courrier. "
                "Fusionnez-les en un seul.",
                f"{domain} publishes {len(spf_records)} SPF records: permerror for all mail. Merge them into one."),
                rfc="RFC 7208 §4.5"))
        if not spf_records:
            almost = [r.value for r in answer.records if r.value.strip().lower().startswith("v=spf1")]
            findings.append(Finding("error", "no-record", Text(
                f"{domain} n'a pas d'enregistrement SPF" + (f" (« {almost[0][:30]}… » ne commence pas exactement par v=spf1)" if almost else ""),
                f"{domain} has no SPF record" + (f" (\"{almost[0][:30]}…\" does not start exactly with v=spf1)" if almost else "")),
                rfc="RFC 7208 §4.5"))
            return findings
        record = spf_records[0].value
        strings = [s.decode("ascii", "replace") for s in getattr(spf_records[0].rdata, "strings", ())]
    if record is None:
        raise UsageError("lint() : donnez un enregistrement ou un domaine.", "lint(): give a record or a domain.")
    if record != record.strip() and record.strip().lower().startswith("v=spf1"):
        findings.append(Finding("error", "leading-space", Text(
            "espace avant « v=spf1 » : les récepteurs ne reconnaissent pas l'enregistrement (résultat none)",
            "space before \"v=spf1\": receivers do not recognise the record (result none)"), 0, "RFC 7208 §4.5"))
        record = record.strip()
    if strings and len(strings) > 1:
        offset = 0
        for left, right in zip(strings, strings[1:]):
            offset += len(left)
            if left and right and not left.endswith(" ") and not right.startswith(" "):
                joined_term = record[:offset].rsplit(" ", 1)[-1] + record[offset:].split(" ", 1)[0]
                try:
                    _parse_term(joined_term, offset)
                    ok_joined = True
                except SPFSyntaxError:
                    ok_joined = False
                if not ok_joined:
                    findings.append(Finding("error", "bad-split", Text(
                        f"les chaînes TXT sont recollées sans espace : « {joined_term} » ; ajoutez une espace à la fin "
                        "de la chaîne précédente",
                        f"TXT strings are joined without a space: \"{joined_term}\"; add a space at the end of the "
                        "previous string"), offset, "RFC 7208 §3.3"))
    try:
        terms = parse(record)
    except SPFSyntaxError as exc:
        findings.append(Finding("error", "syntax", exc.text, None, "RFC 7208 §12"))  # the text gives the position
        return findings
    for term in terms:
        if term.kind == "mechanism" and term.name == "all" and term.qualifier == "+":
            findings.append(Finding("error", "plus-all", Text(
                "« +all » autorise le monde entier à envoyer pour ce domaine : utilisez « -all » ou « ~all »",
                "\"+all\" authorises the whole world to send for this domain: use \"-all\" or \"~all\""), term.position,
                "RFC 7208 §5.1"))
        if term.kind == "mechanism" and term.name == "ptr":
            findings.append(Finding("warning", "ptr", Text(
                "« ptr » est lent et peu fiable : remplacez-le par ip4:/ip6: ou a", "\"ptr\" is slow and unreliable: "
                "replace it by ip4:/ip6: or a"), term.position, "RFC 7208 §5.5"))
    mechanisms = [t for t in terms if t.kind == "mechanism"]
    if not any(t.name == "all" for t in mechanisms) and not any(t.name == "redirect" for t in terms):
        findings.append(Finding("warning", "no-all", Text(
            "pas de « all » final : les adresses non listées obtiennent neutral ; terminez par « -all » ou « ~all »",
            "no final \"all\": unlisted addresses get neutral; end with \"-all\" or \"~all\""), rfc="RFC 7208 §4.7"))
    if mechanisms and mechanisms[-1].name != "all" and any(t.name == "all" for t in mechanisms):
        first_all = next(t for t in mechanisms if t.name == "all")
        findings.append(Finding("warning", "after-all", Text(
            "des termes suivent « all » : ils ne sont jamais évalués", "terms follow \"all\": they are never evaluated"),
            first_all.position, "RFC 7208 §5.1"))
    count, missing = _static_lookups(record, resolver, frozenset([domain.lower()] if domain else []))
    if count > MAX_LOOKUPS:
        findings.append(Finding("error", "too-many-lookups", Text(
            f"l'analyse de l'enregistrement demande {count}/{MAX_LOOKUPS} requêtes DNS (include, a, mx, ptr, exists, "
            "redirect, en suivant les include) : permerror dès que l'évaluation dépasse 10",
            f"parsing the record requires {count}/{MAX_LOOKUPS} DNS lookups (include, a, mx, ptr, exists, redirect, "
            "following includes): permerror as soon as an evaluation exceeds 10"), rfc="RFC 7208 §4.6.4"))
    else:
        findings.append(Finding("info", "lookups", Text(f"{count}/{MAX_LOOKUPS} requêtes DNS au pire",
                                                        f"{count}/{MAX_LOOKUPS} DNS lookups at worst"), rfc="RFC 7208 §4.6.4"))
    for target in missing:
        findings.append(Finding("error", "dead-include", Text(
            f"« {target} » (include/redirect) n'a pas d'enregistrement SPF unique : permerror quand on l'évalue",
            f"\"{target}\" (include/redirect) has no single SPF record: permerror when evaluated"), rfc="RFC 7208 §5.2"))
    if ip is not None and resolver is not None:
        where = domain or "example.invalid"
        result = evaluate(ip, f"postmaster@{where}", where, resolver=resolver, record=record)
        findings.append(Finding("info", "evaluated", Text(
            f"pour {ip} : {result.result.value}, {result.lookups} requêtes comptées, {result.void_lookups} vides "
            f"(l'évaluation s'arrête au premier terme qui correspond)",
            f"for {ip}: {result.result.value}, {result.lookups} lookups counted, {result.void_lookups} void "
            f"(evaluation stops at the first matching term)"), rfc="RFC 7208 §4.6.4"))
    return findings
