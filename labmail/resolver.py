"""DNS queries whose outcomes explain themselves: the resolver, :func:`lookup`, and the mail records of a domain.

Part of :mod:`labmail.dns` (which re-exports every name): :func:`lookup` asks the world's resolver, or the zone's own
servers with ``authoritative=True``, and returns a :class:`LookupResult` — the records with their TTL, and an
outcome among answer, NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout… each explained.
"""

from __future__ import annotations

import enum
import functools
import html
import ipaddress
import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _nodoh  # noqa: F401 - before dnspython: no DNS-over-HTTPS stack
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from .errors import DNSLookupFailed, RecordError
from .i18n import Text, frame, tr
from .world import World, current

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Outcome", "Record", "LookupResult", "lookup", "Resolver", "records", "mail_records", "MailRecord"]


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
    rdata: Any = field(default=None, repr=False, compare=False)  # the dnspython rdata (MX, SRV… attributes)

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

        rows = [{"nom": r.name, "ttl": r.ttl, "type": r.type, "valeur": r.value} for r in self.cnames + self.records]
        return frame(rows, columns=["nom", "ttl", "type", "valeur"])

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
def _check_type(rdtype: str | int) -> dns.rdatatype.RdataType:
    try:
        value = dns.rdatatype.from_text(rdtype) if isinstance(rdtype, str) else dns.rdatatype.RdataType.make(rdtype)
    except Exception:
        raise RecordError(
            f"Type d'enregistrement inconnu « {rdtype} ». Exemples : A, AAAA, MX, TXT, CNAME, SRV, NS, SOA, PTR.",
            f"Unknown record type \"{rdtype}\". Examples: A, AAAA, MX, TXT, CNAME, SRV, NS, SOA, PTR.",
        ) from None
    return dns.rdatatype.RdataType.make(value)


def _query(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, server: tuple[str, int], *, recursion: bool, timeout: float):
    query = dns.message.make_query(qname, rdtype, use_edns=0, payload=1232)
    if not recursion:
        query.flags &= ~dns.flags.RD
    from dns import query as dns_query  # on first use: the engines' own queries need none of it (~11 ms of import)

    response, _tcp = dns_query.udp_with_fallback(query, server[0], timeout=timeout, port=server[1])
    return response


def _interpret(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, response: dns.message.Message, server: str, elapsed: float) -> LookupResult:
    rcode = response.rcode()
    aa = bool(response.flags & dns.flags.AA)
    answer: dict[tuple[dns.name.Name, int], dns.rrset.RRset] = {}
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


def _ask(qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, server: tuple[str, int], *, recursion: bool, timeout: float) -> LookupResult:
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


def _qname(name: str | dns.name.Name) -> dns.name.Name | None:
    """``name`` as an absolute DNS name (final dot optional), or None if it is not one."""
    try:
        return name if isinstance(name, dns.name.Name) else dns.name.from_text(name.rstrip(".") + ".")
    except dns.exception.DNSException:
        return None


def _query_wire(qname: dns.name.Name, qtype: int, qid: int) -> bytes:
    """The bytes of ``dns.message.make_query(qname, qtype)`` with ID ``qid`` (RD set, no EDNS), without building a
    Message: a header, the name's labels, type and class IN (tests/test_resolver_client.py compares the two)."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + (qname.to_wire() or b"") + struct.pack("!HH", qtype, 1)


_NEGATIVE_SOA: dict[bytes, Record] = {}  # an authority section (uncompressed SOA) → its Record


def _plain_name_end(wire: bytes, start: int) -> int | None:
    """Where the name at ``start`` ends, if it is written without compression pointers, else None."""
    end = start
    while end < len(wire):
        length = wire[end]
        if length == 0:
            return end + 1
        if length > 63:
            return None
        end += 1 + length
    return None


def _negative_soa(authority: bytes) -> Record | None:
    """The SOA of a negative answer's authority section, if it is one SOA record without compression pointers."""
    soa = _NEGATIVE_SOA.get(authority)
    if soa is not None:
        return soa
    owner_end = _plain_name_end(authority, 0)
    if owner_end is None or owner_end + 10 > len(authority):
        return None
    rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", authority, owner_end)
    start = owner_end + 10
    if rtype != dns.rdatatype.SOA or rclass != dns.rdataclass.IN or start + rdlen != len(authority):
        return None
    mname_end = _plain_name_end(authority, start)
    rname_end = _plain_name_end(authority, mname_end) if mname_end is not None else None
    if rname_end is None or rname_end + 20 != len(authority):
        return None
    try:
        owner = dns.name.from_wire(authority, 0)[0]
        rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.SOA, authority, start, rdlen)
    except dns.exception.DNSException:
        return None
    soa = Record(owner.to_text(), ttl, "SOA", _value_text(rdata), rdata)
    if len(_NEGATIVE_SOA) < 4096:
        _NEGATIVE_SOA[authority] = soa
    return soa


def _readable(sock: socket.socket, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(max(0, int(timeout * 1000) + 1)))


def _same_address(source: tuple, destination: tuple[str, int]) -> bool:
    """Whether a datagram comes from the server we asked (as dnspython checks with ``ignore_unexpected``)."""
    if source[1] != destination[1]:
        return False
    if source[0] == destination[0]:
        return True
    try:
        return ipaddress.ip_address(source[0].split("%")[0]) == ipaddress.ip_address(destination[0].split("%")[0])
    except ValueError:  # the server was given by name: its port is what we can compare
        return True


def _negative_fast(qname: dns.name.Name, qtype: dns.rdatatype.RdataType, query: bytes, wire: bytes, server: str, elapsed: float) -> LookupResult | None:
    """NXDOMAIN or NODATA read from the bytes when the answer has the plainest form — our question echoed byte for
    byte, no answer, one uncompressed SOA in authority, nothing else — as the lab's server writes it. Otherwise None
    and dnspython parses it (the result is the same: tests/test_resolver_client.py compares the two paths)."""
    if len(wire) <= len(query) or wire[:2] != query[:2]:
        return None
    flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHHH", wire, 2)
    rcode = flags & 0xF
    if (not flags & 0x8000 or flags & 0x7A00 or qdcount != 1 or ancount or nscount != 1 or arcount
            or rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or wire[12:len(query)] != query[12:]):
        return None
    soa = _negative_soa(wire[len(query):])
    if soa is None:
        return None
    rcode_value = dns.rcode.Rcode(rcode)
    return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype),
                        Outcome.NXDOMAIN if rcode_value == dns.rcode.NXDOMAIN else Outcome.NODATA, (), (), soa, server,
                        bool(flags & 0x0400), dns.rcode.to_text(rcode_value), round(elapsed * 1000, 2), ())


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
        qname = _qname(name)
        if qname is None:
            return LookupResult(str(name), dns.rdatatype.to_text(qtype), Outcome.ERROR, rcode="bad name")
        self.count += 1
        if self.exchange is not None:
            label = f"{self.servers[0][0]}#{self.servers[0][1]}" if self.servers else "lab"
            start = time.perf_counter()
            query = dns.message.make_query(qname, qtype)
            try:
                response = self.exchange(query)
            except (dns.exception.Timeout, TimeoutError):
                return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.TIMEOUT, server=label, rcode="-")
            except (OSError, RuntimeError, dns.exception.DNSException) as exc:  # e.g. the lab's loop is stopping
                return LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.ERROR, server=label,
                                    rcode=type(exc).__name__)
            return _interpret(qname, qtype, response, label, time.perf_counter() - start)
        result = None
        for server in self.servers:
            result = self._ask(qname, qtype, server)
            if result.outcome not in (Outcome.TIMEOUT, Outcome.UNREACHABLE, Outcome.SERVFAIL):
                return result
        assert result is not None
        return result

    def query_many(self, questions: list[tuple[str, str]]) -> list[LookupResult]:
        """The answers to several independent questions, in order, asked together.

        The queries leave at once over one UDP socket to the first server and the answers are matched by ID and
        question as they come back, so the round trips overlap (a domain audit asks ~20 names). A question without
        a usable answer — lost, truncated, refused, malformed… — is then asked again alone through :meth:`query`,
        with its fallbacks: the results are those of ``[self.query(n, t) for n, t in questions]``.

        >>> Resolver(world=current()).query_many([("gmail.test", "MX"), ("_dmarc.gmail.test", "TXT")])  # doctest: +SKIP
        """
        results: list[LookupResult | None] = [None] * len(questions)
        if self.exchange is None and self.servers and len(questions) > 1:
            batch: list[tuple[int, dns.name.Name, dns.rdatatype.RdataType]] = []
            for index, (name, rtype) in enumerate(questions):
                qname = _qname(name)
                if qname is not None:  # else query() says "bad name"
                    batch.append((index, qname, _check_type(rtype)))
            try:
                found, _timed_out = self._udp_round(self.servers[0], [(q, t) for _i, q, t in batch])
            except OSError:
                self._close()  # every question is asked again, one by one
            else:
                for (index, _q, _t), result in zip(batch, found):
                    if result is not None and result.outcome not in (Outcome.SERVFAIL, Outcome.REFUSED, Outcome.ERROR):
                        self.count += 1
                        results[index] = result
        return [result if result is not None else self.query(name, rtype)
                for result, (name, rtype) in zip(results, questions)]

    def _udp_round(self, server: tuple[str, int], questions: list[tuple[dns.name.Name, dns.rdatatype.RdataType]]
                   ) -> tuple[list[LookupResult | None], bool]:
        """Send every question over this resolver's UDP socket, then read the answers until all came or the
        timeout: the results in order (None: no answer, or a truncated one — TCP's job) and whether time ran out.
        A malformed answer to one of our IDs is an ERROR result; stray datagrams are ignored."""
        host, port = server
        label = f"{host}#{port}"
        sock = self._socket(host)
        destination = (host, port)
        results: list[LookupResult | None] = [None] * len(questions)
        pending: dict[int, tuple[int, bytes]] = {}
        start = time.perf_counter()
        for index, (qname, qtype) in enumerate(questions):
            qid = int.from_bytes(os.urandom(2), "big")
            while qid in pending:
                qid = (qid + 1) & 0xFFFF
            wire = _query_wire(qname, qtype, qid)
            pending[qid] = (index, wire)
            sock.sendto(wire, destination)
        deadline = start + self.timeout
        timed_out = False
        while pending:
            left = deadline - time.perf_counter()
            if left <= 0 or not _readable(sock, left):
                timed_out = True
                break
            try:
                data, source = sock.recvfrom(65535)
            except BlockingIOError:
                continue
            if len(data) < 12 or not _same_address(source, destination):
                continue
            entry = pending.get(int.from_bytes(data[:2], "big"))
            if entry is None:
                continue
            index, wire = entry
            qname, qtype = questions[index]
            elapsed = time.perf_counter() - start
            result = _negative_fast(qname, qtype, wire, data, label, elapsed)
            if result is None:
                try:
                    response = dns.message.from_wire(data, raise_on_truncation=False)
                except dns.exception.DNSException as exc:
                    del pending[int.from_bytes(data[:2], "big")]
                    results[index] = LookupResult(qname.to_text(), dns.rdatatype.to_text(qtype), Outcome.ERROR,
                                                  server=label, rcode=type(exc).__name__)
                    continue
                query = dns.message.make_query(qname, qtype)
                query.id = response.id
                if not query.is_response(response):
                    continue  # our ID, but not our question (or not a response): keep waiting, as dnspython does
                del pending[response.id]
                if response.flags & dns.flags.TC:
                    continue  # results[index] stays None: asked again over TCP
                result = _interpret(qname, qtype, response, label, elapsed)
            else:
                del pending[int.from_bytes(data[:2], "big")]
            results[index] = result
        return results, timed_out

    def _ask(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, server: tuple[str, int]) -> LookupResult:
        """One query over a UDP socket kept open by this resolver (TCP when the answer is truncated)."""
        label = f"{server[0]}#{server[1]}"
        start = time.perf_counter()
        try:
            found, timed_out = self._udp_round(server, [(qname, qtype)])
            if found[0] is not None:
                return found[0]
            if timed_out:
                raise dns.exception.Timeout
            # truncated: over TCP, no EDNS, as dnspython's resolver
            from dns import query as dns_query

            query = dns.message.make_query(qname, qtype)
            response = dns_query.tcp(query, server[0], timeout=self.timeout, port=server[1])
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

    rows = mail_records(domain, selector=selector, authoritative=authoritative, world=world)
    return frame(
        [{"rôle": r.role, "nom": r.name, "type": r.type, "ttl": r.ttl, "valeur": r.value, "résultat": r.outcome.value} for r in rows],
        columns=["rôle", "nom", "type", "ttl", "valeur", "résultat"],
    ).astype({"ttl": "Int64"})
