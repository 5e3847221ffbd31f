"""DNS for students: queries whose outcomes explain themselves, and a panel to edit one's zone.

* :func:`lookup` asks the world's resolver, or the zone's own servers with
  ``authoritative=True`` (no cache anywhere), and returns a
  :class:`LookupResult`: the records with their TTL, and an outcome among
  answer, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout… each explained.
* :func:`records` lists the mail-related records of a domain (MX and their
  addresses, SPF, DKIM, DMARC, autodiscover/autoconfig, SRV) as a DataFrame.
* :class:`ZonePanel` is the course's "DNS panel": list, add, replace and
  delete records of the student's zone with RFC 2136 updates signed by the
  student's TSIG key. It catches the classic mistakes (quotes pasted into a
  TXT value, a doubled name, an MX pointing to an IP or a CNAME…). The same
  code drives a real BIND or Knot server in the live world.
* :func:`export_zone` writes a zone as a BIND master file.

>>> r = lookup("labmail.cloud", "MX")     # doctest: +SKIP
>>> r.outcome, r.values                    # doctest: +SKIP
(<Outcome.ANSWER: 'réponse'>, ['10 mailcow.labmail.cloud.'])
"""

from __future__ import annotations

import enum
import functools
import html
import ipaddress
import re
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from .config import is_ip_address
from .errors import DNSLookupFailed, RecordError, UpdateRefused
from .i18n import Text, tr
from .world import World, current, use_world_resolver

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "Outcome", "Record", "LookupResult", "lookup", "Resolver", "records", "mail_records", "MailRecord",
    "ZonePanel", "Change", "panel", "export_zone", "use_world_resolver", "txt_strings",
]


# ---------------------------------------------------------------------------
# Lookups
# ---------------------------------------------------------------------------
class Outcome(enum.Enum):
    """How a DNS query ended. ``.explain()`` says what it means for a student."""

    ANSWER = "answer"
    NXDOMAIN = "NXDOMAIN"
    NODATA = "NODATA"
    REFERRAL = "referral"
    SERVFAIL = "SERVFAIL"
    REFUSED = "REFUSED"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    ERROR = "error"

    def explain(self) -> str:
        return str(_EXPLANATIONS[self])


_EXPLANATIONS = {
    Outcome.ANSWER: Text("Le nom existe et possède des enregistrements de ce type.",
                         "The name exists and has records of this type."),
    Outcome.NXDOMAIN: Text("NXDOMAIN : ce nom n'existe pas du tout dans la zone (aucun type). Vérifiez l'orthographe "
                           "du nom, ou créez l'enregistrement. Les résolveurs gardent cette absence en cache "
                           "pendant le TTL négatif (RFC 2308).",
                           "NXDOMAIN: this name does not exist at all in the zone (no type). Check the spelling, or "
                           "create the record. Resolvers cache this absence for the negative TTL (RFC 2308)."),
    Outcome.NODATA: Text("NODATA : le nom existe mais n'a pas d'enregistrement de ce type. Ajoutez un enregistrement "
                         "de ce type, ou interrogez le bon type.",
                         "NODATA: the name exists but has no record of this type. Add a record of this type, or ask "
                         "for the right type."),
    Outcome.REFERRAL: Text("Délégation : ce serveur n'a pas la réponse mais indique les serveurs de la zone enfant (NS).",
                           "Referral: this server does not hold the answer but names the child zone's servers (NS)."),
    Outcome.SERVFAIL: Text("SERVFAIL : le serveur n'a pas pu répondre (zone cassée, serveurs injoignables). Ce n'est pas "
                           "une absence : réessayez, puis vérifiez la délégation et la zone.",
                           "SERVFAIL: the server could not answer (broken zone, unreachable servers). This is not an "
                           "absence: retry, then check the delegation and the zone."),
    Outcome.REFUSED: Text("REFUSED : ce serveur refuse de répondre pour ce nom (il n'en a pas la charge, ou la "
                          "récursion n'est pas permise). Interrogez le bon serveur.",
                          "REFUSED: this server will not answer for this name (not its zone, or recursion not "
                          "allowed). Ask the right server."),
    Outcome.TIMEOUT: Text("Pas de réponse dans le délai : le serveur est arrêté, filtré ou surchargé. Vérifiez que le "
                          "lab tourne (labmail lab status) ou l'adresse du serveur.",
                          "No answer in time: the server is down, filtered or overloaded. Check that the lab is "
                          "running (labmail lab status) or the server's address."),
    Outcome.UNREACHABLE: Text("Serveur injoignable (connexion refusée) : le lab est-il démarré ? "
                              "labmail.lab.ensure() ou « labmail lab start ».",
                              "Server unreachable (connection refused): is the lab running? "
                              "labmail.lab.ensure() or \"labmail lab start\"."),
    Outcome.ERROR: Text("Réponse DNS inattendue (voir le code de retour).", "Unexpected DNS reply (see the rcode)."),
}


@dataclass(frozen=True)
class Record:
    """One resource record: owner name, TTL, type and value (TXT strings joined)."""

    name: str
    ttl: int
    type: str
    value: str
    rdata: dns.rdata.Rdata | None = field(default=None, repr=False, compare=False)

    @property
    def presentation(self) -> str:
        """The record as a zone-file line."""
        text = self.rdata.to_text() if self.rdata is not None else self.value
        return f"{self.name} {self.ttl} IN {self.type} {text}"

    @classmethod
    def from_rdata(cls, name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> "Record":
        return cls(name.to_text(), ttl, dns.rdatatype.to_text(rdata.rdtype), _value_text(rdata), rdata)


def _value_text(rdata: dns.rdata.Rdata) -> str:
    rdtype = rdata.rdtype
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return rdata.address  # type: ignore[attr-defined]
    return rdata.to_text()


@dataclass(frozen=True)
class LookupResult:
    """The outcome of one DNS query, with the records and what it means."""

    name: str
    type: str
    outcome: Outcome
    records: tuple[Record, ...] = ()
    cnames: tuple[Record, ...] = ()
    soa: Record | None = None
    server: str = ""
    authoritative: bool = False
    rcode: str = "NOERROR"
    elapsed_ms: float = 0.0
    additional: tuple[Record, ...] = field(default=(), repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.ANSWER

    @property
    def values(self) -> list[str]:
        """The values of the records (TXT strings joined, as a receiver reads them)."""
        return [r.value for r in self.records]

    @property
    def negative_ttl(self) -> int | None:
        """How long resolvers cache this absence (RFC 2308): TTL of the SOA in the authority section."""
        return self.soa.ttl if self.soa is not None and self.outcome in (Outcome.NXDOMAIN, Outcome.NODATA) else None

    @property
    def explanation(self) -> str:
        text = self.outcome.explain()
        if self.negative_ttl is not None:
            text += tr(f" (TTL négatif : {self.negative_ttl} s)", f" (negative TTL: {self.negative_ttl} s)")
        if self.cnames:
            chain = " → ".join([self.cnames[0].name] + [c.value for c in self.cnames])
            text += tr(f" Alias suivis : {chain}.", f" Aliases followed: {chain}.")
        return text

    def raise_for_status(self) -> "LookupResult":
        """Return self if the query got an answer (or a clean NXDOMAIN/NODATA); raise otherwise."""
        if self.outcome in (Outcome.ANSWER, Outcome.NXDOMAIN, Outcome.NODATA):
            return self
        raise DNSLookupFailed(
            f"{self.name} {self.type} auprès de {self.server} : {_EXPLANATIONS[self.outcome].fr}",
            f"{self.name} {self.type} at {self.server}: {_EXPLANATIONS[self.outcome].en}",
            outcome=self.outcome,
        )

    def to_dataframe(self) -> "pandas.DataFrame":
        import pandas as pd

        rows = [{"nom": r.name, "ttl": r.ttl, "type": r.type, "valeur": r.value} for r in self.cnames + self.records]
        return pd.DataFrame(rows, columns=["nom", "ttl", "type", "valeur"])

    def __str__(self) -> str:
        head = f";; {self.name} {self.type} @{self.server}: {self.outcome.value} ({self.rcode})"
        lines = [head] + [r.presentation for r in self.cnames + self.records]
        if self.soa is not None and not self.records:
            lines.append(";; SOA " + self.soa.presentation)
        lines.append(";; " + self.explanation)
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's plain-text display
        printer.text(str(self))

    def _repr_html_(self) -> str:
        color = "#1b7f3b" if self.ok else "#b26b00" if self.outcome in (Outcome.NXDOMAIN, Outcome.NODATA) else "#b00020"
        rows = "".join(
            f"<tr><td>{html.escape(r.name)}</td><td>{r.ttl}</td><td>{r.type}</td><td><code>{html.escape(r.value)}</code></td></tr>"
            for r in self.cnames + self.records
        )
        return (f"<div><b>{html.escape(self.name)} {self.type}</b> — <span style='color:{color}'>"
                f"{html.escape(self.outcome.value)}</span> <small>({html.escape(self.server)})</small>"
                f"{'<table><tr><th>nom</th><th>TTL</th><th>type</th><th>valeur</th></tr>' + rows + '</table>' if rows else ''}"
                f"<p>{html.escape(self.explanation)}</p></div>")


def _check_query_name(name: str) -> dns.name.Name:
    text = (name or "").strip()
    try:
        qname = dns.name.from_text(text if text.endswith(".") else text + ".")
    except dns.exception.DNSException as exc:
        raise RecordError(
            f"« {name} » n'est pas un nom DNS valide ({exc}). Exemple : « labmail.cloud ».",
            f"\"{name}\" is not a valid DNS name ({exc}). Example: \"labmail.cloud\".",
        ) from None
    if not text:
        raise RecordError("Nom vide : tapez un nom comme « labmail.cloud ».", "Empty name: type a name such as \"labmail.cloud\".")
    return qname


@functools.lru_cache(maxsize=256)
def _check_type(rdtype: str | int) -> int:
    try:
        value = dns.rdatatype.from_text(rdtype) if isinstance(rdtype, str) else dns.rdatatype.RdataType.make(rdtype)
    except Exception:
        raise RecordError(
            f"Type d'enregistrement inconnu « {rdtype} ». Exemples : A, AAAA, MX, TXT, CNAME, SRV, NS, SOA, PTR.",
            f"Unknown record type \"{rdtype}\". Examples: A, AAAA, MX, TXT, CNAME, SRV, NS, SOA, PTR.",
        ) from None
    return int(value)


def _query(qname: dns.name.Name, rdtype: int, server: tuple[str, int], *, recursion: bool, timeout: float):
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
    if not recursion:
        query.flags &= ~dns.flags.RD
    response, _tcp = dns.query.udp_with_fallback(query, server[0], timeout=timeout, port=server[1])
    return response


def _interpret(qname: dns.name.Name, rdtype: int, response: dns.message.Message, server: str, elapsed: float) -> LookupResult:
    rcode = response.rcode()
    aa = bool(response.flags & dns.flags.AA)
    answer = {}
    for rr in response.answer:
        answer.setdefault((rr.name, rr.rdtype), rr)

    def rows(rrset) -> list[Record]:
        name, rtype = rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype)
        return [Record(name, rrset.ttl, rtype, _value_text(r), r) for r in rrset]

    records: list[Record] = []
    cnames: list[Record] = []
    current_name = qname
    for _ in range(10):
        rrset = answer.get((current_name, rdtype))
        if rrset is not None:
            records += rows(rrset)
            break
        cname = answer.get((current_name, dns.rdatatype.CNAME))
        if cname is None or rdtype == dns.rdatatype.CNAME:
            break
        cnames += rows(cname)[:1]
        current_name = cname[0].target
    if rdtype == dns.rdatatype.ANY:
        records = [rec for rr in response.answer for rec in rows(rr)]
    soa = next((rows(rr)[0] for rr in response.authority if rr.rdtype == dns.rdatatype.SOA), None)
    if rcode == dns.rcode.NXDOMAIN:
        outcome = Outcome.NXDOMAIN
    elif rcode == dns.rcode.NOERROR:
        if records:
            outcome = Outcome.ANSWER
        elif soa is None and not aa and any(rr.rdtype == dns.rdatatype.NS for rr in response.authority):
            outcome = Outcome.REFERRAL
        else:
            outcome = Outcome.NODATA
    elif rcode == dns.rcode.SERVFAIL:
        outcome = Outcome.SERVFAIL
    elif rcode == dns.rcode.REFUSED:
        outcome = Outcome.REFUSED
    else:
        outcome = Outcome.ERROR
    additional = tuple(rec for rr in response.additional if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA) for rec in rows(rr))
    return LookupResult(qname.to_text(), dns.rdatatype.to_text(rdtype), outcome, tuple(records), tuple(cnames), soa,
                        server, aa, dns.rcode.to_text(rcode), round(elapsed * 1000, 2), additional)


def _ask(qname: dns.name.Name, rdtype: int, server: tuple[str, int], *, recursion: bool, timeout: float) -> LookupResult:
    label = f"{server[0]}#{server[1]}"
    start = time.perf_counter()
    try:
        response = _query(qname, rdtype, server, recursion=recursion, timeout=timeout)
    except dns.exception.Timeout:
        return LookupResult(qname.to_text(), dns.rdatatype.to_text(rdtype), Outcome.TIMEOUT, server=label, rcode="-")
    except ConnectionRefusedError:
        return LookupResult(qname.to_text(), dns.rdatatype.to_text(rdtype), Outcome.UNREACHABLE, server=label, rcode="-")
    except (OSError, dns.exception.DNSException) as exc:
        return LookupResult(qname.to_text(), dns.rdatatype.to_text(rdtype), Outcome.ERROR, server=label, rcode=type(exc).__name__)
    return _interpret(qname, rdtype, response, label, time.perf_counter() - start)


class Resolver:
    """A DNS client for the authentication engines (SPF, DKIM, DMARC): one world's resolver, bounded waits.

    ``query()`` never raises for DNS outcomes: it returns a :class:`LookupResult` whose
    ``outcome`` says NXDOMAIN, NODATA, TIMEOUT… ``exchange`` replaces the network (a function
    from a query message to a response message), e.g. to ask the lab's DNS engine in-process.

    >>> res = Resolver(world=current())            # doctest: +SKIP
    >>> res.query("gmail.test", "MX").values       # doctest: +SKIP
    ['5 gmail-smtp-in.l.gmail.test.']
    """

    def __init__(self, servers: list[tuple[str, int]] | None = None, *, world: World | None = None,
                 timeout: float = 2.0, exchange=None) -> None:
        if exchange is None and not servers:
            servers = list((world or current()).resolvers)
        self.servers = list(servers or [])
        self.timeout = timeout
        self.exchange = exchange
        self.count = 0
        self._sockets: dict[int, socket.socket] = {}

    def query(self, name: str | dns.name.Name, rdtype: str | int) -> LookupResult:
        qtype = _check_type(rdtype)
        try:
            qname = name if isinstance(name, dns.name.Name) else dns.name.from_text(name.rstrip(".") + ".")
        except dns.exception.DNSException:
            return LookupResult(str(name), dns.rdatatype.to_text(qtype), Outcome.ERROR, rcode="bad name")
        self.count += 1
        if self.exchange is not None:
            start = time.perf_counter()
            query = dns.message.make_query(qname, qtype)
            return _interpret(qname, qtype, self.exchange(query), "lab", time.perf_counter() - start)
        result = None
        for server in self.servers:
            result = self._ask(qname, qtype, server)
            if result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.SERVFAIL):
                return result
        assert result is not None
        return result

    def _ask(self, qname: dns.name.Name, qtype: int, server: tuple[str, int]) -> LookupResult:
        """One query over a UDP socket kept open by this resolver (TCP when the answer is truncated)."""
        label = f"{server[0]}#{server[1]}"
        start = time.perf_counter()
        query = dns.message.make_query(qname, qtype)  # no EDNS, as dnspython's resolver: truncated answers go to TCP
        try:
            sock = self._socket(server[0])
            response = dns.query.udp(query, server[0], timeout=self.timeout, port=server[1], sock=sock,
                                     ignore_unexpected=True, raise_on_truncation=False)
            if response.flags & dns.flags.TC:
                response = dns.query.tcp(query, server[0], timeout=self.timeout, port=server[1])
        except dns.exception.Timeout:
            return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.TIMEOUT, server=label, rcode="-")
        except ConnectionRefusedError:
            return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.UNREACHABLE, server=label, rcode="-")
        except (OSError, dns.exception.DNSException) as exc:
            self._close()
            return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.ERROR, server=label, rcode=type(exc).__name__)
        return _interpret(qname, qtype, response, label, time.perf_counter() - start)

    def _socket(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self._sockets.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._sockets[family] = sock
        return sock

    def _close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def __del__(self) -> None:
        try:
            self._close()
        except Exception:
            pass


def lookup(name: str, rdtype: str | int = "A", *, authoritative: bool = False, world: World | None = None,
           timeout: float = 2.0) -> LookupResult:
    """Ask the DNS for ``name``/``rdtype`` and say what came back.

    Parameters
    ----------
    name : str
        The name, e.g. ``"_dmarc.jean.labmail.cloud"`` (final dot optional).
    rdtype : str
        ``"A"``, ``"MX"``, ``"TXT"``…
    authoritative : bool
        If true, find the zone's own servers (its NS) and ask them directly,
        without recursion: the freshest answer, no cache in between.
    world : World, optional
        Defaults to :func:`labmail.world.current`.

    Examples
    --------
    >>> lookup("_dmarc.gmail.test", "TXT").values    # doctest: +SKIP
    ['v=DMARC1; p=none; sp=quarantine; rua=mailto:mailauth-reports@gmail.test']
    """
    qname = _check_query_name(name)
    qtype = _check_type(rdtype)
    world = world or current()
    if not authoritative:
        result = None
        for server in world.resolvers:
            result = _ask(qname, qtype, server, recursion=True, timeout=timeout)
            if result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.SERVFAIL):
                return result
        assert result is not None
        return result
    servers = _zone_servers(qname, world, timeout)
    result = None
    for server in servers:
        result = _ask(qname, qtype, server, recursion=False, timeout=timeout)
        if result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.SERVFAIL, Outcome.REFUSED):
            return result
    if result is None:
        raise DNSLookupFailed(f"Aucun serveur faisant autorité trouvé pour {name}.", f"No authoritative server found for {name}.")
    return result


def _zone_servers(qname: dns.name.Name, world: World, timeout: float) -> list[tuple[str, int]]:
    """The (host, port) of the authoritative servers of the zone holding ``qname``, via the world's resolver."""
    soa = None
    probe = qname
    while soa is None:
        result = lookup(probe.to_text(), "SOA", world=world, timeout=timeout)
        if result.cnames:  # an alias: the SOA that came back is the target's zone, not the alias's
            pass
        elif result.ok:
            soa = result.records[0].name
        elif result.soa is not None:
            soa = result.soa.name
        if soa is not None or probe == dns.name.root:
            break
        probe = probe.parent()
    if soa is None:
        return list(world.resolvers)
    servers: list[tuple[str, int]] = []
    for ns in lookup(soa, "NS", world=world, timeout=timeout).records:
        for rtype in ("A", "AAAA"):
            for addr in lookup(ns.value, rtype, world=world, timeout=timeout).values:
                endpoint = world.endpoint(addr, 53)
                if endpoint not in servers:
                    servers.append(endpoint)
    return servers or list(world.resolvers)


# ---------------------------------------------------------------------------
# The mail-related records of a domain
# ---------------------------------------------------------------------------
#: (role, owner prefix, type) of the records a mail domain may publish; RFC 6186 SRV set included.
MAIL_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("MX", "", "MX"),
    ("SPF", "", "TXT"),
    ("DKIM", "{selector}._domainkey.", "TXT"),
    ("DMARC", "_dmarc.", "TXT"),
    ("autodiscover", "autodiscover.", "CNAME"),
    ("autodiscover SRV", "_autodiscover._tcp.", "SRV"),
    ("autoconfig", "autoconfig.", "CNAME"),
    ("SRV submission (RFC 6186)", "_submission._tcp.", "SRV"),
    ("SRV submissions (RFC 8314)", "_submissions._tcp.", "SRV"),
    ("SRV imap", "_imap._tcp.", "SRV"),
    ("SRV imaps", "_imaps._tcp.", "SRV"),
    ("SRV pop3", "_pop3._tcp.", "SRV"),
    ("SRV pop3s", "_pop3s._tcp.", "SRV"),
)


@dataclass(frozen=True)
class MailRecord:
    """One row of :func:`records`: a mail-related record (or its absence)."""

    role: str
    name: str
    type: str
    outcome: Outcome
    ttl: int | None = None
    value: str | None = None


def mail_records(domain: str, *, selector: str = "dkim", authoritative: bool = True, world: World | None = None) -> list[MailRecord]:
    """The mail-related records of ``domain`` as data (see :func:`records` for the DataFrame)."""
    world = world or current()
    base = _check_query_name(domain).to_text()
    rows: list[MailRecord] = []
    for role, prefix, rtype in MAIL_RECORDS:
        owner = prefix.format(selector=selector) + base
        result = lookup(owner, rtype, authoritative=authoritative, world=world)
        found = result.records
        if role == "SPF":
            found = tuple(r for r in found if r.value.lower().startswith("v=spf1"))
        elif role == "DMARC":
            found = tuple(r for r in found if r.value.upper().startswith("V=DMARC1"))
        if rtype == "CNAME" and result.cnames:
            found = result.cnames[:1]
        if not found:
            outcome = result.outcome if result.outcome is not Outcome.ANSWER else Outcome.NODATA
            rows.append(MailRecord(role, owner, rtype, outcome))
            continue
        for rec in found:
            rows.append(MailRecord(role, rec.name, rec.type, Outcome.ANSWER, rec.ttl, rec.value))
            if role == "MX" and rec.rdata is not None:
                target = rec.rdata.exchange.to_text()  # type: ignore[attr-defined]
                if target == ".":
                    continue
                for atype in ("A", "AAAA"):
                    addr = lookup(target, atype, authoritative=authoritative, world=world)
                    for a in addr.records:
                        rows.append(MailRecord("MX → adresse", a.name, a.type, Outcome.ANSWER, a.ttl, a.value))
                    if not addr.records and atype == "A":
                        rows.append(MailRecord("MX → adresse", target, atype, addr.outcome))
    return rows


def records(domain: str, *, selector: str = "dkim", authoritative: bool = True, world: World | None = None) -> "pandas.DataFrame":
    """The mail-related records of ``domain`` as a DataFrame: one row per record found or missing.

    Columns: ``rôle``, ``nom``, ``type``, ``ttl``, ``valeur``, ``résultat``.
    """
    import pandas as pd

    rows = mail_records(domain, selector=selector, authoritative=authoritative, world=world)
    return pd.DataFrame(
        [{"rôle": r.role, "nom": r.name, "type": r.type, "ttl": r.ttl, "valeur": r.value, "résultat": r.outcome.value} for r in rows],
        columns=["rôle", "nom", "type", "ttl", "valeur", "résultat"],
    ).astype({"ttl": "Int64"})


# ---------------------------------------------------------------------------
# The DNS panel (RFC 2136 + TSIG)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """What a panel operation did: the records sent, and notes on what was corrected or checked."""

    action: str
    name: str
    type: str | None
    values: tuple[str, ...]
    ttl: int | None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = {"add": tr("ajouté", "added"), "replace": tr("remplacé", "replaced"), "delete": tr("supprimé", "deleted")}[self.action]
        lines = [f"{what} : {self.name} {self.type or ''} {' | '.join(self.values)}".rstrip()]
        lines += [f"  ⚠ {n}" for n in self.notes]
        return "\n".join(lines)


_TXT_STRINGS = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*')
_ZONE_LINE = re.compile(r"(?i)(^|\s)IN\s+(TXT|MX|A|AAAA|CNAME|SRV)\s")


class ZonePanel:
    """Edit one zone through RFC 2136 dynamic updates signed with TSIG.

    >>> p = panel()                                          # doctest: +SKIP
    >>> p.add("@", "MX", "10 mailcow.labmail.cloud.")        # doctest: +SKIP
    >>> p.add("@", "TXT", '"v=spf1 mx -all"')                # doctest: +SKIP  (quotes removed, with a note)
    >>> p.to_dataframe()                                     # doctest: +SKIP
    """

    def __init__(self, zone: str | None = None, *, world: World | None = None, key: dns.tsig.Key | None = None,
                 server: tuple[str, int] | None = None, default_ttl: int = 300, timeout: float = 5.0) -> None:
        self.world = world or current()
        self.zone = _check_query_name(zone or self.world.config.domain)
        self.server = server or self.world.dns_server
        self._key = key
        self.default_ttl = default_ttl
        self.timeout = timeout

    @property
    def _tsig(self) -> dns.tsig.Key:
        """The zone's TSIG key (private: its repr shows the secret)."""
        if self._key is None:
            self._key = self.world.tsig_key()
        return self._key

    def __repr__(self) -> str:
        return f"ZonePanel(zone={self.zone.to_text()!r}, server={self.server[0]}#{self.server[1]})"

    # -- reading -------------------------------------------------------------
    def _transfer(self) -> dns.zone.Zone:
        try:
            xfr = dns.query.xfr(self.server[0], self.zone, port=self.server[1], keyring={self._tsig.name: self._tsig},
                                keyname=self._tsig.name, lifetime=self.timeout, relativize=False)
            return dns.zone.from_xfr(xfr, relativize=False, check_origin=False)
        except dns.xfr.TransferError as exc:
            raise UpdateRefused(
                f"Le serveur refuse le transfert de la zone {self.zone} ({dns.rcode.to_text(exc.rcode)}) : "
                "la clé n'est pas celle de cette zone.",
                f"The server refuses to transfer the zone {self.zone} ({dns.rcode.to_text(exc.rcode)}): "
                "the key is not this zone's key.",
                rfc="RFC 5936",
            ) from None
        except (dns.tsig.PeerError, dns.message.UnknownTSIGKey):
            raise UpdateRefused(
                f"Clé TSIG refusée par le serveur pour {self.zone} : vérifiez le nom et le secret de la clé.",
                f"TSIG key refused by the server for {self.zone}: check the key's name and secret.",
                rfc="RFC 8945",
            ) from None
        except (dns.exception.Timeout, OSError) as exc:
            raise DNSLookupFailed(
                f"Le serveur DNS {self.server[0]}#{self.server[1]} ne répond pas ({exc}). Le lab est-il démarré ?",
                f"The DNS server {self.server[0]}#{self.server[1]} does not answer ({exc}). Is the lab running?",
            ) from None

    def list(self) -> list[Record]:
        """Every record of the zone (zone transfer with the zone's key), in zone order."""
        zone = self._transfer()
        return [Record.from_rdata(name, rds.ttl, rdata) for name, rds in zone.iterate_rdatasets() for rdata in rds]

    def to_dataframe(self) -> "pandas.DataFrame":
        import pandas as pd

        return pd.DataFrame([{"nom": r.name, "ttl": r.ttl, "type": r.type, "valeur": r.value} for r in self.list()],
                            columns=["nom", "ttl", "type", "valeur"])

    def export(self) -> str:
        """The zone as a BIND master file (see :func:`export_zone`)."""
        return export_zone(self._transfer())

    # -- normalising what students type ---------------------------------------
    def _name(self, name: str, notes: list[str]) -> dns.name.Name:
        zone_text = self.zone.to_text(omit_final_dot=True)
        raw = (name or "").strip()
        if raw in ("", "@"):
            return self.zone
        text = raw.lower()
        absolute = text.endswith(".")
        body = text.rstrip(".")
        if body == f"{zone_text}.{zone_text}" or body.endswith(f".{zone_text}.{zone_text}"):
            fixed = body[: -len(zone_text) - 1] + "."
            raise RecordError(
                f"Le nom « {raw} » contient deux fois votre zone. Écrivez « {fixed} » (avec le point final) ou "
                f"seulement « {fixed[: -len(zone_text) - 2] or '@'} ».",
                f"The name \"{raw}\" contains your zone twice. Write \"{fixed}\" (with the final dot) or just "
                f"\"{fixed[: -len(zone_text) - 2] or '@'}\".",
            )
        if not absolute and (body == zone_text or body.endswith("." + zone_text)):
            absolute = True
            notes.append(tr(
                f"« {raw} » lu comme le nom complet « {body}. ». Dans un fichier de zone BIND, mettez le point final, "
                f"sinon le nom devient « {body}.{zone_text}. ».",
                f"\"{raw}\" read as the full name \"{body}.\". In a BIND zone file, add the final dot, otherwise the "
                f"name becomes \"{body}.{zone_text}.\".",
            ))
        full = body + "." if absolute else f"{body}.{zone_text}."
        try:
            result = dns.name.from_text(full)
        except dns.exception.DNSException as exc:
            raise RecordError(f"Nom « {raw} » invalide ({exc}).", f"Invalid name \"{raw}\" ({exc}).") from None
        for label in result.relativize(dns.name.root).labels:
            if not re.fullmatch(rb"[a-z0-9_*]([a-z0-9_-]*[a-z0-9_])?", label):
                raise RecordError(
                    f"Le nom « {raw} » contient un label invalide « {label.decode(errors='replace')} » : lettres, chiffres, "
                    "tirets (pas au début ni à la fin) et « _ » seulement.",
                    f"The name \"{raw}\" has an invalid label \"{label.decode(errors='replace')}\": letters, digits, "
                    "hyphens (not first or last) and \"_\" only.",
                    rfc="RFC 1035 §2.3.1",
                )
        if not result.is_subdomain(self.zone):
            raise RecordError(
                f"« {raw} » n'est pas dans votre zone {zone_text} : vous ne pouvez modifier que les noms qui finissent "
                f"par {zone_text}. Pour _dmarc par exemple : « _dmarc.{zone_text}. » ou simplement « _dmarc ».",
                f"\"{raw}\" is not in your zone {zone_text}: you can only change names ending in {zone_text}. For "
                f"_dmarc for example: \"_dmarc.{zone_text}.\" or just \"_dmarc\".",
            )
        return result

    def _target(self, target: str, what: str, notes: list[str]) -> str:
        text = target.strip()
        if text == ".":
            return text
        if text.endswith("."):
            return text.lower()
        if "." in text:
            notes.append(tr(
                f"Cible « {text} » lue comme le nom complet « {text}. » (dans un fichier de zone, le point final est "
                "obligatoire).",
                f"Target \"{text}\" read as the full name \"{text}.\" (in a zone file the final dot is required).",
            ))
            return text.lower() + "."
        return f"{text.lower()}.{self.zone.to_text()}"

    def _txt(self, value: str, notes: list[str]) -> dns.rdata.Rdata:
        text = value.strip()
        if _ZONE_LINE.search(" " + text):
            raise RecordError(
                "La valeur ressemble à une ligne entière de fichier de zone (« … IN TXT … »). Ne collez que la valeur, "
                "par exemple : v=spf1 mx -all",
                "The value looks like a whole zone-file line (\"… IN TXT …\"). Paste only the value, for example: "
                "v=spf1 mx -all",
            )
        if text.startswith('"'):
            pieces = _TXT_STRINGS.findall(text)
            if not pieces or _TXT_STRINGS.sub("", text):
                raise RecordError(
                    f"Guillemets mal appariés dans « {value} ». Tapez la valeur sans guillemets : le panneau les gère.",
                    f"Unbalanced quotes in \"{value}\". Type the value without quotes: the panel handles them.",
                )
            text = "".join(re.sub(r"\\(.)", r"\1", p) for p in pieces)
            notes.append(tr(
                "Guillemets retirés : ils délimitent les chaînes dans un fichier de zone mais ne font pas partie de la "
                "valeur. Avec des guillemets dans la valeur, SPF/DKIM/DMARC échoueraient.",
                "Quotes removed: they delimit strings in a zone file but are not part of the value. With quotes inside "
                "the value, SPF/DKIM/DMARC would fail.",
            ))
        elif '"' in text:
            raise RecordError(
                f"La valeur contient des guillemets au milieu : « {value} ». Retirez-les : les récepteurs liraient "
                "les guillemets comme du texte et l'enregistrement serait invalide.",
                f"The value contains quotes in the middle: \"{value}\". Remove them: receivers would read the quotes as "
                "text and the record would be invalid.",
            )
        data = text.encode("utf-8")
        if not data:
            raise RecordError("Valeur TXT vide.", "Empty TXT value.")
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)]
        if len(chunks) > 1:
            notes.append(tr(
                f"Valeur de {len(data)} octets découpée en {len(chunks)} chaînes de 255 octets au plus (RFC 1035 §3.3) ; "
                "les récepteurs les recollent sans espace (RFC 7208 §3.3, RFC 6376 §3.6.2.2).",
                f"{len(data)}-byte value split into {len(chunks)} strings of at most 255 bytes (RFC 1035 §3.3); "
                "receivers join them without spaces (RFC 7208 §3.3, RFC 6376 §3.6.2.2).",
            ))
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)

    def _rdata(self, rdtype: int, value: str, notes: list[str]) -> dns.rdata.Rdata:
        value = str(value).strip()
        tname = dns.rdatatype.to_text(rdtype)
        if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
            return self._txt(value, notes)
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                raise RecordError(f"« {value} » n'est pas une adresse IP.", f"\"{value}\" is not an IP address.") from None
            if (addr.version == 4) != (rdtype == dns.rdatatype.A):
                right = "A" if addr.version == 4 else "AAAA"
                raise RecordError(
                    f"{value} est une adresse IPv{addr.version} : utilisez le type {right}.",
                    f"{value} is an IPv{addr.version} address: use type {right}.",
                )
        elif rdtype == dns.rdatatype.MX:
            parts = value.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise RecordError(
                    f"Un MX s'écrit « priorité cible », par exemple « 10 mailcow.labmail.cloud. » (reçu : « {value} »).",
                    f"An MX is written \"priority target\", e.g. \"10 mailcow.labmail.cloud.\" (got \"{value}\").",
                    rfc="RFC 1035 §3.3.9",
                )
            target = parts[1]
            if is_ip_address(target.rstrip(".")):
                raise RecordError(
                    f"Un MX doit pointer vers un nom d'hôte, pas vers une adresse IP ({target}). Utilisez le nom du "
                    "serveur, par exemple « mailcow.labmail.cloud. », qui a lui-même un enregistrement A.",
                    f"An MX must point to a host name, not an IP address ({target}). Use the server's name, e.g. "
                    "\"mailcow.labmail.cloud.\", which has an A record itself.",
                    rfc="RFC 5321 §5.1",
                )
            value = f"{parts[0]} {self._target(target, 'MX', notes)}"
        elif rdtype in (dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.PTR):
            if is_ip_address(value.rstrip(".")):
                raise RecordError(
                    f"Un {tname} pointe vers un nom, pas vers une adresse IP ({value}) : pour une adresse, utilisez A ou AAAA.",
                    f"A {tname} points to a name, not an IP address ({value}): for an address, use A or AAAA.",
                )
            value = self._target(value, tname, notes)
        elif rdtype == dns.rdatatype.SRV:
            parts = value.split()
            if len(parts) != 4:
                raise RecordError(
                    f"Un SRV s'écrit « priorité poids port cible », par exemple « 0 0 443 mailcow.labmail.cloud. » "
                    f"(reçu : « {value} »).",
                    f"An SRV is written \"priority weight port target\", e.g. \"0 0 443 mailcow.labmail.cloud.\" "
                    f"(got \"{value}\").",
                    rfc="RFC 2782",
                )
            value = " ".join(parts[:3] + [self._target(parts[3], "SRV", notes)])
        elif rdtype == dns.rdatatype.SOA or rdtype == dns.rdatatype.ANY:
            raise RecordError(
                "Le SOA de la zone est géré par le serveur : vous ne pouvez pas le modifier.",
                "The zone's SOA is managed by the server: you cannot change it.",
            )
        try:
            return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=self.zone, relativize=False)
        except Exception as exc:
            raise RecordError(
                f"Valeur {tname} invalide « {value} » ({exc}).", f"Invalid {tname} value \"{value}\" ({exc}).",
            ) from None

    def _ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.default_ttl
        if not isinstance(ttl, int) or not 0 <= ttl <= 2**31 - 1:
            raise RecordError(
                f"TTL « {ttl} » invalide : un nombre de secondes, par exemple 300 (5 minutes) ou 3600 (1 heure).",
                f"Invalid TTL \"{ttl}\": a number of seconds, e.g. 300 (5 minutes) or 3600 (1 hour).",
                rfc="RFC 2181 §8",
            )
        return ttl

    def _check_semantics(self, name: dns.name.Name, rdtype: int, rdatas: Iterable[dns.rdata.Rdata], notes: list[str],
                         replacing: bool) -> None:
        """Checks that need the zone's current content or other names (CNAME rules, MX targets)."""
        if rdtype == dns.rdatatype.CNAME and name == self.zone:
            raise RecordError(
                "Un CNAME ne peut pas être à l'apex de la zone : il y a déjà le SOA et les NS (et le MX…).",
                "A CNAME cannot be at the zone apex: the SOA and NS (and MX…) are already there.",
                rfc="RFC 1034 §3.6.2",
            )
        current = self.list()
        at_name = {r.type for r in current if r.name == name.to_text()}
        if rdtype == dns.rdatatype.CNAME and (at_name - {"CNAME"}):
            raise RecordError(
                f"{name} a déjà d'autres enregistrements ({', '.join(sorted(at_name))}) : un CNAME doit être seul à son "
                "nom. Supprimez-les d'abord, ou choisissez un autre nom.",
                f"{name} already has other records ({', '.join(sorted(at_name))}): a CNAME must be alone at its name. "
                "Delete them first, or choose another name.",
                rfc="RFC 1034 §3.6.2",
            )
        if rdtype != dns.rdatatype.CNAME and "CNAME" in at_name:
            raise RecordError(
                f"{name} est un alias (CNAME) : il ne peut pas avoir d'autre enregistrement. Supprimez le CNAME d'abord.",
                f"{name} is an alias (CNAME): it cannot have other records. Delete the CNAME first.",
                rfc="RFC 1034 §3.6.2",
            )
        if rdtype in (dns.rdatatype.MX, dns.rdatatype.SRV):
            for rdata in rdatas:
                target = rdata.exchange if rdtype == dns.rdatatype.MX else rdata.target  # type: ignore[attr-defined]
                if target == dns.name.root:
                    continue
                alias = lookup(target.to_text(), "A", world=self.world)
                if alias.cnames:
                    kind = "MX" if rdtype == dns.rdatatype.MX else "SRV"
                    raise RecordError(
                        f"La cible {target} est un alias (CNAME vers {alias.cnames[-1].value}) : un {kind} doit pointer "
                        f"vers le nom canonique. Utilisez « {alias.cnames[-1].value} ».",
                        f"The target {target} is an alias (CNAME to {alias.cnames[-1].value}): an {kind} must point to "
                        f"the canonical name. Use \"{alias.cnames[-1].value}\".",
                        rfc="RFC 2181 §10.3",
                    )
                if not alias.ok and not lookup(target.to_text(), "AAAA", world=self.world).ok:
                    notes.append(tr(
                        f"Attention : {target} n'a pas (encore) d'adresse A ni AAAA : le courrier ne pourra pas y être livré.",
                        f"Warning: {target} has no A or AAAA address (yet): mail cannot be delivered there.",
                    ))
        if rdtype == dns.rdatatype.TXT and not replacing:
            for rdata in rdatas:
                value = b"".join(rdata.strings).decode(errors="replace").lower()  # type: ignore[attr-defined]
                if value.startswith("v=spf1") and any(r.name == name.to_text() and r.type == "TXT" and r.value.lower().startswith("v=spf1") for r in current):
                    raise RecordError(
                        f"{name} a déjà un enregistrement SPF : un domaine ne doit en avoir qu'un (sinon permerror). "
                        "Utilisez replace() pour le remplacer.",
                        f"{name} already has an SPF record: a domain must have only one (else permerror). Use replace() "
                        "to replace it.",
                        rfc="RFC 7208 §4.5",
                    )

    def _send(self, update: dns.update.UpdateMessage) -> None:
        try:
            response = dns.query.tcp(update, self.server[0], port=self.server[1], timeout=self.timeout)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerError):
            raise UpdateRefused(
                f"Le serveur rejette la clé TSIG « {self._tsig.name} » (NOTAUTH) : nom ou secret faux. Reprenez la clé "
                "fournie pour votre zone.",
                f"The server rejects the TSIG key \"{self._tsig.name}\" (NOTAUTH): wrong name or secret. Use the key "
                "given for your zone.",
                rfc="RFC 8945 §5.2",
            ) from None
        except (dns.exception.Timeout, OSError) as exc:
            raise DNSLookupFailed(
                f"Le serveur DNS {self.server[0]}#{self.server[1]} ne répond pas ({exc}). Le lab est-il démarré ?",
                f"The DNS server {self.server[0]}#{self.server[1]} does not answer ({exc}). Is the lab running?",
            ) from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        reasons = {
            dns.rcode.REFUSED: ("le serveur refuse : cette clé ne peut pas modifier cette zone, ou la modification touche "
                                "au SOA/NS de l'apex, mêle un CNAME à d'autres données, ou rendrait un enregistrement "
                                "trop gros pour être servi (plus de 16 Ko ou de 100 valeurs au même nom et type)",
                                "the server refuses: this key may not change this zone, or the change touches the apex "
                                "SOA/NS, mixes a CNAME with other data, or would make a record set too big to be served "
                                "(over 16 KiB or 100 values at one name and type)"),
            dns.rcode.NOTAUTH: ("le serveur ne fait pas autorité pour cette zone, ou la clé est inconnue",
                                "the server is not authoritative for this zone, or the key is unknown"),
            dns.rcode.NOTZONE: ("un nom est hors de la zone", "a name is outside the zone"),
            dns.rcode.SERVFAIL: ("le serveur n'a pas pu enregistrer la modification ; réessayez",
                                 "the server could not save the change; retry"),
        }
        fr, en = reasons.get(rcode, ("réponse inattendue", "unexpected reply"))
        raise UpdateRefused(f"Mise à jour refusée ({name}) : {fr}.", f"Update refused ({name}): {en}.", rfc="RFC 2136", rcode=name)

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(self.zone, keyring={self._tsig.name: self._tsig}, keyname=self._tsig.name,
                                        keyalgorithm=self._tsig.algorithm)

    # -- changing ------------------------------------------------------------
    def add(self, name: str, rdtype: str, value: str, ttl: int | None = None) -> Change:
        """Add one record (the RRset keeps its other records)."""
        notes: list[str] = []
        owner, qtype = self._name(name, notes), _check_type(rdtype)
        rdata, seconds = self._rdata(qtype, value, notes), self._ttl(ttl)
        self._check_semantics(owner, qtype, [rdata], notes, replacing=False)
        update = self._update()
        update.add(owner, seconds, rdata)
        self._send(update)
        return Change("add", owner.to_text(), dns.rdatatype.to_text(qtype), (_value_text(rdata),), seconds, tuple(notes))

    def replace(self, name: str, rdtype: str, values: str | list[str], ttl: int | None = None) -> Change:
        """Replace the whole RRset ``name``/``rdtype`` by ``values``, atomically (one update message)."""
        notes: list[str] = []
        owner, qtype = self._name(name, notes), _check_type(rdtype)
        rdatas = [self._rdata(qtype, v, notes) for v in ([values] if isinstance(values, str) else values)]
        seconds = self._ttl(ttl)
        self._check_semantics(owner, qtype, rdatas, notes, replacing=True)
        update = self._update()
        update.replace(owner, seconds, *rdatas)
        self._send(update)
        return Change("replace", owner.to_text(), dns.rdatatype.to_text(qtype), tuple(_value_text(r) for r in rdatas),
                      seconds, tuple(notes))

    def delete(self, name: str, rdtype: str | None = None, value: str | None = None) -> Change:
        """Delete a name (all its records), one RRset (``rdtype``), or one record (``rdtype`` and ``value``)."""
        notes: list[str] = []
        owner = self._name(name, notes)
        update = self._update()
        if rdtype is None:
            update.delete(owner)
            values: tuple[str, ...] = ()
        else:
            qtype = _check_type(rdtype)
            if value is None:
                update.delete(owner, qtype)
                values = ()
            else:
                rdata = self._rdata(qtype, value, notes)
                rdata = self._published(owner, qtype, rdata)
                update.delete(owner, rdata)
                values = (_value_text(rdata),)
        self._send(update)
        return Change("delete", owner.to_text(), rdtype.upper() if rdtype else None, values, None, tuple(notes))


    def _published(self, owner: dns.name.Name, qtype: int, rdata: dns.rdata.Rdata) -> dns.rdata.Rdata:
        """The published record equal to ``rdata`` — for TXT, the one with the same joined text however its strings
        are split — so that a delete really deletes; a record that is not there is an error, not a silent no-op."""
        same_rrset = [r for r in self.list() if r.rdata is not None and r.rdata.rdtype == qtype
                      and dns.name.from_text(r.name) == owner]
        wanted = _value_text(rdata)
        for record in same_rrset:
            if record.rdata == rdata or (qtype == dns.rdatatype.TXT and record.value == wanted):
                return record.rdata
        there = "; ".join(r.value for r in same_rrset) or tr("aucun", "none")
        kind = dns.rdatatype.to_text(qtype)
        raise RecordError(f"{owner} {kind} « {wanted} » n'est pas publié : rien n'a été supprimé. Publiés pour ce nom et "
                          f"ce type : {there}.", f"{owner} {kind} \"{wanted}\" is not published: nothing was deleted. "
                          f"Published for this name and type: {there}.")


def panel(zone: str | None = None, *, world: World | None = None) -> ZonePanel:
    """The DNS panel of the student's zone (or of ``zone``) in the current world."""
    return ZonePanel(zone, world=world)


def txt_strings(value: str) -> str:
    """A TXT value as zone files and ``nsupdate`` take it: quoted strings of at most 255 bytes (RFC 1035 §3.3),
    which receivers join without spaces (RFC 6376 §3.6.2.2). A 2048-bit DKIM key (about 400 characters) pasted as
    one string gives BIND's bare "syntax error"; this form is accepted.

    >>> txt_strings("v=DKIM1; k=rsa; p=" + "A" * 300)[:30]
    '"v=DKIM1; k=rsa; p=AAAAAAAAAAA'
    """
    data = value.strip().encode("utf-8")
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    # dnspython writes each string as BIND reads it: quotes and backslashes escaped, other bytes as \DDD
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks).to_text()


def export_zone(zone: dns.zone.Zone | Iterable[Record], origin: str | None = None, *, default_ttl: int = 300) -> str:
    """A zone as a BIND master file: ``$ORIGIN``/``$TTL``, full names with final dots, MX priorities,
    TXT split into quoted strings of at most 255 bytes. ``named-checkzone`` accepts it.
    """
    if not isinstance(zone, dns.zone.Zone):
        recs = list(zone)
        if origin is None:
            raise RecordError("export_zone : indiquez origin pour une liste d'enregistrements.",
                              "export_zone: give origin for a list of records.")
        built = dns.zone.Zone(dns.name.from_text(origin), relativize=False)
        with built.writer() as txn:
            for r in recs:
                rdata = r.rdata or dns.rdata.from_text("IN", r.type, r.value)
                txn.add(dns.name.from_text(r.name), r.ttl, rdata)
        zone = built
    body = zone.to_text(relativize=False, want_origin=False)
    header = f"$ORIGIN {zone.origin.to_text()}\n$TTL {default_ttl}\n"
    return header + body
