"""The domain audit: Mailcow's "DNS" page, done right.

:func:`domain` computes what the world expects for a mail domain (from the mail host and its addresses, the
domain's DKIM key, the service ports) and compares it with what the domain's **authoritative** servers publish
(no cache in between). Each row says what was expected, what was found, a status — ``OK``, ``WRONG``,
``MISSING``, ``OPTIONAL``, ``INFO`` —, why, how to fix it, when resolvers will see a fix (TTL), and the RFC.

Where Mailcow's page falls short (https://docs.mailcow.email/getstarted/prerequisite-dns/), this one does not: a missing record is
MISSING, not "optional"; SPF is *evaluated* for the server's addresses with labmail's RFC 7208 engine (CIDR,
include, redirect, split strings and IPv4-only servers work); DKIM compares the key itself, whatever the tag
order, with ``k=rsa`` implicit; names compare case-insensitively; MX priorities are shown; an MX pointing to a
CNAME or an IP is WRONG; DMARC is validated, report addresses included; two SPF records, a truncated DKIM key,
quotes pasted into TXT and a doubled name are each recognised and named.

>>> audit = domain("jean.labmail.cloud")       # doctest: +SKIP
>>> audit.to_dataframe()                        # doctest: +SKIP
"""

from __future__ import annotations

import html
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dns.name

from .resolver import LookupResult, Outcome, Resolver
from .errors import LabmailError
from .i18n import Text, frame, tr
from .state import Layout
from .world import World, current

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Row", "DomainAudit", "domain", "message", "MessageDiagnosis", "STATUSES"]

STATUSES = ("OK", "WRONG", "MISSING", "OPTIONAL", "INFO")
_COLORS = {"OK": "#1b7f3b", "WRONG": "#b00020", "MISSING": "#b00020", "OPTIONAL": "#777", "INFO": "#1565c0"}
_BACKGROUNDS = {"OK": "#e8f5e9", "WRONG": "#fdecea", "MISSING": "#fdecea", "OPTIONAL": "#f5f5f5", "INFO": "#e3f2fd"}
#: RFC 6186 / RFC 8314 client SRV records: (owner prefix, port).
CLIENT_SRV = (("_submission._tcp", 587), ("_submissions._tcp", 465), ("_imap._tcp", 143), ("_imaps._tcp", 993),
              ("_pop3._tcp", 110), ("_pop3s._tcp", 995))


@dataclass(frozen=True)
class Row:
    """One line of the audit."""

    name: str
    type: str
    expected: str
    found: tuple[str, ...]
    status: str
    why: Text
    fix: Text
    ttl: int | None = None
    rfc: str = ""
    role: str = ""

    @property
    def visible_in(self) -> str:
        if self.ttl is None:
            return ""
        return tr(f"visible par les résolveurs sous {self.ttl} s après une correction",
                  f"visible to resolvers within {self.ttl} s after a fix")


@dataclass(frozen=True)
class DomainAudit:
    """The audit of one domain: rows, and the expected records as a zone file."""

    domain: str
    mail_host: str
    rows: tuple[Row, ...]
    expected_records: tuple[tuple[str, str, str], ...] = field(repr=False, default=())

    @property
    def ok(self) -> bool:
        """No row WRONG or MISSING."""
        return not any(r.status in ("WRONG", "MISSING") for r in self.rows)

    def row(self, role: str) -> Row:
        return next(r for r in self.rows if r.role == role)

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame([{"nom": r.name, "type": r.type, "attendu": r.expected, "trouvé": "\n".join(r.found),
                              "statut": r.status, "pourquoi": str(r.why), "correction": str(r.fix), "ttl": r.ttl,
                              "RFC": r.rfc} for r in self.rows],
                            columns=["nom", "type", "attendu", "trouvé", "statut", "pourquoi", "correction", "ttl", "RFC"])

    def fix_record(self, row: Row) -> tuple[str, str, str] | None:
        """What to type in the zone panel to fix ``row``: (name relative to the zone, type, value without quotes).

        None for rows fixed elsewhere (the server's PTR, a block list) or already OK.

        >>> audit.fix_record(audit.row("dmarc"))          # doctest: +SKIP
        ('_dmarc', 'TXT', 'v=DMARC1; p=quarantine')
        """
        if row.status in ("OK", "INFO"):
            return None
        suffix = "." + self.domain
        name = row.name.rstrip(".").lower()
        relative = "@" if name == self.domain else (name[: -len(suffix)] if name.endswith(suffix) else None)
        for rec_name, rtype, value in self.expected_records:
            if rec_name == relative and rtype == row.type:
                if rtype == "TXT":
                    value = value.replace('" "', "").strip('"')  # the panel splits long strings itself
                return rec_name, rtype, value
        return None

    def zone_file(self, ttl: int = 300) -> str:
        """The expected records of the domain as a BIND master file (``named-checkzone`` accepts it)."""
        lines = [f"$ORIGIN {self.domain}.", f"$TTL {ttl}",
                 f"@ IN SOA dns.{self.domain.split('.', 1)[1]}. hostmaster.{self.domain}. 1 3600 900 1209600 60",
                 f"@ IN NS dns.{self.domain.split('.', 1)[1]}."]
        for name, rtype, value in self.expected_records:
            lines.append(f"{name} IN {rtype} {value}")
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        width = max(len(r.name) for r in self.rows)
        lines = [f"{self.domain} — {tr('serveur', 'server')} {self.mail_host}"]
        for r in self.rows:
            lines.append(f"{r.status:<8} {r.name:<{width}} {r.type:<5} {', '.join(r.found) or '—'}")
            if r.status in ("WRONG", "MISSING"):
                lines.append(f"{'':8} ↳ {r.why} → {r.fix}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left;padding:2px 6px'>{html.escape(h)}</th>" for h in (
            tr("nom", "name"), "type", tr("attendu", "expected"), tr("trouvé", "found"), tr("statut", "status"),
            tr("pourquoi", "why"), tr("correction", "fix"), "TTL", "RFC"))
        rows = []
        for r in self.rows:
            found = "<br>".join(html.escape(f) for f in r.found) or "—"
            ttl = html.escape(r.visible_in) if r.status in ("WRONG", "MISSING") else ("" if r.ttl is None else str(r.ttl))
            rows.append(
                f"<tr style='background:{_BACKGROUNDS[r.status]}'>"
                f"<td style='padding:2px 6px'><code>{html.escape(r.name)}</code></td><td>{r.type}</td>"
                f"<td style='max-width:24em;word-break:break-all'><code>{html.escape(r.expected)}</code></td>"
                f"<td style='max-width:24em;word-break:break-all'><code>{found}</code></td>"
                f"<td style='color:{_COLORS[r.status]};font-weight:bold'>{r.status}</td>"
                f"<td>{html.escape(str(r.why))}</td><td>{html.escape(str(r.fix))}</td><td>{ttl}</td><td>{r.rfc}</td></tr>")
        return (f"<div><b>{html.escape(self.domain)}</b> — {html.escape(self.mail_host)}"
                f"<table style='border-collapse:collapse'><tr>{head}</tr>{''.join(rows)}</table></div>")


# ---------------------------------------------------------------------------
# Lookups: the zone's own servers for its names, the world's resolver for the rest
# ---------------------------------------------------------------------------
class _Lookups:
    """Queries of one audit. Names outside the zone (the server's addresses and PTR, the DNSBL, the zone's
    nameservers) may come from ``shared``, a cache common to the audits of a class: they are the same for all."""

    def __init__(self, domain: str, world: World, timeout: float, shared: dict | None = None) -> None:
        self.domain = domain
        self.shared = shared if shared is not None else {}
        self.recursive = Resolver(world=world, timeout=timeout)
        self._inside: dict[tuple[str, str], LookupResult] = {}
        servers = self._zone_servers(world)
        self.authoritative = Resolver(servers, timeout=timeout) if servers else self.recursive
        self.negative_ttl = 300

    def _zone_servers(self, world: World) -> list[tuple[str, int]]:
        ns = self.recursive.query(self.domain, "NS")
        servers = []
        for record in ns.records:
            for addr in self.get(record.value, "A").values:
                try:
                    endpoint = world.endpoint(addr, 53)
                except LabmailError:
                    continue
                if endpoint not in servers:
                    servers.append(endpoint)
        return servers

    def prefetch(self, questions: list[tuple[str, str]]) -> None:
        """Ask the zone's servers these names together (their round trips overlap); ``get`` then reads them."""
        wanted = [(name.rstrip(".").lower(), rtype) for name, rtype in questions]
        wanted = [q for q in dict.fromkeys(wanted) if q not in self._inside]
        for question, result in zip(wanted, self.authoritative.query_many(wanted)):
            self._inside[question] = result

    def get(self, name: str, rtype: str) -> LookupResult:
        key = name.rstrip(".").lower()
        inside = key == self.domain or key.endswith("." + self.domain)
        if inside:  # asked once per audit (the apex TXT serves both the SPF and the DMARC-at-the-apex rows)
            result = self._inside.get((key, rtype))
            if result is None:
                result = self._inside[(key, rtype)] = self.authoritative.query(name, rtype)
            if result.soa is not None:
                self.negative_ttl = result.soa.ttl
            return result
        cached = self.shared.get((key, rtype))
        if cached is None:
            cached = self.recursive.query(name, rtype)
            if cached.outcome in (Outcome.ANSWER, Outcome.NXDOMAIN, Outcome.NODATA):
                self.shared[(key, rtype)] = cached
        return cached


def _missing_ttl(look: _Lookups) -> int:
    return look.negative_ttl


# ---------------------------------------------------------------------------
# The rows
# ---------------------------------------------------------------------------
def _server_rows(look: _Lookups, host: str) -> tuple[list[Row], list[str]]:
    rows, addresses = [], []
    for rtype in ("A", "AAAA"):
        result = look.get(host, rtype)
        if result.cnames:
            rows.append(Row(host, rtype, tr("une adresse", "an address"), tuple(c.value for c in result.cnames), "WRONG",
                            Text(f"{host} est un alias (CNAME) : le nom du serveur de messagerie doit porter ses adresses",
                                 f"{host} is an alias (CNAME): the mail server's name must carry its addresses"),
                            Text("remplacez le CNAME par des enregistrements A/AAAA", "replace the CNAME by A/AAAA records"),
                            None, "RFC 2181 §10.3", f"server-{rtype}"))
            continue
        if not result.records:
            if rtype == "A":
                rows.append(Row(host, rtype, tr("l'adresse IPv4 du serveur", "the server's IPv4 address"), (), "MISSING",
                                Text(f"{host} n'a pas d'adresse IPv4 : personne ne peut lui livrer de courrier",
                                     f"{host} has no IPv4 address: nobody can deliver mail to it"),
                                Text(f"publiez l'enregistrement A de {host}", f"publish {host}'s A record"), None, "RFC 5321 §5.1",
                                "server-A"))
            continue
        addresses += result.values
        rows.append(Row(host, rtype, ", ".join(result.values), tuple(result.values), "OK",
                        Text("adresse(s) du serveur de messagerie", "the mail server's address(es)"), Text("", ""),
                        result.records[0].ttl, "RFC 5321 §5.1", f"server-{rtype}"))
    for addr in addresses:
        reverse = ipaddress.ip_address(addr).reverse_pointer
        ptr = look.get(reverse, "PTR")
        names = [v.rstrip(".").lower() for v in ptr.values]
        confirmed = host.lower() in names and addr in look.get(host, "AAAA" if ":" in addr else "A").values
        status = "OK" if confirmed else ("MISSING" if not names else "WRONG")
        rows.append(Row(reverse, "PTR", f"{host}.", tuple(f"{n}." for n in names), status,
                        Text("le DNS inverse de l'adresse doit donner le nom du serveur, qui redonne l'adresse (FCrDNS) ; "
                             "Gmail l'exige" if status != "OK" else "DNS inverse confirmé (FCrDNS)",
                             "the address's reverse DNS must give the server's name, which gives the address back (FCrDNS); "
                             "Gmail requires it" if status != "OK" else "forward-confirmed reverse DNS"),
                        Text("demandez au fournisseur de l'adresse IP de régler le PTR" if status != "OK" else "",
                             "ask the IP address provider to set the PTR" if status != "OK" else ""),
                        ptr.records[0].ttl if ptr.records else None, "RFC 8601 §3 (iprev)", f"ptr-{addr}"))
        if ":" not in addr:
            listed = look.get(".".join(reversed(addr.split("."))) + ".dnsbl.test", "A")
            status = "WRONG" if listed.records else "OK"
            rows.append(Row(f"{addr} @ dnsbl.test", "A", tr("non listée", "not listed"), tuple(listed.values),
                            status, Text("l'adresse est sur une liste de blocage : les destinataires refuseront le courrier"
                                         if listed.records else "l'adresse n'est pas sur la liste de blocage",
                                         "the address is on a block list: receivers will refuse the mail" if listed.records
                                         else "the address is not on the block list"),
                            Text("trouvez pourquoi (relais ouvert ? compte piraté ?), corrigez, puis demandez le retrait"
                                 if listed.records else "", "find out why (open relay? hacked account?), fix it, then ask "
                                 "for delisting" if listed.records else ""), None, "RFC 5782", f"dnsbl-{addr}"))
    return rows, addresses


def _mx_row(look: _Lookups, domain: str, host: str) -> Row:
    result = look.get(domain, "MX")
    found = tuple(r.value for r in result.records)
    expected = f"10 {host}."
    if not result.records:
        return Row(domain, "MX", expected, (), "MISSING",
                   Text("sans MX, aucun courrier entrant n'est possible", "without an MX no incoming mail is possible"),
                   Text(f"ajoutez « {domain}. MX 10 {host}. »", f"add \"{domain}. MX 10 {host}.\""),
                   _missing_ttl(look), "RFC 5321 §5.1", "mx")
    targets = [(r.rdata.preference, r.rdata.exchange.to_text().rstrip(".").lower()) for r in result.records]
    ttl = result.records[0].ttl
    if targets == [(0, "")]:
        return Row(domain, "MX", expected, found, "WRONG",
                   Text("MX nul (« 0 . ») : le domaine déclare ne recevoir aucun courrier", "null MX (\"0 .\"): the domain "
                        "declares it accepts no mail"), Text(f"remplacez-le par « MX 10 {host}. »", f"replace it by \"MX 10 {host}.\""),
                   ttl, "RFC 7505", "mx")
    for _pref, target in targets:
        if re.fullmatch(r"[0-9.]+|[0-9a-f:]+", target):
            return Row(domain, "MX", expected, found, "WRONG",
                       Text(f"un MX pointe vers une adresse IP ({target}) : il doit nommer un hôte",
                            f"an MX points to an IP address ({target}): it must name a host"),
                       Text(f"utilisez « MX 10 {host}. »", f"use \"MX 10 {host}.\""), ttl, "RFC 5321 §5.1", "mx")
        alias = look.get(target, "A")
        if alias.cnames:
            return Row(domain, "MX", expected, found, "WRONG",
                       Text(f"la cible {target} est un alias (CNAME) : un MX doit nommer le nom canonique",
                            f"the target {target} is an alias (CNAME): an MX must name the canonical name"),
                       Text(f"utilisez « MX 10 {host}. »", f"use \"MX 10 {host}.\""), ttl, "RFC 2181 §10.3", "mx")
    if host.lower() not in [t for _p, t in targets]:
        return Row(domain, "MX", expected, found, "WRONG",
                   Text(f"aucun MX ne désigne {host} : le courrier part ailleurs", f"no MX names {host}: mail goes elsewhere"),
                   Text(f"mettez « MX 10 {host}. »", f"set \"MX 10 {host}.\""), ttl, "RFC 5321 §5.1", "mx")
    return Row(domain, "MX", expected, found, "OK",
               Text(f"le courrier pour {domain} va à {host} (priorité : plus petit = préféré)",
                    f"mail for {domain} goes to {host} (priority: lower is preferred)"), Text("", ""), ttl, "RFC 5321 §5.1", "mx")


def _txt_values(result: LookupResult) -> list[str]:
    return [r.value for r in result.records]


def _spf_row(look: _Lookups, domain: str, addresses: list[str]) -> Row:
    from .spf import evaluate, is_spf_record

    expected = "v=spf1 " + " ".join(f"ip4:{a}" for a in addresses if ":" not in a) + " -all"
    result = look.get(domain, "TXT")
    values = _txt_values(result)
    spf = [v for v in values if is_spf_record(v)]
    quoted = [v for v in values if v.startswith('"') and v.strip('"').lower().startswith("v=spf1")]
    spaced = [v for v in values if v != v.lstrip() and v.strip().lower().startswith("v=spf1")]
    ttl = result.records[0].ttl if result.records else _missing_ttl(look)
    if quoted:
        return Row(domain, "TXT", expected, tuple(quoted), "WRONG",
                   Text("des guillemets ont été collés dans la valeur : ce n'est pas un enregistrement SPF",
                        "quotes were pasted into the value: this is not an SPF record"),
                   Text("republiez la valeur sans guillemets", "publish the value again without quotes"), ttl, "RFC 7208 §4.5", "spf")
    if spaced:
        return Row(domain, "TXT", expected, tuple(spaced), "WRONG",
                   Text("espace avant « v=spf1 » : les récepteurs ne le reconnaissent pas", "space before \"v=spf1\": receivers "
                        "do not recognise it"), Text("retirez l'espace", "remove the space"), ttl, "RFC 7208 §4.5", "spf")
    if not spf:
        return Row(domain, "TXT", expected, tuple(values), "MISSING",
                   Text("pas d'enregistrement SPF : les destinataires ne savent pas quels serveurs envoient pour vous",
                        "no SPF record: receivers cannot tell which servers send for you"),
                   Text(f"publiez « {expected} » en TXT sur {domain}", f"publish \"{expected}\" as TXT on {domain}"),
                   ttl, "RFC 7208 §3", "spf")
    if len(spf) > 1:
        return Row(domain, "TXT", expected, tuple(spf), "WRONG",
                   Text(f"{len(spf)} enregistrements SPF : permerror pour tout le courrier", f"{len(spf)} SPF records: permerror "
                        "for all mail"), Text("fusionnez-les en un seul", "merge them into one"), ttl, "RFC 7208 §4.5", "spf")
    failing: list[str] = []
    failing_v6: list[str] = []
    for addr in addresses:
        # the record as the zone's own servers publish it; includes and names through the resolver
        verdict = evaluate(addr, f"postmaster@{domain}", domain, resolver=look.recursive, record=spf[0], timeout=10)
        if verdict.result.value != "pass":
            (failing_v6 if ":" in addr else failing).append(f"{addr}: {verdict.result.value} ({verdict.reason.fr})")
    if failing:
        return Row(domain, "TXT", expected, tuple(spf), "WRONG",
                   Text("le serveur n'est pas autorisé par ce SPF : " + " ; ".join(failing),
                        "the server is not authorised by this SPF: " + "; ".join(failing)),
                   Text(f"ajoutez « {' '.join('ip4:' + a for a in addresses if ':' not in a)} » avant « -all »",
                        f"add \"{' '.join('ip4:' + a for a in addresses if ':' not in a)}\" before \"-all\""), ttl, "RFC 7208 §5", "spf")
    why = Text("SPF évalué pour l'adresse IPv4 d'envoi du serveur : pass", "SPF evaluated for the server's IPv4 sending "
               "address: pass")
    if failing_v6:
        v6 = [a for a in addresses if ":" in a]
        why = Text(why.fr + f" ; l'IPv6 {', '.join(v6)} n'est pas couverte (à ajouter si le serveur envoie un jour en IPv6 : "
                   f"« ip6:{v6[0]} »)", why.en + f"; the IPv6 {', '.join(v6)} is not covered (add 'ip6:{v6[0]}' if the "
                   "server ever sends over IPv6)")
    return Row(domain, "TXT", expected, tuple(spf), "OK", why, Text("", ""), ttl, "RFC 7208", "spf")


def _key_of(record: str) -> str | None:
    match = re.search(r"(?:^|;)\s*p\s*=\s*([^;]*)", record)
    return re.sub(r"\s+", "", match.group(1)) if match else None


# The tags of a DKIM key record, as re.findall(r"\s*([a-z]+)\s*=\s*([^;]*)") reads them, in linear time: a match never
# starts inside a run of letters or of white space (the run's start would have matched first), and the lookbehinds say
# so — without them a published record of 60 KB of letters took ~30 s to read (every position scanned to the run's end).
_DKIM_TAG = re.compile(r"(?<!\s)\s*+(?<![a-z])([a-z]+)\s*=\s*([^;]*)")


def _dkim_row(look: _Lookups, domain: str, selector: str, expected_record: str | None) -> Row:
    name = f"{selector}._domainkey.{domain}"
    result = look.get(name, "TXT")
    values = _txt_values(result)
    ttl = result.records[0].ttl if result.records else _missing_ttl(look)
    expected = expected_record or tr("(clé inconnue : donnez dkim_record=)", "(unknown key: give dkim_record=)")
    if not values:
        return Row(name, "TXT", expected, (), "MISSING",
                   Text("pas de clé DKIM publiée : les signatures du serveur ne peuvent pas être vérifiées",
                        "no DKIM key published: the server's signatures cannot be verified"),
                   Text(f"publiez la clé donnée par le serveur (sélecteur « {selector} ») à {name}",
                        f"publish the key given by the server (selector \"{selector}\") at {name}"), ttl, "RFC 6376 §3.6.2", "dkim")
    if len(values) > 1:
        return Row(name, "TXT", expected, tuple(values), "WRONG",
                   Text("la clé est répartie sur plusieurs enregistrements TXT : seul le premier sert",
                        "the key is spread over several TXT records: only the first is used"),
                   Text("publiez un seul enregistrement TXT, fait de chaînes de 255 caractères au plus",
                        "publish one TXT record made of strings of at most 255 characters"), ttl, "RFC 6376 §3.6.2.2", "dkim")
    value = values[0]
    if '"' in value:
        return Row(name, "TXT", expected, (value,), "WRONG",
                   Text("des guillemets ont été collés dans la clé", "quotes were pasted into the key"),
                   Text("republiez la valeur sans guillemets", "publish the value again without quotes"), ttl, "RFC 6376 §3.6.2.2", "dkim")
    found_key, want_key = _key_of(value), _key_of(expected_record) if expected_record else None
    tags = dict(_DKIM_TAG.findall(value.lower()))
    if tags.get("k", "rsa") not in ("rsa", "ed25519"):
        return Row(name, "TXT", expected, (value,), "WRONG", Text(f"type de clé inconnu k={tags['k']}", f"unknown key type k={tags['k']}"),
                   Text("k=rsa (ou rien : rsa par défaut)", "k=rsa (or nothing: rsa is the default)"), ttl, "RFC 6376 §3.6.1", "dkim")
    if want_key is None:
        return Row(name, "TXT", expected, (value,), "INFO", Text("clé publiée ; la clé attendue est inconnue ici",
                                                                 "key published; the expected key is unknown here"),
                   Text("", ""), ttl, "RFC 6376", "dkim")
    if found_key == want_key:
        return Row(name, "TXT", expected, (value,), "OK",
                   Text("la clé publiée est celle du serveur (comparée balise p=, quel que soit l'ordre des balises)",
                        "the published key is the server's (p= compared, whatever the tag order)"), Text("", ""), ttl, "RFC 6376", "dkim")
    if found_key and want_key.startswith(found_key):
        return Row(name, "TXT", expected, (value,), "WRONG",
                   Text(f"clé tronquée ({len(found_key)} caractères sur {len(want_key)}) : souvent la limite de 255 caractères",
                        f"truncated key ({len(found_key)} of {len(want_key)} characters): often the 255-character limit"),
                   Text("publiez la clé entière, découpée en chaînes de 255 caractères dans un seul TXT",
                        "publish the whole key, split into 255-character strings in one TXT"), ttl, "RFC 6376 §3.6.2.2", "dkim")
    return Row(name, "TXT", expected, (value,), "WRONG",
               Text("la clé publiée n'est pas celle avec laquelle le serveur signe", "the published key is not the one the server "
                    "signs with"), Text("recopiez la clé donnée par le serveur", "copy the key given by the server"), ttl, "RFC 6376", "dkim")


def _dmarc_row(look: _Lookups, domain: str) -> Row:
    from .dmarc import is_dmarc_record, parse_record, report_authorization

    name = f"_dmarc.{domain}"
    expected = "v=DMARC1; p=quarantine"
    result = look.get(name, "TXT")
    records = [v for v in _txt_values(result) if is_dmarc_record(v)]
    ttl = result.records[0].ttl if result.records else _missing_ttl(look)
    if not records:
        apex = [v for v in _txt_values(look.get(domain, "TXT")) if v.lower().startswith("v=dmarc1")]
        if apex:
            return Row(name, "TXT", expected, (), "WRONG",
                       Text(f"l'enregistrement DMARC est publié sur {domain} au lieu de _dmarc.{domain}",
                            f"the DMARC record is published on {domain} instead of _dmarc.{domain}"),
                       Text(f"déplacez-le sur {name}", f"move it to {name}"), ttl, "RFC 9989 §4.6", "dmarc")
        return Row(name, "TXT", expected, tuple(_txt_values(result)), "MISSING",
                   Text("pas de politique DMARC : un message usurpant votre domaine n'a pas de consigne",
                        "no DMARC policy: mail forging your domain comes with no instruction"),
                   Text(f"publiez « {expected} » en TXT sur {name}", f"publish \"{expected}\" as TXT on {name}"),
                   ttl, "RFC 9989 §4", "dmarc")
    if len(records) > 1:
        return Row(name, "TXT", expected, tuple(records), "WRONG", Text("plusieurs enregistrements DMARC : aucun ne s'applique",
                                                                         "several DMARC records: none applies"),
                   Text("n'en gardez qu'un", "keep only one"), ttl, "RFC 9989 §4.10", "dmarc")
    record = parse_record(records[0])
    errors = [n for n in record.notes if n.severity == "error"]
    if errors or not record.valid:
        return Row(name, "TXT", expected, tuple(records), "WRONG",
                   Text("; ".join(n.message.fr for n in errors) or "enregistrement invalide", "; ".join(n.message.en for n in errors)
                        or "invalid record"), Text(f"par exemple « {expected} »", f"for example \"{expected}\""), ttl, "RFC 9989 §4.7", "dmarc")
    unauthorized = [uri for uri, ok, _t in report_authorization(domain, record, resolver=look.recursive) if not ok]
    if unauthorized:
        return Row(name, "TXT", expected, tuple(records), "WRONG",
                   Text(f"adresse de rapport externe non autorisée : {', '.join(unauthorized)}",
                        f"external report address not authorised: {', '.join(unauthorized)}"),
                   Text("le domaine destinataire doit publier <votre-domaine>._report._dmarc.<destination> TXT « v=DMARC1 »",
                        "the destination must publish <your-domain>._report._dmarc.<destination> TXT \"v=DMARC1\""), ttl,
                   "RFC 9990 §3", "dmarc")
    warnings = [n for n in record.notes if n.severity == "warning"]
    note = Text("; ".join(n.message.fr for n in warnings), "; ".join(n.message.en for n in warnings)) if warnings else Text(
        f"politique p={record.p} valide", f"valid policy p={record.p}")
    return Row(name, "TXT", expected, tuple(records), "OK", note, Text("", ""), ttl, "RFC 9989", "dmarc")


def _alias_row(look: _Lookups, name: str, host: str, host_addresses: list[str], role: str, rfc: str) -> Row:
    result = look.get(name, "A")
    ttl = (result.cnames[0].ttl if result.cnames else result.records[0].ttl if result.records else _missing_ttl(look))
    if result.cnames:
        target = result.cnames[0].value.rstrip(".").lower()
        status = "OK" if target == host.lower() else "WRONG"
        return Row(name, "CNAME", f"{host}.", (result.cnames[0].value,), status,
                   Text("alias vers le serveur de messagerie" if status == "OK" else f"l'alias pointe vers {target}, pas vers {host}",
                        "alias to the mail server" if status == "OK" else f"the alias points to {target}, not to {host}"),
                   Text("" if status == "OK" else f"« {name}. CNAME {host}. »", "" if status == "OK" else f"\"{name}. CNAME {host}.\""),
                   ttl, rfc, role)
    if result.records:
        same = set(result.values) <= set(host_addresses)
        return Row(name, "CNAME", f"{host}.", tuple(f"A {v}" for v in result.values), "INFO" if same else "WRONG",
                   Text("une adresse A au lieu d'un CNAME : ça marche, mais un CNAME suit le serveur s'il change d'adresse"
                        if same else "une adresse A qui n'est pas celle du serveur",
                        "an A record instead of a CNAME: it works, but a CNAME follows the server if its address changes"
                        if same else "an A record that is not the server's address"),
                   Text(f"remplacez-la par « {name}. CNAME {host}. »", f"replace it by \"{name}. CNAME {host}.\""), ttl, rfc, role)
    return Row(name, "CNAME", f"{host}.", (), "MISSING",
               Text("les clients ne trouveront pas leur configuration automatiquement", "clients will not find their settings "
                    "automatically"), Text(f"ajoutez « {name}. CNAME {host}. »", f"add \"{name}. CNAME {host}.\""), ttl, rfc, role)


def _srv_row(look: _Lookups, name: str, host: str, port: int, *, required: bool, role: str, rfc: str) -> Row:
    result = look.get(name, "SRV")
    expected = f"0 1 {port} {host}."
    ttl = result.records[0].ttl if result.records else _missing_ttl(look)
    if not result.records:
        return Row(name, "SRV", expected, (), "MISSING" if required else "OPTIONAL",
                   Text("absent" if required else "facultatif (RFC 6186 : peu de clients s'en servent)",
                        "missing" if required else "optional (RFC 6186: few clients use it)"),
                   Text(f"ajoutez « {name}. SRV {expected} »", f"add \"{name}. SRV {expected}\""), ttl, rfc, role)
    found = tuple(r.value for r in result.records)
    good = any(r.rdata.port == port and r.rdata.target.to_text().rstrip(".").lower() == host.lower() for r in result.records)
    absent = any(r.rdata.target == dns.name.root for r in result.records)
    if absent:
        return Row(name, "SRV", expected, found, "INFO", Text("cible « . » : service déclaré non offert", "target \".\": service "
                                                              "declared not offered"), Text("", ""), ttl, rfc, role)
    return Row(name, "SRV", expected, found, "OK" if good else "WRONG",
               Text("priorité poids port cible" if good else f"il faut le port {port} et la cible {host}",
                    "priority weight port target" if good else f"port {port} and target {host} are needed"),
               Text("" if good else f"« {name}. SRV {expected} »", "" if good else f"\"{name}. SRV {expected}\""), ttl, rfc, role)


def _doubled_rows(look: _Lookups, domain: str, selector: str) -> list[Row]:
    rows = []
    for name, rtype in ((f"_dmarc.{domain}.{domain}", "TXT"), (f"{selector}._domainkey.{domain}.{domain}", "TXT"),
                        (f"{domain}.{domain}", "MX"), (f"{domain}.{domain}", "TXT")):
        result = look.get(name, rtype)
        if result.records:
            right = name[: -len(domain) - 1]
            rows.append(Row(name, rtype, tr(f"(rien : le bon nom est {right})", f"(nothing: the right name is {right})"),
                            tuple(result.values), "WRONG",
                            Text("nom doublé : le panneau DNS a ajouté la zone à un nom déjà complet",
                                 "doubled name: the DNS panel appended the zone to a name that was already complete"),
                            Text(f"supprimez-le et publiez-le sur {right}. (avec le point final) ou « {right[: -len(domain) - 1] or '@'} »",
                                 f"delete it and publish it on {right}. (with the final dot) or \"{right[: -len(domain) - 1] or '@'}\""),
                            result.records[0].ttl, "RFC 1035 §5.1", f"doubled-{name}"))
    return rows


def domain(name: str, *, selector: str = "dkim", dkim_record: str | None = None, world: World | None = None,
           mail_host: str | None = None, timeout: float = 3.0, shared: dict | None = None) -> DomainAudit:
    """Audit the mail records of ``name`` against what the mail host expects (see the module doc).

    ``dkim_record`` is the key record the server signs with; by default it is read from the school server's
    API (local world) — in the live world pass it, or a :class:`labmail.mail.MailcowAPI` result's ``dkim_txt``.
    ``shared`` is a cache for names outside the zone, common to several audits (see :func:`classroom`).
    """
    from .config import check_domain

    world = world or current()
    domain_name = check_domain(name)
    host = (mail_host or world.config.mail_host).rstrip(".").lower()
    if dkim_record is None:
        dkim_record = _dkim_from_api(world, domain_name)
    look = _Lookups(domain_name, world, timeout, shared)
    look.prefetch(_zone_questions(domain_name, selector))
    rows, addresses = _server_rows(look, host)
    rows.append(_mx_row(look, domain_name, host))
    rows.append(_spf_row(look, domain_name, addresses))
    rows.append(_dkim_row(look, domain_name, selector, dkim_record))
    rows.append(_dmarc_row(look, domain_name))
    rows.append(_alias_row(look, f"autodiscover.{domain_name}", host, addresses, "autodiscover", "MS-OXDSCLI"))
    rows.append(_srv_row(look, f"_autodiscover._tcp.{domain_name}", host, 443, required=True, role="autodiscover-srv",
                         rfc="RFC 2782"))
    rows.append(_alias_row(look, f"autoconfig.{domain_name}", host, addresses, "autoconfig", "Thunderbird autoconfig"))
    for prefix, port in CLIENT_SRV:
        rows.append(_srv_row(look, f"{prefix}.{domain_name}", host, port, required=False, role=prefix.split(".")[0].lstrip("_"),
                             rfc="RFC 6186" if prefix != "_submissions._tcp" else "RFC 8314"))
    for optional, rtype, why in (("_mta-sts", "TXT", Text("MTA-STS : exiger TLS vers votre MX", "MTA-STS: require TLS to your MX")),
                                 ("_smtp._tls", "TXT", Text("TLS-RPT : recevoir les rapports d'échec TLS", "TLS-RPT: receive TLS failure reports"))):
        result = look.get(f"{optional}.{domain_name}", rtype)
        rows.append(Row(f"{optional}.{domain_name}", rtype, "", tuple(result.values), "INFO" if result.records else "OPTIONAL",
                        why, Text("", ""), None, "RFC 8461" if optional == "_mta-sts" else "RFC 8460", optional.lstrip("_")))
    rows += _doubled_rows(look, domain_name, selector)
    expected = _expected_records(domain_name, host, addresses, selector, dkim_record)
    return DomainAudit(domain_name, host, tuple(rows), tuple(expected))


def _zone_questions(domain_name: str, selector: str) -> list[tuple[str, str]]:
    """The names of the zone every audit asks, whatever the answers (asked together by ``_Lookups.prefetch``)."""
    questions = [(domain_name, "MX"), (domain_name, "TXT"), (f"{selector}._domainkey.{domain_name}", "TXT"),
                 (f"_dmarc.{domain_name}", "TXT"), (f"autodiscover.{domain_name}", "A"),
                 (f"_autodiscover._tcp.{domain_name}", "SRV"), (f"autoconfig.{domain_name}", "A")]
    questions += [(f"{prefix}.{domain_name}", "SRV") for prefix, _port in CLIENT_SRV]
    questions += [(f"_mta-sts.{domain_name}", "TXT"), (f"_smtp._tls.{domain_name}", "TXT")]
    questions += [(f"_dmarc.{domain_name}.{domain_name}", "TXT"), (f"{selector}._domainkey.{domain_name}.{domain_name}", "TXT"),
                  (f"{domain_name}.{domain_name}", "MX"), (f"{domain_name}.{domain_name}", "TXT")]
    return questions


def _dkim_from_api(world: World, domain_name: str) -> str | None:
    """The key record the school server signs ``domain_name`` with (its API's get/dkim), or None if unknown.

    Live world without Mailcow (a school's Postfix + OpenDKIM): the record the teacher wrote in the student's
    credentials file (``"dkim_txt"``), for the student's own domain."""
    if world.kind == "local":
        stored = Layout(world.config.state_dir).dkim_record(domain_name)
        if stored.exists():  # what the school server's API would answer (get/dkim), without an HTTPS round trip
            return "v=DKIM1;k=rsa;t=s;s=email;p=" + stored.read_text(encoding="utf-8").strip().split("p=", 1)[1]
    else:
        from .config import live_credentials

        given = live_credentials(world.config).get("dkim_txt")
        if isinstance(given, str) and given.startswith("v=DKIM1") and domain_name == world.config.domain:
            return given
    try:
        from .mail import MailcowAPI
        from .world import api_key

        key = api_key(world.config, admin=world.kind == "local")  # live: the student's key (credentials_file)
        answer = MailcowAPI(key=key, world=world).get_dkim(domain_name)
    except LabmailError:
        return None
    return answer.get("dkim_txt") if isinstance(answer, dict) else None


def _expected_records(domain_name: str, host: str, addresses: list[str], selector: str, dkim_record: str | None):
    spf = "v=spf1 " + " ".join(f"ip4:{a}" for a in addresses if ":" not in a) + " -all"
    records = [("@", "MX", f"10 {host}."), ("@", "TXT", f'"{spf}"')]
    if dkim_record:
        chunks = [dkim_record[i:i + 255] for i in range(0, len(dkim_record), 255)]
        records.append((f"{selector}._domainkey", "TXT", " ".join(f'"{c}"' for c in chunks)))
    records += [("_dmarc", "TXT", '"v=DMARC1; p=quarantine"'), ("autodiscover", "CNAME", f"{host}."),
                ("_autodiscover._tcp", "SRV", f"0 1 443 {host}."), ("autoconfig", "CNAME", f"{host}.")]
    records += [(prefix, "SRV", f"0 1 {port} {host}.") for prefix, port in CLIENT_SRV]
    return records


# ---------------------------------------------------------------------------
# Deliverability diagnosis of a received message
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MessageDiagnosis:
    """:func:`message`'s answer: the analysis report, every finding, and a score out of 10 (as mail-tester gives)."""

    report: Any  # labmail.headers.Report
    findings: tuple
    score: float
    envelope: object = None  # labmail.headers.Envelope the checks were re-run with (None: headers only)

    def to_dataframe(self) -> "pandas.DataFrame":
        from .headers import _findings_frame

        return _findings_frame(self.findings)

    def __str__(self) -> str:
        return "\n".join([f"{tr('note', 'score')} : {self.score:.1f}/10"] + [str(f) for f in self.findings])

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))


_PENALTY = {"error": 2.0, "warning": 0.5, "info": 0.0, "ok": 0.0}


def message(raw: bytes | str, envelope=None, *, world: World | None = None, receiver: str | None = None) -> MessageDiagnosis:
    """Why would this message land in spam? Reads the headers, re-runs what can be re-run, explains each finding.

    Without ``envelope`` the client address, HELO and MAIL FROM are taken from the receiving server's
    ``Received`` header (the topmost, or the one ``by`` ``receiver``) and from ``Return-Path``.
    """
    from email import message_from_bytes

    from .headers import Finding, analyze, envelope_from_headers

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    world = world or current()
    resolver = Resolver(world=world)
    from .headers import READ_POLICY

    msg = message_from_bytes(data, policy=READ_POLICY)
    if envelope is None:
        envelope = envelope_from_headers(data, receiver=receiver)
    report = analyze(data, envelope, resolver=resolver)
    findings = list(report.findings)
    judged = report.checks  # the judge's PTR and block-list answers: nothing is asked twice
    if envelope is not None and judged is not None:
        ip = envelope.ip
        if judged.iprev != "pass":
            findings.append(Finding("error", Text(f"{ip} n'a pas de DNS inverse confirmé (PTR → nom → adresse)",
                                                  f"{ip} has no forward-confirmed reverse DNS (PTR → name → address)"),
                                    Text("Gmail et Yahoo exigent un PTR valide pour l'adresse d'envoi",
                                         "Gmail and Yahoo require a valid PTR for the sending address"),
                                    Text("faites régler le PTR de l'adresse vers le nom du serveur", "have the address's PTR "
                                         "set to the server's name"), "RFC 8601 §3"))
        if judged.dnsbl:
            findings.append(Finding("error", Text(f"{ip} est sur une liste de blocage (dnsbl.test)",
                                                  f"{ip} is on a block list (dnsbl.test)"),
                                    Text("beaucoup de destinataires refusent ou classent en spam", "many receivers refuse or "
                                         "file it as spam"), Text("trouvez la cause, corrigez, demandez le retrait",
                                                                  "find the cause, fix it, ask for delisting"), "RFC 5782"))
    hops = report.hop_rows
    for hop in hops:
        if not hop["tls"] and hop["par"]:
            findings.append(Finding("warning", Text(f"étape {hop['étape']} ({hop['de']} → {hop['par']}) sans TLS",
                                                    f"hop {hop['étape']} ({hop['de']} → {hop['par']}) without TLS"),
                                    Text("Gmail exige TLS ; le message a circulé en clair", "Gmail requires TLS; the message "
                                         "travelled in clear text"), Text("activez STARTTLS sur ce serveur",
                                                                          "enable STARTTLS on that server"), "RFC 3207"))
    if hops and not hops[0]["authentifié"]:
        findings.append(Finding("info", Text("la première étape n'est pas une soumission authentifiée (ESMTPA/ESMTPSA)",
                                             "the first hop is not an authenticated submission (ESMTPA/ESMTPSA)"),
                                Text("un message légitime part d'un client authentifié sur le port 587/465",
                                     "legitimate mail leaves an authenticated client on port 587/465"),
                                Text("envoyez par le MSA avec AUTH", "send through the MSA with AUTH"), "RFC 6409"))
    if report.dmarc_detail is not None:
        verdict = report.dmarc_detail.rfc9989
        if verdict.result == "fail":
            findings.append(Finding("error", Text("alignement : " + verdict.spf_detail.fr + " ; " + verdict.dkim_detail.fr,
                                                  "alignment: " + verdict.spf_detail.en + "; " + verdict.dkim_detail.en),
                                    Text("DMARC exige qu'un domaine qui passe soit celui du From (ou de la même organisation)",
                                         "DMARC needs a passing domain to be the From's (or in the same organization)"),
                                    Text("signez avec d= du domaine du From, ou envoyez avec un MAIL FROM de ce domaine",
                                         "sign with d= of the From domain, or send with a MAIL FROM of that domain"), "RFC 9989 §4.4"))
    bulk = msg.get("List-Unsubscribe") or str(msg.get("Precedence", "")).lower() in ("bulk", "list")
    if bulk:
        one_click = "one-click" in str(msg.get("List-Unsubscribe-Post", "")).lower()
        if not one_click:
            findings.append(Finding("error", Text("envoi de masse sans désinscription en un clic", "bulk mail without one-click "
                                                  "unsubscribe"),
                                    Text("Gmail et Yahoo l'exigent des expéditeurs de masse depuis 2024",
                                         "Gmail and Yahoo require it from bulk senders since 2024"),
                                    Text("ajoutez List-Unsubscribe: <https://…> et List-Unsubscribe-Post: List-Unsubscribe=One-Click, "
                                         "signés par DKIM", "add List-Unsubscribe: <https://…> and List-Unsubscribe-Post: "
                                         "List-Unsubscribe=One-Click, DKIM-signed"), "RFC 8058"))
        if not (report.spf == "pass" and any(r == "pass" for _d, r in report.dkim)) or report.dmarc == "none":
            findings.append(Finding("error", Text("envoi de masse : SPF et DKIM doivent passer, et DMARC être publié",
                                                  "bulk mail: SPF and DKIM must pass, and DMARC be published"),
                                    Text("règles de Gmail/Yahoo (2024) et de Microsoft (2025) pour les expéditeurs de masse",
                                         "Gmail/Yahoo (2024) and Microsoft (2025) rules for bulk senders"),
                                    Text("publiez SPF, DKIM et DMARC (p=none au moins), alignés", "publish SPF, DKIM and DMARC "
                                         "(p=none at least), aligned"), "RFC 9989"))
    score = max(0.0, 10.0 - sum(_PENALTY.get(f.severity, 0) for f in findings))
    return MessageDiagnosis(report, tuple(findings), round(score, 1), envelope)
