"""DMARC under both standards: RFC 7489 (2015) and RFC 9989 (May 2026, which obsoletes it).

* :func:`parse_record` validates a ``v=DMARC1`` record for either standard (``p``, ``sp``, ``np``, ``pct``
  vs ``t``, ``adkim``/``aspf``, ``rua``/``ruf``, ``fo``, ``psd``…).
* :func:`organizational_domain` finds the organizational domain: RFC 7489 with a pinned, offline copy of
  the Public Suffix List (``data/public_suffix_list.dat``), RFC 9989 with the DNS tree walk.
* :func:`evaluate` finds the policy, checks SPF and DKIM alignment, and gives the result and the
  disposition (none, quarantine, reject) with reasons — under both standards, saying where they differ.

A lesson of the course: ``cloud`` is a public suffix, so under RFC 7489 every ``prenom.labmail.cloud``
has ``labmail.cloud`` as organizational domain, and relaxed alignment crosses students.

>>> r = parse_record("v=DMARC1; p=quarantine; rua=mailto:d@jean.labmail.cloud")
>>> r.p, r.adkim, r.valid
('quarantine', 'r', True)
"""

from __future__ import annotations

import functools
import html
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .resolver import Outcome, Resolver
from .errors import DNSLookupFailed, UsageError
from .i18n import Text, frame

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["DMARCRecord", "parse_record", "is_dmarc_record", "organizational_domain", "discover", "Discovery", "Lookup",
           "evaluate", "DMARCEvaluation", "Verdict", "report_authorization", "STANDARDS", "PSL_PATH"]

STANDARDS = ("7489", "9989")
PSL_PATH = Path(__file__).resolve().parents[1] / "data" / "public_suffix_list.dat"
_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class Note:
    severity: str  # error, warning, info
    code: str
    message: Text
    rfc: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.message} [{self.rfc}]"


@dataclass(frozen=True)
class DMARCRecord:
    """A parsed DMARC record, read under one standard, with what is wrong or noteworthy."""

    raw: str
    standard: str
    tags: dict = field(repr=False)
    p: str | None
    sp: str | None
    np: str | None
    pct: int
    t: bool
    adkim: str
    aspf: str
    rua: tuple[str, ...]
    ruf: tuple[str, ...]
    fo: str
    psd: str
    notes: tuple[Note, ...]
    valid: bool

    def policy_for(self, *, subdomain: bool, nonexistent: bool = False) -> str:
        """The policy that applies: p for the domain itself, sp for a subdomain, np (9989) for a non-existent one."""
        p = self.p or "none"
        if not subdomain:
            return p
        if nonexistent and self.standard == "9989" and self.np:
            return self.np
        return self.sp or p

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame([{"balise": k, "valeur": v, "signification": str(_TAG_MEANINGS.get(k, Text("balise inconnue (ignorée)",
                             "unknown tag (ignored)")))} for k, v in self.tags.items()], columns=["balise", "valeur", "signification"])


_TAG_MEANINGS = {
    "v": Text("version : DMARC1, en premier", "version: DMARC1, first"),
    "p": Text("politique du domaine : none, quarantine (indésirables) ou reject", "domain policy: none, quarantine (junk) or reject"),
    "sp": Text("politique des sous-domaines", "subdomain policy"),
    "np": Text("politique des sous-domaines inexistants (RFC 9989)", "non-existent subdomain policy (RFC 9989)"),
    "pct": Text("pourcentage de messages soumis à la politique (RFC 7489, supprimé par RFC 9989)",
                "percentage of messages the policy applies to (RFC 7489, removed by RFC 9989)"),
    "t": Text("mode test (RFC 9989) : t=y applique la politique un cran plus bas", "test mode (RFC 9989): t=y applies one level lower"),
    "adkim": Text("alignement DKIM : r (relâché, même domaine organisationnel) ou s (strict, identique)",
                  "DKIM alignment: r (relaxed, same organizational domain) or s (strict, identical)"),
    "aspf": Text("alignement SPF : r ou s", "SPF alignment: r or s"),
    "rua": Text("où envoyer les rapports agrégés", "where to send aggregate reports"),
    "ruf": Text("où envoyer les rapports d'échec", "where to send failure reports"),
    "fo": Text("quand produire un rapport d'échec (0, 1, d, s)", "when to produce a failure report (0, 1, d, s)"),
    "rf": Text("format des rapports d'échec (RFC 7489, supprimé par RFC 9989)", "failure report format (RFC 7489, removed by RFC 9989)"),
    "ri": Text("intervalle des rapports en secondes (RFC 7489, supprimé par RFC 9989)", "report interval in seconds (RFC 7489, removed by RFC 9989)"),
    "psd": Text("domaine de suffixe public : y, n ou u (RFC 9989)", "public suffix domain: y, n or u (RFC 9989)"),
}


_VERSION_RE = re.compile(r"[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;.*)?", re.S)


def is_dmarc_record(text: str) -> bool:
    """Does this TXT value start with the DMARC version tag? (RFC 9989 §4.8: ``dmarc-version = "v" equals %s"DMARC1"``
    — the tag name in any case, as every ABNF quoted string; the value ``DMARC1`` case-sensitive; then ``;`` or the end.)

    >>> is_dmarc_record("V=DMARC1; P=Reject"), is_dmarc_record("v=dmarc1; p=reject"), is_dmarc_record(" v=DMARC1")
    (True, False, False)
    """
    return _VERSION_RE.fullmatch(text) is not None


def parse_record(text: str, *, standard: str = "9989") -> DMARCRecord:
    """Parse and validate a DMARC record under ``standard`` ("7489" or "9989")."""
    if standard not in STANDARDS:
        raise UsageError(f"standard « {standard} » inconnu : « 7489 » ou « 9989 ».", f"unknown standard \"{standard}\": \"7489\" or \"9989\".")
    notes: list[Note] = []
    valid = True

    def note(severity: str, code: str, fr: str, en: str, rfc: str) -> None:
        notes.append(Note(severity, code, Text(fr, en), rfc))

    ref = "RFC 9989" if standard == "9989" else "RFC 7489"
    tags: dict[str, str] = {}
    parts = [p.strip() for p in text.strip().split(";")]
    for index, part in enumerate(parts):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z]+", key):  # dmarc-tag = 1*ALPHA equals 1*dmarc-value
            note("error", "syntax", f"« {part} » n'est pas une balise=valeur", f"\"{part}\" is not a tag=value", f"{ref} §4.7")
            valid = False
            continue
        key_l = key.lower()
        if index == 0 and (key_l != "v" or value != "DMARC1"):
            break
        if key_l in tags:  # RFC 6376 §3.2 (to which RFC 9989 §4.7 refers): "the entire tag-list is invalid"
            note("error", "duplicate", f"balise {key_l} répétée : tout l'enregistrement est invalide (RFC 6376 §3.2)",
                 f"tag {key_l} repeated: the whole record is invalid (RFC 6376 §3.2)", f"{ref} §4.7")
            valid = False
            continue
        tags[key_l] = value
    if tags.get("v") != "DMARC1" or not is_dmarc_record(text.strip()):
        note("error", "version", "un enregistrement DMARC commence par « v=DMARC1 » (DMARC1 en majuscules)",
             "a DMARC record starts with \"v=DMARC1\" (DMARC1 in upper case)", f"{ref} §4.8")
        return DMARCRecord(text, standard, tags, None, None, None, 100, False, "r", "r", (), (), "0", "u", tuple(notes), False)

    def policy(key: str) -> str | None:
        value = tags.get(key)
        if value is None:
            return None
        if value.lower() not in _POLICIES:
            note("error", f"bad-{key}", f"{key}={value} : la valeur doit être none, quarantine ou reject",
                 f"{key}={value}: the value must be none, quarantine or reject", f"{ref} §4.7")
            return None
        return value.lower()

    p, sp = policy("p"), policy("sp")
    np = policy("np") if standard == "9989" else None
    if "np" in tags and standard == "7489":
        note("info", "np-ignored", "np= n'existe pas dans RFC 7489 : ignoré", "np= does not exist in RFC 7489: ignored", "RFC 7489 §6.3")
    rua = _uris(tags.get("rua", ""), "rua", note, ref)
    ruf = _uris(tags.get("ruf", ""), "ruf", note, ref)
    # RFC 7489 §6.6.3 step 6, RFC 9989 §4.10.1: no valid p, or an sp (9989: or np) that is present but not valid
    broken = [k for k, v in (("p", p), ("sp", sp), ("np", np)) if (k == "p" or k in tags) and v is None
              and not (k == "np" and standard == "7489")]
    if broken:
        what = ", ".join(f"{k}=" for k in broken)
        section = "RFC 9989 §4.10.1" if standard == "9989" else "RFC 7489 §6.6.3"
        if rua:
            note("warning", "policy-fallback", f"{what} manquant ou invalide mais un rua= valide : l'enregistrement vaut « p=none »",
                 f"{what} missing or invalid but a valid rua=: the record acts as \"p=none\"", section)
            p, sp, np = "none", None, None
        else:
            note("error", "no-processing", f"{what} manquant ou invalide et pas de rua= valide : aucun traitement DMARC",
                 f"{what} missing or invalid and no valid rua=: no DMARC processing", section)
            valid = False
    pct = 100
    if "pct" in tags:
        if standard == "9989":
            note("warning", "pct-removed", "pct= a été supprimé par RFC 9989 : il est ignoré ; utilisez t=y pour tester",
                 "pct= was removed by RFC 9989: it is ignored; use t=y to test", "RFC 9989 §4.7")
        elif tags["pct"].isdigit() and 0 <= int(tags["pct"]) <= 100:
            pct = int(tags["pct"])
        else:
            note("error", "bad-pct", f"pct={tags['pct']} : un entier de 0 à 100", f"pct={tags['pct']}: an integer from 0 to 100", "RFC 7489 §6.3")
    testing = False
    if "t" in tags:
        if standard == "7489":
            note("info", "t-ignored", "t= n'existe pas dans RFC 7489 : ignoré", "t= does not exist in RFC 7489: ignored", "RFC 7489 §6.3")
        elif tags["t"].lower() in ("y", "n"):
            testing = tags["t"].lower() == "y"
        else:
            note("warning", "bad-t", f"t={tags['t']} : y ou n", f"t={tags['t']}: y or n", "RFC 9989 §4.7")
    align = {}
    for key in ("adkim", "aspf"):
        value = tags.get(key, "r").lower()
        if value not in ("r", "s"):
            note("warning", f"bad-{key}", f"{key}={tags[key]} : r ou s ; r utilisé", f"{key}={tags[key]}: r or s; r used", f"{ref} §4.7")
            value = "r"
        align[key] = value
    psd = tags.get("psd", "u").lower()
    if standard == "9989" and psd not in ("y", "n", "u"):
        note("warning", "bad-psd", f"psd={tags['psd']} : y, n ou u", f"psd={tags['psd']}: y, n or u", "RFC 9989 §4.7")
        psd = "u"
    if standard == "9989":
        for key in ("rf", "ri"):
            if key in tags:
                note("info", f"{key}-removed", f"{key}= a été supprimé par RFC 9989 : ignoré", f"{key}= was removed by RFC 9989: ignored", "RFC 9989 §4.7")
    fo = tags.get("fo", "0")
    if any(part not in ("0", "1", "d", "s") for part in fo.split(":")):
        note("warning", "bad-fo", f"fo={fo} : valeurs 0, 1, d, s séparées par « : »", f"fo={fo}: values 0, 1, d, s separated by \":\"", f"{ref} §4.7")
    known = set(_TAG_MEANINGS)
    for key in tags:
        if key not in known:
            note("info", "unknown-tag", f"balise inconnue {key}= : ignorée", f"unknown tag {key}=: ignored", f"{ref} §4.7")
    if p == "none" and valid:
        note("info", "monitoring", "p=none : surveillance seulement, aucun message n'est écarté",
             "p=none: monitoring only, no message is set aside", f"{ref} §4.7")
    return DMARCRecord(text, standard, tags, p, sp, np, pct, testing, align["adkim"], align["aspf"], rua, ruf, fo, psd,
                       tuple(notes), valid)


def _uris(value: str, key: str, note, ref: str) -> tuple[str, ...]:
    out = []
    for uri in filter(None, (u.strip() for u in value.split(","))):
        address = uri.split("!", 1)[0]
        if not re.fullmatch(r"mailto:[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", address, re.I):
            note("warning", f"bad-{key}", f"{key}: « {uri} » n'est pas une URI mailto: valide", f"{key}: \"{uri}\" is not a valid mailto: URI", f"{ref} §4.7")
            continue
        out.append(address)
    return tuple(out)


# ---------------------------------------------------------------------------
# Organizational domain
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _psl():
    from publicsuffixlist import PublicSuffixList

    if PSL_PATH.exists():
        with open(PSL_PATH, "rb") as fh:
            return PublicSuffixList(source=fh)
    return PublicSuffixList()


def _normalize(domain: str) -> str:
    """Lower case, no final dot, and A-labels: a U-label author domain is converted (RFC 9989 §5.3.1)."""
    name = domain.strip().rstrip(".").lower()
    if not name.isascii():
        import dns.name

        try:
            name = dns.name.from_unicode(name).to_text(omit_final_dot=True).lower()
        except Exception:  # noqa: BLE001 - not convertible: kept as typed, it will simply not be found
            pass
    return name


class _DNSFailure(Exception):
    """A DNS query needed by DMARC failed: neither pass nor fail (RFC 9989 §5.3.6)."""


def _labels(name: str) -> int:
    return len(name.split("."))


@dataclass(frozen=True)
class Lookup:
    """One DMARC query: ``_dmarc.<domain>`` and what it gave — ``record`` (exactly one), ``none``,
    ``multiple`` (all discarded) or ``error`` (a DNS failure)."""

    domain: str
    outcome: str
    records: tuple[str, ...] = ()
    psd: str | None = None

    @property
    def name(self) -> str:
        return f"_dmarc.{self.domain}"

    def describe(self) -> Text:
        if self.outcome == "record":
            extra = f" (psd={self.psd})" if self.psd in ("y", "n") else ""
            return Text(f"{self.name} : « {self.records[0]} »{extra}", f"{self.name}: \"{self.records[0]}\"{extra}")
        if self.outcome == "multiple":
            return Text(f"{self.name} : {len(self.records)} enregistrements DMARC, tous écartés",
                        f"{self.name}: {len(self.records)} DMARC records, all discarded")
        if self.outcome == "error":
            return Text(f"{self.name} : erreur DNS", f"{self.name}: DNS error")
        return Text(f"{self.name} : aucun enregistrement DMARC", f"{self.name}: no DMARC record")


def _lookup(resolver: Resolver, domain: str) -> Lookup:
    """Query ``_dmarc.<domain>``; keep the TXT values that start with the DMARC version tag (RFC 9989 §4.10 step 2)."""
    answer = resolver.query(f"_dmarc.{domain}", "TXT")
    if answer.outcome == Outcome.ERROR and answer.rcode == "bad name":
        return Lookup(domain, "none")  # a name that cannot exist in the DNS (a 64-octet label…) has no record
    if answer.outcome in (Outcome.TIMEOUT, Outcome.SERVFAIL, Outcome.UNREACHABLE, Outcome.ERROR, Outcome.REFUSED):
        return Lookup(domain, "error")
    records = tuple(r.value for r in answer.records if is_dmarc_record(r.value))
    if len(records) > 1:
        return Lookup(domain, "multiple", records)
    if records:
        return Lookup(domain, "record", records, parse_record(records[0], standard="9989").psd)
    return Lookup(domain, "none")


def _walk(domain: str) -> list[str]:
    """RFC 9989 §4.10 tree walk: the starting name, then (after a jump to 7 labels for names of 8 labels or more)
    one label less each time, down to the top-level domain — 8 names at most."""
    labels = domain.split(".")
    names = [domain]
    if len(labels) >= 8:
        labels = labels[-7:]
        names.append(".".join(labels))
    while len(labels) > 1:
        labels = labels[1:]
        names.append(".".join(labels))
    seen, out = set(), []
    for n in names:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out[:8]


def _tree_walk(resolver: Resolver, names: list[str], done: list[Lookup] | None = None) -> tuple[list[Lookup], bool]:
    """Query each name in turn (``done``: lookups already made, reused by name); stop at a single record carrying
    psd=y or psd=n, or at a DNS error (second value). Returns the lookups of the names walked, in order."""
    known = {lk.domain: lk for lk in done or []}
    lookups = []
    for name in names:
        lk = known.get(name) or _lookup(resolver, name)
        lookups.append(lk)
        if lk.outcome == "error":
            return lookups, True
        if lk.outcome == "record" and lk.psd in ("y", "n"):
            break
    return lookups, False


def _select_org(start: str, lookups: list[Lookup]) -> tuple[str, str, str | None]:
    """RFC 9989 §4.10.2: (organizational domain, rule, PSD name) from the records a tree walk found,
    looked at from the longest name to the shortest."""
    found = sorted((lk for lk in lookups if lk.outcome == "record"), key=lambda lk: -_labels(lk.domain))
    for lk in found:
        if lk.psd == "n":
            return lk.domain, "psd=n", None
        if lk.psd == "y" and lk.domain != start:
            below = ".".join(start.split(".")[-(_labels(lk.domain) + 1):])
            return below, "psd=y", lk.domain
    if found:
        return found[-1].domain, "fewest-labels", None
    return start, "start", None


_ORG_RULES = {
    "psd=n": Text("l'enregistrement porte psd=n : c'est le domaine organisationnel (RFC 9989 §4.10.2 règle 1)",
                  "the record carries psd=n: it is the organizational domain (RFC 9989 §4.10.2 rule 1)"),
    "psd=y": Text("un label sous l'enregistrement psd=y (RFC 9989 §4.10.2 règle 2)",
                  "one label below the psd=y record (RFC 9989 §4.10.2 rule 2)"),
    "fewest-labels": Text("l'enregistrement trouvé au nom qui a le moins de labels (RFC 9989 §4.10.2 règle 3)",
                          "the record found at the name with the fewest labels (RFC 9989 §4.10.2 rule 3)"),
    "start": Text("aucun enregistrement : le nom de départ lui-même (RFC 9989 §4.10.2)",
                  "no record: the starting name itself (RFC 9989 §4.10.2)"),
    "psl": Text("suffixe public + 1 label, liste des suffixes publics (RFC 7489 §3.2)",
                "public suffix + 1 label, Public Suffix List (RFC 7489 §3.2)"),
}


def organizational_domain(domain: str, *, standard: str = "9989", resolver: Resolver | None = None, world=None) -> str:
    """The organizational domain of ``domain``: PSL (RFC 7489 §3.2) or the DNS tree walk (RFC 9989 §4.10.2)."""
    if standard == "7489":
        return _organizational(domain, standard, resolver)[0]  # type: ignore[arg-type]  # the PSL needs no DNS
    try:
        return _organizational(domain, standard, resolver or Resolver(world=world))[0]
    except _DNSFailure:
        raise DNSLookupFailed(f"Erreur DNS en cherchant le domaine organisationnel de {domain} : réessayez plus tard.",
                           f"DNS error while looking for the organizational domain of {domain}: try again later.",
                           rfc="RFC 9989 §4.10") from None


def _organizational(domain: str, standard: str, resolver: Resolver, done: list[Lookup] | None = None
                    ) -> tuple[str, str, list[Lookup]]:
    domain = _normalize(domain)
    if standard == "7489":
        return _psl().privatesuffix(domain) or domain, "psl", []
    lookups, error = _tree_walk(resolver, _walk(domain), done)
    if error:
        raise _DNSFailure(domain)
    org, rule, _psd = _select_org(domain, lookups)
    return org, rule, lookups


# ---------------------------------------------------------------------------
# Policy discovery and evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Discovery:
    """Where the policy of a domain was found (or not), under one standard, and by which rule.

    ``rule``: ``author`` (the From domain's own record), ``organizational`` (its organizational domain's),
    ``psd`` (its public suffix domain's, RFC 9989); ``lookups`` lists every query in order.
    """

    standard: str
    domain: str
    record_domain: str | None
    record: DMARCRecord | None
    queried: tuple[str, ...]
    status: str  # found, none, error, multiple (RFC 7489: several records stop discovery)
    rule: str | None = None
    org_domain: str | None = None
    org_rule: str | None = None
    lookups: tuple[Lookup, ...] = ()

    def explain(self) -> Text:
        """Which record governs the domain, found where, by which rule — in one sentence."""
        ref = "RFC 9989 §4.10.1" if self.standard == "9989" else "RFC 7489 §6.6.3"
        if self.status == "error":
            return Text(f"erreur DNS en cherchant la politique ({ref})", f"DNS error while looking for the policy ({ref})")
        if self.status == "multiple":
            return Text(f"plusieurs enregistrements DMARC à _dmarc.{self.record_domain} : la recherche s'arrête, pas de DMARC "
                        f"({ref} étape 5)", f"several DMARC records at _dmarc.{self.record_domain}: discovery stops, no DMARC "
                        f"({ref} step 5)")
        if self.record is None:
            return Text(f"aucun enregistrement DMARC applicable ({', '.join(self.queried)}) : DMARC ne s'applique pas ({ref})",
                        f"no applicable DMARC record ({', '.join(self.queried)}): DMARC does not apply ({ref})")
        which = {"author": Text("celui du domaine de l'auteur (From)", "the author (From) domain's own"),
                 "organizational": Text(f"celui du domaine organisationnel {self.org_domain}",
                                        f"that of the organizational domain {self.org_domain}"),
                 "psd": Text(f"celui du domaine de suffixe public {self.record_domain} (psd=y)",
                             f"that of the public suffix domain {self.record_domain} (psd=y)")}[self.rule or "author"]
        return Text(f"enregistrement appliqué : _dmarc.{self.record_domain}, {which.fr} ({ref})",
                    f"record applied: _dmarc.{self.record_domain}, {which.en} ({ref})")


def discover(domain: str, *, standard: str = "9989", resolver: Resolver | None = None, world=None) -> Discovery:
    """Find the DMARC record that governs ``domain``.

    RFC 9989 §4.10.1: the author domain's record; else, after a tree walk from its parent, the record of its
    organizational domain (§4.10.2), else of its public suffix domain — never a record met in between. Several
    records at one name are all discarded and the walk goes on. RFC 7489 §6.6.3: the domain, then its PSL
    organizational domain; several records stop discovery.
    """
    domain = _normalize(domain)
    resolver = resolver or Resolver(world=world)
    if standard == "7489":
        return _discover_7489(domain, resolver)
    first = _lookup(resolver, domain)
    if first.outcome == "error":
        return Discovery(standard, domain, None, None, (first.name,), "error", lookups=(first,))
    if first.outcome == "record":
        try:
            org, org_rule, lookups = _organizational(domain, "9989", resolver, [first])
        except _DNSFailure:
            org, org_rule = None, None
        return Discovery(standard, domain, domain, parse_record(first.records[0], standard=standard), (first.name,), "found",
                         "author", org, org_rule, (first,))
    walk = _walk(domain)
    rest, error = _tree_walk(resolver, walk[1:])
    lookups = [first] + rest
    queried = tuple(lk.name for lk in lookups)
    if error:
        return Discovery(standard, domain, None, None, queried, "error", lookups=tuple(lookups))
    org, org_rule, psd_name = _select_org(domain, lookups)
    by_name = {lk.domain: lk for lk in lookups}
    chosen, rule = None, None
    if org in by_name and by_name[org].outcome == "record":
        chosen, rule = by_name[org], "organizational"
    elif psd_name is not None:
        chosen, rule = by_name[psd_name], "psd"
    if chosen is None:
        return Discovery(standard, domain, None, None, queried, "none", None, org, org_rule, tuple(lookups))
    return Discovery(standard, domain, chosen.domain, parse_record(chosen.records[0], standard=standard), queried, "found",
                     rule, org, org_rule, tuple(lookups))


def _discover_7489(domain: str, resolver: Resolver) -> Discovery:
    org = _psl().privatesuffix(domain) or domain
    lookups: list[Lookup] = []
    for name, rule in ((domain, "author"), (org, "organizational")):
        if lookups and name == domain:
            break
        lk = _lookup(resolver, name)
        lookups.append(lk)
        queried = tuple(x.name for x in lookups)
        if lk.outcome == "error":
            return Discovery("7489", domain, None, None, queried, "error", lookups=tuple(lookups))
        if lk.outcome == "multiple":
            return Discovery("7489", domain, name, None, queried, "multiple", None, org, "psl", tuple(lookups))
        if lk.outcome == "record":
            return Discovery("7489", domain, name, parse_record(lk.records[0], standard="7489"), queried, "found", rule, org, "psl",
                             tuple(lookups))
    return Discovery("7489", domain, None, None, tuple(x.name for x in lookups), "none", None, org, "psl", tuple(lookups))


def _exists(resolver: Resolver, domain: str) -> bool | None:
    """RFC 9989 §3.2.13 / A.4: a domain does not exist when a query for it gets NXDOMAIN (any type: RFC 8020)."""
    answer = resolver.query(domain, "A")
    if answer.outcome == Outcome.NXDOMAIN:
        return False
    if answer.outcome in (Outcome.TIMEOUT, Outcome.SERVFAIL, Outcome.UNREACHABLE, Outcome.ERROR, Outcome.REFUSED):
        return None
    return True


@dataclass(frozen=True)
class Verdict:
    """DMARC's judgement of one message under one standard, with the trace a student reads: which record was
    used (``discovery``), which of its tags gave the policy (``policy_tag``: p, sp or np), the test mode or
    sampling that lowered it, and every DNS query (:meth:`trace`)."""

    standard: str
    result: str  # pass, fail, none, temperror, permerror
    disposition: str  # none, quarantine, reject
    policy: str | None
    from_domain: str
    record_domain: str | None
    org_from: str
    spf_aligned: bool
    dkim_aligned: bool
    spf_detail: Text
    dkim_detail: Text
    reason: Text
    queried: tuple[str, ...] = ()
    notes: tuple[Text, ...] = ()
    discovery: Discovery | None = None
    policy_tag: str | None = None
    testing: bool = False
    pct: int | None = None
    sample: float | None = None
    sampled: bool | None = None
    from_exists: bool | None = None

    def __str__(self) -> str:
        tag = self.policy_tag or "p"
        return (f"RFC {self.standard}: dmarc={self.result} ({tag}={self.policy or '-'} → {self.disposition}) "
                f"header.from={self.from_domain} — {self.reason}")

    def trace(self) -> list[Text]:
        """The steps, in order: each query and its answer, the record applied and why, the policy tag, the lowering."""
        steps: list[Text] = []
        d = self.discovery
        if d is not None:
            steps += [lk.describe() for lk in d.lookups]
            steps.append(d.explain())
            if d.org_domain:
                rule = _ORG_RULES.get(d.org_rule or "", Text("", ""))
                steps.append(Text(f"domaine organisationnel de {self.from_domain} : {d.org_domain} — {rule.fr}",
                                  f"organizational domain of {self.from_domain}: {d.org_domain} — {rule.en}"))
        if self.policy_tag == "sp" and self.from_exists is False:
            steps.append(Text(f"{self.from_domain} n'existe pas (NXDOMAIN) mais l'enregistrement n'a pas de np= : politique lue "
                              "dans sp= (ou p= sans sp=)", f"{self.from_domain} does not exist (NXDOMAIN) but the record has no "
                              "np=: policy read from sp= (or p= without sp=)"))
        elif self.policy_tag:
            steps.append(_TAG_RULES[self.policy_tag])
        steps.append(Text(f"SPF : {self.spf_detail.fr}", f"SPF: {self.spf_detail.en}"))
        steps.append(Text(f"DKIM : {self.dkim_detail.fr}", f"DKIM: {self.dkim_detail.en}"))
        steps.append(self.reason)
        steps += list(self.notes)
        return steps

    def trace_frame(self) -> "pandas.DataFrame":
        return frame({"étape": range(1, len(self.trace()) + 1), "explication": [str(t) for t in self.trace()]})


_TAG_RULES = {
    "p": Text("politique lue dans p= : l'enregistrement est celui du domaine du From",
              "policy read from p=: the record is the From domain's own"),
    "sp": Text("politique lue dans sp= (ou p= sans sp=) : l'enregistrement est celui d'un domaine parent et le From existe",
               "policy read from sp= (or p= without sp=): the record is a parent domain's and the From exists"),
    "np": Text("politique lue dans np= : le domaine du From n'existe pas (NXDOMAIN, RFC 9989 §4.10.1)",
               "policy read from np=: the From domain does not exist (NXDOMAIN, RFC 9989 §4.10.1)"),
}


@dataclass(frozen=True)
class DMARCEvaluation:
    """The verdicts under RFC 7489 and RFC 9989, and where they differ."""

    rfc7489: Verdict
    rfc9989: Verdict
    differences: tuple[Text, ...]

    @property
    def result(self) -> str:
        """The RFC 9989 result (the current standard)."""
        return self.rfc9989.result

    @property
    def disposition(self) -> str:
        return self.rfc9989.disposition

    def trace(self) -> list[Text]:
        """The RFC 9989 verdict's steps (:meth:`Verdict.trace`): queries, record applied and rule, policy tag."""
        return self.rfc9989.trace()

    def __str__(self) -> str:
        lines = [str(self.rfc9989), str(self.rfc7489)] + [f"≠ {d}" for d in self.differences]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>RFC {v.standard}</td><td><b>{v.result}</b></td><td>{v.disposition}</td>"
            f"<td>{html.escape(str(v.discovery.explain()) if v.discovery else '')}"
            f"{' — ' + (v.policy_tag or 'p') + '=' + v.policy if v.policy else ''}</td><td>{html.escape(v.org_from)}</td>"
            f"<td>{'✔' if v.spf_aligned else '✘'} {html.escape(str(v.spf_detail))}</td>"
            f"<td>{'✔' if v.dkim_aligned else '✘'} {html.escape(str(v.dkim_detail))}</td><td>{html.escape(str(v.reason))}</td></tr>"
            for v in (self.rfc9989, self.rfc7489))
        diff = "".join(f"<li>{html.escape(str(d))}</li>" for d in self.differences)
        return (f"<div><table><tr><th>norme</th><th>dmarc</th><th>traitement</th><th>enregistrement appliqué</th>"
                f"<th>domaine org.</th><th>SPF aligné</th>"
                f"<th>DKIM aligné</th><th>pourquoi</th></tr>{rows}</table>{'<ul>' + diff + '</ul>' if diff else ''}</div>")


_LOWER = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def _aligned(domain: str | None, from_domain: str, mode: str, org_of) -> tuple[bool, str]:
    if not domain:
        return False, ""
    domain = _normalize(domain)
    if mode == "s":
        return domain == from_domain, domain
    return org_of(domain) == org_of(from_domain), domain


def _verdict(standard: str, from_domain: str, spf_result: str | None, spf_domain: str | None,
             dkim: list[tuple[str, str]], resolver: Resolver, nonexistent: bool | None, sample: float | None) -> Verdict:
    found = discover(from_domain, standard=standard, resolver=resolver)
    cache: dict[str, str] = {}
    if found.org_domain and standard == "9989":
        cache[from_domain] = found.org_domain

    def org_of(name: str) -> str:
        if name not in cache:
            cache[name] = _organizational(name, standard, resolver, list(found.lookups))[0]
        return cache[name]

    empty = Text("", "")
    base: dict[str, Any] = dict(queried=found.queried, discovery=found)
    try:
        return _judged(standard, from_domain, spf_result, spf_domain, dkim, resolver, nonexistent, sample, found, org_of)
    except _DNSFailure as failure:
        return Verdict(standard, "temperror", "none", None, from_domain, found.record_domain, from_domain, False, False, empty,
                       empty, Text(f"erreur DNS pendant la vérification ({failure}) : ni pass ni fail (RFC 9989 §5.3.6)",
                                   f"DNS error during validation ({failure}): neither pass nor fail (RFC 9989 §5.3.6)"),
                       **base)


def _judged(standard, from_domain, spf_result, spf_domain, dkim, resolver, nonexistent, sample, found, org_of) -> Verdict:
    empty = Text("", "")
    base: dict[str, Any] = dict(queried=found.queried, discovery=found)
    if found.status == "error":
        return Verdict(standard, "temperror", "none", None, from_domain, None, from_domain, False, False, empty, empty,
                       found.explain(), **base)
    org_from = org_of(from_domain)
    if found.status == "multiple" or found.record is None:
        return Verdict(standard, "none", "none", None, from_domain, found.record_domain, org_from, False, False, empty, empty,
                       found.explain(), **base)
    record = found.record
    if not record.valid:
        reason = Text("enregistrement DMARC inutilisable, aucun traitement DMARC : " +
                      "; ".join(n.message.fr for n in record.notes if n.severity == "error"),
                      "unusable DMARC record, no DMARC processing: " +
                      "; ".join(n.message.en for n in record.notes if n.severity == "error"))
        return Verdict(standard, "none", "none", None, from_domain, found.record_domain, org_from, False, False, empty, empty,
                       reason, **base)
    notes: list[Text] = []
    spf_ok = spf_result == "pass"
    spf_aligned, spf_dom = _aligned(spf_domain, from_domain, record.aspf, org_of) if spf_ok else (False, _normalize(spf_domain or ""))
    spf_detail = _align_text("SPF", spf_ok, spf_dom, from_domain, record.aspf, spf_aligned, org_of)
    dkim_aligned = False
    dkim_texts: list[Text] = []
    for domain, result in dkim:
        ok = result == "pass"
        aligned, dom = _aligned(domain, from_domain, record.adkim, org_of) if ok else (False, _normalize(domain))
        dkim_aligned = dkim_aligned or aligned
        dkim_texts.append(_align_text("DKIM", ok, dom, from_domain, record.adkim, aligned, org_of))
    dkim_detail = Text(" ; ".join(t.fr for t in dkim_texts) or "aucune signature DKIM", "; ".join(t.en for t in dkim_texts) or "no DKIM signature")
    tag, exists = "p", None
    if found.rule != "author":  # the record is a parent's: sp, or np for a From domain that does not exist (9989)
        tag = "sp"
        if standard == "9989":
            exists = (not nonexistent) if nonexistent is not None else _exists(resolver, from_domain)
            if exists is None and record.np and record.np != (record.sp or record.p):
                raise _DNSFailure(from_domain)  # np or sp: which one is not known
            if exists is False and record.np:
                tag = "np"
    policy = {"p": record.p, "sp": record.sp or record.p, "np": record.np}[tag] or "none"
    pct = record.pct if standard == "7489" else None
    sampled = None
    if spf_aligned or dkim_aligned:
        result, disposition = "pass", "none"
        reason = Text(f"{'SPF' if spf_aligned else 'DKIM'} passe et est aligné avec le From ({from_domain})",
                      f"{'SPF' if spf_aligned else 'DKIM'} passes and is aligned with the From ({from_domain})")
    else:
        result, disposition = "fail", policy
        reason = Text(f"ni SPF ni DKIM ne passent alignés avec {from_domain} : politique {policy}",
                      f"neither SPF nor DKIM pass aligned with {from_domain}: policy {policy}")
        if standard == "9989" and record.t and policy != "none":
            disposition = _LOWER[policy]
            notes.append(Text(f"t=y : politique appliquée un cran plus bas ({disposition}) (RFC 9989 §4.7)",
                              f"t=y: policy applied one level lower ({disposition}) (RFC 9989 §4.7)"))
        if standard == "7489" and policy != "none" and pct is not None and (pct < 100 or "pct" in record.tags):
            if sample is None:
                sample = random.random()
            sampled = sample * 100 < pct
            if sampled:
                notes.append(Text(f"pct={pct} : tirage {sample:.2f} < {pct / 100:.2f}, message retenu : politique {policy} appliquée "
                                  "(RFC 7489 §6.6.4)", f"pct={pct}: draw {sample:.2f} < {pct / 100:.2f}, message selected: "
                                  f"policy {policy} applied (RFC 7489 §6.6.4)"))
            else:
                disposition = _LOWER[policy]
                notes.append(Text(f"pct={pct} : tirage {sample:.2f} ≥ {pct / 100:.2f}, message non retenu : politique un cran plus bas "
                                  f"({disposition}) (RFC 7489 §6.6.4)", f"pct={pct}: draw {sample:.2f} ≥ {pct / 100:.2f}, message not "
                                  f"selected: next lower policy ({disposition}) (RFC 7489 §6.6.4)"))
    if org_from != from_domain and from_domain.endswith("." + org_from):
        notes.append(Text(f"domaine organisationnel de {from_domain} : {org_from} — en alignement relâché, tout sous-domaine "
                          f"de {org_from} s'aligne avec lui",
                          f"organizational domain of {from_domain}: {org_from} — under relaxed alignment, any subdomain of "
                          f"{org_from} aligns with it"))
    return Verdict(standard, result, disposition, policy, from_domain, found.record_domain, org_from, spf_aligned, dkim_aligned,
                   spf_detail, dkim_detail, reason, found.queried, tuple(notes), found, tag, bool(record.t and standard == "9989"),
                   pct, sample if sampled is not None else None, sampled, exists)


def _align_text(method: str, ok: bool, domain: str, from_domain: str, mode: str, aligned: bool, org_of) -> Text:
    if not domain:
        return Text(f"{method} : pas de domaine", f"{method}: no domain")
    if not ok:
        return Text(f"{method} ({domain}) ne passe pas", f"{method} ({domain}) does not pass")
    if mode == "s":
        return Text(f"{method} {domain} {'=' if aligned else '≠'} {from_domain} (strict)", f"{method} {domain} {'=' if aligned else '≠'} {from_domain} (strict)")
    return Text(f"{method} {domain} → {org_of(domain)} {'=' if aligned else '≠'} {org_of(from_domain)} (relâché)",
                f"{method} {domain} → {org_of(domain)} {'=' if aligned else '≠'} {org_of(from_domain)} (relaxed)")


def evaluate(from_domain: str, *, spf_result: str | None = None, spf_domain: str | None = None,
             dkim: list[tuple[str, str]] | None = None, resolver: Resolver | None = None, world=None,
             nonexistent: bool | None = None, sample: float | None = None) -> DMARCEvaluation:
    """Judge a message by DMARC under RFC 7489 and RFC 9989.

    Parameters
    ----------
    from_domain : str
        The domain of the header From (RFC5322.From).
    spf_result, spf_domain : str
        SPF's result and the domain it checked (MAIL FROM's, or HELO's for a bounce).
    dkim : list of (domain, result)
        Each DKIM signature's ``d=`` and result (``"pass"``, ``"fail"``…). A signature whose key is in
        testing mode should be passed as not ``"pass"`` (see :attr:`labmail.dkim.SignatureCheck.counts_for_dmarc`).
    nonexistent : bool, optional
        The From domain does not exist in DNS (RFC 9989's ``np=`` then applies). ``None`` (default): asked to the DNS
        when it matters (an NXDOMAIN for the domain, RFC 9989 §3.2.13).
    sample : float in [0, 1), optional
        RFC 7489's ``pct`` sampling draw (a message is selected when ``sample × 100 < pct``); random by default.
    """
    from_domain = _normalize(from_domain)
    resolver = resolver or Resolver(world=world)
    verdicts = {s: _verdict(s, from_domain, spf_result, spf_domain, list(dkim or []), resolver, nonexistent, sample) for s in STANDARDS}
    old, new = verdicts["7489"], verdicts["9989"]
    differences: list[Text] = []
    if old.org_from != new.org_from:
        differences.append(Text(f"domaine organisationnel : {old.org_from} (liste des suffixes publics, RFC 7489) ≠ "
                                f"{new.org_from} (parcours DNS, RFC 9989)",
                                f"organizational domain: {old.org_from} (Public Suffix List, RFC 7489) ≠ {new.org_from} "
                                f"(DNS tree walk, RFC 9989)"))
    if old.result != new.result:
        differences.append(Text(f"résultat : {old.result} (RFC 7489) ≠ {new.result} (RFC 9989)",
                                f"result: {old.result} (RFC 7489) ≠ {new.result} (RFC 9989)"))
    if old.disposition != new.disposition:
        differences.append(Text(f"traitement : {old.disposition} (RFC 7489) ≠ {new.disposition} (RFC 9989)",
                                f"disposition: {old.disposition} (RFC 7489) ≠ {new.disposition} (RFC 9989)"))
    return DMARCEvaluation(old, new, tuple(differences))


def report_authorization(policy_domain: str, record: DMARCRecord | str, *, resolver: Resolver | None = None,
                         world=None) -> list[tuple[str, bool, Text]]:
    """For each rua/ruf address outside the policy domain's organization, is the destination authorised?
    (``<policy-domain>._report._dmarc.<destination>`` TXT ``v=DMARC1``, RFC 7489 §7.1)"""
    if isinstance(record, str):
        record = parse_record(record)
    resolver = resolver or Resolver(world=world)
    policy_domain = _normalize(policy_domain)
    out = []
    for uri in record.rua + record.ruf:
        dest = uri.split("@", 1)[1].lower()
        same = organizational_domain(dest, standard="7489") == organizational_domain(policy_domain, standard="7489")
        if same:
            out.append((uri, True, Text("même organisation : pas d'autorisation nécessaire", "same organization: no authorization needed")))
            continue
        name = f"{policy_domain}._report._dmarc.{dest}"
        answer = resolver.query(name, "TXT")
        ok = any(r.value.startswith("v=DMARC1") for r in answer.records)
        out.append((uri, ok, Text(f"{name} {'autorise' if ok else 'n’autorise pas'} ces rapports",
                                  f"{name} {'authorizes' if ok else 'does not authorize'} these reports")))
    return out
