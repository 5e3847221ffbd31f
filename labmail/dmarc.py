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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .dns import Outcome, Resolver
from .errors import LabmailError
from .i18n import Text, tr

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["DMARCRecord", "parse_record", "organizational_domain", "discover", "evaluate", "DMARCEvaluation",
           "Verdict", "report_authorization", "STANDARDS", "PSL_PATH"]

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
        import pandas as pd

        return pd.DataFrame([{"balise": k, "valeur": v, "signification": str(_TAG_MEANINGS.get(k, Text("balise inconnue (ignorée)",
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


def is_dmarc_record(text: str) -> bool:
    return re.match(r"^v\s*=\s*DMARC1\s*(;|$)", text) is not None


def parse_record(text: str, *, standard: str = "9989") -> DMARCRecord:
    """Parse and validate a DMARC record under ``standard`` ("7489" or "9989")."""
    if standard not in STANDARDS:
        raise LabmailError(f"standard « {standard} » inconnu : « 7489 » ou « 9989 ».", f"unknown standard \"{standard}\": \"7489\" or \"9989\".")
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
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            note("error", "syntax", f"« {part} » n'est pas une balise=valeur", f"\"{part}\" is not a tag=value", f"{ref} §4.7")
            valid = False
            continue
        key_l = key.lower()
        if index == 0 and (key_l != "v" or value != "DMARC1"):
            break
        if key_l in tags:
            note("warning", "duplicate", f"balise {key_l} répétée : seule la première compte", f"tag {key_l} repeated: only the first counts",
                 f"{ref} §4.7")
            continue
        tags[key_l] = value
    if tags.get("v") != "DMARC1":
        note("error", "version", "un enregistrement DMARC commence par « v=DMARC1 » (en majuscules)",
             "a DMARC record starts with \"v=DMARC1\" (upper case)", f"{ref} §4.7")
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
    if p is None:
        if rua:
            note("warning", "no-p", "pas de p= valide mais un rua= valide : traité comme p=none",
                 "no valid p= but a valid rua=: treated as p=none", f"{ref} §4.7")
            p = "none"
        else:
            note("error", "no-p", "p= manquant ou invalide (et pas de rua=) : l'enregistrement est ignoré",
                 "p= missing or invalid (and no rua=): the record is ignored", f"{ref} §4.7")
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
    return domain.strip().rstrip(".").lower()


def _fetch(resolver: Resolver, domain: str) -> tuple[str, list[str]]:
    """Valid DMARC records at ``_dmarc.<domain>``: ("ok", records) or ("error", [])."""
    answer = resolver.query(f"_dmarc.{domain}", "TXT")
    if answer.outcome in (Outcome.TIMEOUT, Outcome.SERVFAIL, Outcome.UNREACHABLE, Outcome.ERROR, Outcome.REFUSED):
        return "error", []
    return "ok", [r.value for r in answer.records if is_dmarc_record(r.value)]


def _walk(domain: str) -> list[str]:
    """RFC 9989 tree walk: the author domain, then (after a jump to 7 labels for long names) one label less each time."""
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


def organizational_domain(domain: str, *, standard: str = "9989", resolver: Resolver | None = None, world=None) -> str:
    """The organizational domain of ``domain``: PSL (RFC 7489) or DNS tree walk (RFC 9989)."""
    domain = _normalize(domain)
    if standard == "7489":
        return _psl().privatesuffix(domain) or domain
    resolver = resolver or Resolver(world=world)
    found: list[tuple[str, DMARCRecord]] = []
    for name in _walk(domain):
        status, records = _fetch(resolver, name)
        if status == "ok" and len(records) == 1:
            record = parse_record(records[0], standard="9989")
            if record.psd == "n":
                return name
            if record.psd == "y":
                below = domain.split(".")[-(len(name.split(".")) + 1):]
                return ".".join(below) if len(below) > len(name.split(".")) else domain
            found.append((name, record))
    if found:
        return min(found, key=lambda item: len(item[0].split(".")))[0]
    return domain


# ---------------------------------------------------------------------------
# Policy discovery and evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Discovery:
    """Where the policy of a domain was found (or not), under one standard."""

    standard: str
    domain: str
    record_domain: str | None
    record: DMARCRecord | None
    queried: tuple[str, ...]
    status: str  # found, none, error, multiple


def discover(domain: str, *, standard: str = "9989", resolver: Resolver | None = None, world=None) -> Discovery:
    """Find the DMARC record that governs ``domain``: RFC 7489 (the domain, then its PSL organizational domain)
    or RFC 9989 (the tree walk)."""
    domain = _normalize(domain)
    resolver = resolver or Resolver(world=world)
    if standard == "7489":
        names = [domain]
        org = organizational_domain(domain, standard="7489")
        if org != domain:
            names.append(org)
    else:
        names = _walk(domain)
    queried = []
    for name in names:
        queried.append(f"_dmarc.{name}")
        status, records = _fetch(resolver, name)
        if status == "error":
            return Discovery(standard, domain, None, None, tuple(queried), "error")
        if len(records) > 1:
            return Discovery(standard, domain, name, None, tuple(queried), "multiple")
        if records:
            return Discovery(standard, domain, name, parse_record(records[0], standard=standard), tuple(queried), "found")
    return Discovery(standard, domain, None, None, tuple(queried), "none")


@dataclass(frozen=True)
class Verdict:
    """DMARC's judgement of one message under one standard."""

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

    def __str__(self) -> str:
        return (f"RFC {self.standard}: dmarc={self.result} (p={self.policy or '-'} → {self.disposition}) "
                f"header.from={self.from_domain} — {self.reason}")


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

    def __str__(self) -> str:
        lines = [str(self.rfc9989), str(self.rfc7489)] + [f"≠ {d}" for d in self.differences]
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>RFC {v.standard}</td><td><b>{v.result}</b></td><td>{v.disposition}</td><td>{html.escape(v.org_from)}</td>"
            f"<td>{'✔' if v.spf_aligned else '✘'} {html.escape(str(v.spf_detail))}</td>"
            f"<td>{'✔' if v.dkim_aligned else '✘'} {html.escape(str(v.dkim_detail))}</td><td>{html.escape(str(v.reason))}</td></tr>"
            for v in (self.rfc9989, self.rfc7489))
        diff = "".join(f"<li>{html.escape(str(d))}</li>" for d in self.differences)
        return (f"<div><table><tr><th>norme</th><th>dmarc</th><th>traitement</th><th>domaine org.</th><th>SPF aligné</th>"
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
             dkim: list[tuple[str, str]], resolver: Resolver, nonexistent: bool) -> Verdict:
    found = discover(from_domain, standard=standard, resolver=resolver)
    cache: dict[str, str] = {}

    def org_of(name: str) -> str:
        if name not in cache:
            cache[name] = organizational_domain(name, standard=standard, resolver=resolver)
        return cache[name]

    org_from = org_of(from_domain)
    notes: list[Text] = []
    if found.status == "error":
        return Verdict(standard, "temperror", "none", None, from_domain, None, org_from, False, False, Text("", ""), Text("", ""),
                       Text("erreur DNS en cherchant la politique DMARC", "DNS error while looking for the DMARC policy"), found.queried)
    if found.status == "multiple":
        return Verdict(standard, "none", "none", None, from_domain, found.record_domain, org_from, False, False, Text("", ""),
                       Text("", ""), Text(f"plusieurs enregistrements DMARC à _dmarc.{found.record_domain} : aucune politique ne s'applique",
                                          f"several DMARC records at _dmarc.{found.record_domain}: no policy applies"), found.queried)
    record = found.record
    if record is None or not record.valid:
        reason = (Text("aucun enregistrement DMARC trouvé (" + ", ".join(found.queried) + ")",
                       "no DMARC record found (" + ", ".join(found.queried) + ")") if record is None else
                  Text("enregistrement DMARC invalide : " + "; ".join(n.message.fr for n in record.notes if n.severity == "error"),
                       "invalid DMARC record: " + "; ".join(n.message.en for n in record.notes if n.severity == "error")))
        return Verdict(standard, "none", "none", None, from_domain, found.record_domain, org_from, False, False, Text("", ""),
                       Text("", ""), reason, found.queried)
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
    subdomain = found.record_domain != from_domain
    policy = record.policy_for(subdomain=subdomain, nonexistent=nonexistent)
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
            notes.append(Text(f"t=y : politique appliquée un cran plus bas ({disposition})", f"t=y: policy applied one level lower ({disposition})"))
        if standard == "7489" and record.pct < 100 and policy != "none":
            notes.append(Text(f"pct={record.pct} : la politique ne s'applique qu'à {record.pct} % des messages en échec",
                              f"pct={record.pct}: the policy applies to only {record.pct}% of failing messages"))
    if org_from != from_domain and from_domain.endswith("." + org_from):
        notes.append(Text(f"domaine organisationnel de {from_domain} : {org_from} — en alignement relâché, tout sous-domaine "
                          f"de {org_from} s'aligne avec lui",
                          f"organizational domain of {from_domain}: {org_from} — under relaxed alignment, any subdomain of "
                          f"{org_from} aligns with it"))
    return Verdict(standard, result, disposition, policy, from_domain, found.record_domain, org_from, spf_aligned, dkim_aligned,
                   spf_detail, dkim_detail, reason, found.queried, tuple(notes))


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
             nonexistent: bool = False) -> DMARCEvaluation:
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
    nonexistent : bool
        The From domain does not exist in DNS (RFC 9989's ``np=`` then applies).
    """
    from_domain = _normalize(from_domain)
    resolver = resolver or Resolver(world=world)
    verdicts = {s: _verdict(s, from_domain, spf_result, spf_domain, list(dkim or []), resolver, nonexistent) for s in STANDARDS}
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
