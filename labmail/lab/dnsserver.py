"""The lab's authoritative DNS server, built on dnspython.

It behaves like BIND or Knot would for the zones of the local world:

* authoritative answers (AA) from the hosted zone with the longest origin;
  NXDOMAIN and NODATA carry the zone's SOA in the authority section with the
  negative-caching TTL min(SOA TTL, MINIMUM) (RFC 2308); empty non-terminals
  are NODATA; wildcards (RFC 4592); CNAME chains followed across hosted
  zones (at most 8 links, loops stopped); referrals with glue (AA cleared)
  for delegations whose child is not hosted here; A/AAAA of MX, SRV and NS
  targets in the additional section;
* UDP answers limited to 512 bytes or the client's EDNS payload size, else
  TC=1 and the client retries over TCP (RFC 1035, RFC 6891); EDNS version
  above 0 gets BADVERS;
* RFC 2136 UPDATE with TSIG (RFC 8945): a key may change only the zones it
  is given; unknown key or bad signature → NOTAUTH (BADKEY/BADSIG), another
  zone → REFUSED, no key → REFUSED; all prerequisite forms; apex SOA and NS
  protected; CNAME-and-other-data refused; the serial is bumped and the zone
  saved atomically *before* the reply, so an acknowledged change survives a
  crash;
* AXFR over TCP with the zone's key (``dig axfr -k``);
* malformed packets get FORMERR (or are dropped when not even a header can
  be read), unknown opcodes NOTIMP, other classes REFUSED; the server never
  dies on input.

One engine serves one *view* of the zones (see :class:`View`): the lab
runs three — the resolver students query, the registry's server
``ns1.labmail.cloud`` (root, TLDs, ``labmail.cloud`` with its delegations,
providers) and the students' server ``dns.labmail.cloud``, the only one
that accepts UPDATE and AXFR.

Answers to plain queries are cached as wire bytes (keyed by the query bytes
after the ID) and the cache is emptied on every zone change.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.tsig
import dns.update
import dns.zone

from .limits import start_stream_server
from .zones import KeyStore, ZoneStore

log = logging.getLogger("labmail.lab.dns")

IN = dns.rdataclass.IN
A, AAAA, NS, SOA, CNAME, MX, SRV, DS, ANY = (
    dns.rdatatype.A,
    dns.rdatatype.AAAA,
    dns.rdatatype.NS,
    dns.rdatatype.SOA,
    dns.rdatatype.CNAME,
    dns.rdatatype.MX,
    dns.rdatatype.SRV,
    dns.rdatatype.DS,
    dns.rdatatype.ANY,
)
OUR_PAYLOAD = 1232  # the DNS Flag Day 2020 value: no IP fragmentation
MAX_CNAME_CHAIN = 8
CACHE_LIMIT = 20_000
_TSIG_ERRORS = {dns.rcode.BADSIG: "BADSIG", dns.rcode.BADKEY: "BADKEY", dns.rcode.BADTIME: "BADTIME"}
# What one student zone may hold, so that every answer and every zone transfer can be served (a DNS message carries
# at most 65,535 bytes) and one zone cannot fill the shared server: BIND has max-records-per-type (default 100);
# a 4096-bit DKIM key is under 1 KiB.
MAX_RRSET_BYTES = 16_384
MAX_RECORDS_PER_RRSET = 100
MAX_ZONE_BYTES = 1_048_576
_AXFR_MESSAGE_BYTES = 60_000  # leaves room for the header, the question and TSIG in a 64 KiB message
_FORBIDDEN_UPDATE_TYPES = {
    dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA,
    dns.rdatatype.MAILB, dns.rdatatype.OPT, dns.rdatatype.TSIG, dns.rdatatype.TKEY,
}
#: not added by UPDATE (REFUSED, nothing applied): DNAME, which this server does not apply (RFC 6672 synthesis: the
#: names below it answered NXDOMAIN), and DNSSEC records in zones that are not signed (BIND refuses them too)
_REFUSED_UPDATE_TYPES = {
    dns.rdatatype.DNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC, dns.rdatatype.NSEC3, dns.rdatatype.NSEC3PARAM,
    dns.rdatatype.DNSKEY,
}
#: bytes of replies the answer caches may hold (each, UDP and TCP): a query that differs in one bit is a new entry
#: (its name's case, its EDNS size), and one client asking for a large answer under many forms grew the lab by
#: gigabytes; past the budget the cache starts again empty
CACHE_BYTES = 8 << 20


def _give_up(response: dns.message.Message) -> None:
    """A resolver's failure: SERVFAIL, no partial answer."""
    response.answer = []
    response.set_rcode(dns.rcode.SERVFAIL)


def _to_wire(response: dns.message.Message, limit: int) -> bytes | None:
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        return None


def _fit(response: dns.message.Message, limit: int, tcp: bool) -> bytes:
    """The reply within ``limit`` bytes: the additional section left out first, without TC (RFC 2181 §9: it is
    extra data); then, over UDP, the header and question with TC (the client asks again over TCP); over TCP, the
    answer's RRsets that fit (an ANY at a name with 64 KB of records: BIND answers the same). A reply over 64 KB
    gave SERVFAIL and a traceback in the log at each query."""
    out = _to_wire(response, limit)
    if out is not None:
        return out
    response.additional = []
    out = _to_wire(response, limit)
    if out is not None:
        return out
    if tcp:
        response.authority = []
        while response.answer:
            response.answer.pop()
            out = _to_wire(response, limit)
            if out is not None:
                return out
    response.answer, response.authority, response.additional = [], [], []
    response.flags |= dns.flags.TC
    return response.to_wire()


@dataclass(frozen=True)
class View:
    """Which zones an engine serves and how it behaves.

    ``served`` picks the zones (``None``: all); ``authoritative`` sets AA on
    answers (a resolver view sets RA instead); ``accepts_changes`` allows
    UPDATE and AXFR.
    """

    name: str
    served: Callable[[dns.name.Name], bool] | None = None
    authoritative: bool = True
    accepts_changes: bool = False


class _Refuse(Exception):
    """Stop processing an UPDATE with this rcode (the reason goes to the log)."""

    def __init__(self, rcode: int, reason: str) -> None:
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason


def _wire_size(name: dns.name.Name, rds: dns.rdataset.Rdataset) -> int:
    """The uncompressed size of a record set on the wire (an upper bound of what it takes in a message)."""
    import io

    buffer = io.BytesIO()
    rds.to_wire(name, buffer)
    return buffer.tell()


def _header_only_reply(wire: bytes, rcode: int, *, recursion_available: bool = False) -> bytes:
    """A reply built from the query header alone (when the rest cannot be parsed); RA as the server offers it."""
    qid, flags = struct.unpack("!HH", wire[:4])
    opcode_bits = flags & 0x7800
    rd = flags & 0x0100
    ra = 0x0080 if recursion_available else 0
    return struct.pack("!HHHHHH", qid, 0x8000 | opcode_bits | rd | ra | (rcode & 0xF), 0, 0, 0, 0)


class DNSEngine:
    """Turns query bytes into reply bytes. Transport-free, so tests call it directly."""

    def __init__(self, zones: ZoneStore, keys: KeyStore, view: View,
                 on_change: Callable[[dns.name.Name], None] | None = None,
                 forwards: dict[dns.name.Name, tuple[str, int]] | None = None) -> None:
        self.zones = zones
        self.keys = keys
        self.view = view
        self.on_change = on_change
        #: zones served elsewhere (a real school's BIND): the resolver asks that server for every name in them
        self.forwards = forwards if forwards is not None and not view.authoritative else {}
        self._cache: dict[bool, dict[bytes, bytes]] = {False: {}, True: {}}
        self._cache_bytes = {False: 0, True: 0}
        self._soa_wire: dict[dns.name.Name, bytes] = {}  # zone → its negative-answer SOA, rendered once
        self._cache_generation = zones.generation

    # -- entry point --------------------------------------------------------
    def cached(self, wire: bytes) -> bytes | None:
        """The cached reply to this UDP query, or None when :meth:`handle` has to decide (a miss, a zone changed
        since the answer was cached, a forwarded zone). Only reads: safe from the UDP thread while the event loop
        changes zones — a zone change moves ``zones.generation`` before its UPDATE is answered, so a query sent
        after that answer never gets a cached reply from before it."""
        if len(wire) < 12 or self.forwards or self._cache_generation != self.zones.generation:
            return None
        hit = self._cache[False].get(wire[2:])
        return None if hit is None else wire[:2] + hit

    def off_loop(self, wire: bytes) -> bool:
        """Whether a UDP thread may answer this message itself: a plain query (not a response, not an UPDATE or a
        NOTIFY) when no zone is forwarded — it only reads zones, under their lock. The rest goes to the event loop."""
        return len(wire) >= 12 and not self.forwards and not wire[2] & 0x80 and (wire[2] >> 3) & 0xF == 0

    def handle(self, wire: bytes, *, tcp: bool = False, peer: object = None) -> list[bytes]:
        """Answer one DNS message; returns the reply messages (none = drop). Thread-safe: zones are read (and
        changed, by an UPDATE) under the zone store's lock; a forwarded zone's server is asked outside it."""
        if len(wire) < 12:
            return []
        if self.forwards:
            server = self._forwarded(wire)
            if server is not None:
                try:
                    return [self._chase(self._forward(wire, tcp, server), tcp)]
                except Exception:  # never die on what another server answers
                    log.exception("forwarded zone: %s:%s", *server)
                    return [_header_only_reply(wire, dns.rcode.SERVFAIL, recursion_available=True)]
        with self.zones.lock:
            return self._answer_locked(wire, tcp, peer)

    def _answer_locked(self, wire: bytes, tcp: bool, peer: object) -> list[bytes]:
        if self._cache_generation != self.zones.generation:
            self._cache[False].clear()
            self._cache[True].clear()
            self._cache_bytes = {False: 0, True: 0}
            self._soa_wire.clear()
            self._cache_generation = self.zones.generation
        cache = self._cache[tcp]
        hit = cache.get(wire[2:])
        if hit is not None:
            return [wire[:2] + hit]
        if wire[2] & 0x80:  # QR set: a response, never answer it (no reflection loops)
            return []
        try:
            fast = self._negative_fast(wire)
            if fast is not None:
                self._remember(tcp, wire, fast)  # asked again (a resolver retrying, a class asking one name): cached
                return [fast]
            return self._handle(wire, tcp, cache, peer)
        except Exception:  # never die on input
            log.exception("internal error on a DNS message from %s", peer)
            return [_header_only_reply(wire, dns.rcode.SERVFAIL, recursion_available=not self.view.authoritative)]

    def _remember(self, tcp: bool, wire: bytes, reply: bytes) -> None:
        """Keep ``reply`` for the same query (ID aside), within :data:`CACHE_LIMIT` entries and :data:`CACHE_BYTES`."""
        cache = self._cache[tcp]
        if len(cache) >= CACHE_LIMIT or self._cache_bytes[tcp] + len(reply) > CACHE_BYTES:
            cache.clear()
            self._cache_bytes[tcp] = 0
        cache[wire[2:]] = reply[2:]
        self._cache_bytes[tcp] += len(wire) + len(reply)

    def _forwarded(self, wire: bytes) -> tuple[str, int] | None:
        """The server of the forwarded zone holding this query's name, if any (a plain query, not a response)."""
        if wire[2] & 0x80 or (wire[2] >> 3) & 0xF != dns.opcode.QUERY:
            return None
        try:
            question = dns.message.from_wire(wire, question_only=True).question
        except Exception:  # the normal path says FORMERR
            return None
        if len(question) != 1:
            return None
        name = question[0].name
        found = [(zone, server) for zone, server in self.forwards.items() if name.is_subdomain(zone)]
        return max(found, key=lambda f: len(f[0]))[1] if found else None

    def _forward(self, wire: bytes, tcp: bool, server: tuple[str, int]) -> bytes:
        """Ask ``server`` this very query (same ID) and hand its answer back, as a forwarding resolver does;
        SERVFAIL if it does not answer within a second. Never cached: the zone changes under the students' updates."""
        import socket

        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        try:
            if tcp:
                with socket.create_connection(server, timeout=1.0) as sock:
                    sock.sendall(struct.pack("!H", len(wire)) + wire)
                    head = _recv_exactly(sock, 2)
                    return _recv_exactly(sock, struct.unpack("!H", head)[0])
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(1.0)
                sock.sendto(wire, server)
                while True:
                    data, source = sock.recvfrom(65535)
                    if source[:2] == server and data[:2] == wire[:2]:
                        return data
        except (OSError, ValueError):
            log.warning("forwarded zone: %s:%s did not answer", *server)
            return _header_only_reply(wire, dns.rcode.SERVFAIL, recursion_available=True)

    def _chase(self, reply: bytes, tcp: bool, depth: int = 0) -> bytes:
        """A forwarded zone's server is authoritative, not recursive: an answer that ends on a CNAME to a name it
        does not serve (``autoconfig.<domaine> CNAME mail.<école>``) is completed here, as a recursive resolver does
        (RFC 1034 §4.3.2 step 3a) — the target asked of whoever serves it, the lab or a forwarded server."""
        try:
            response = dns.message.from_wire(reply)
        except Exception:
            return reply
        if response.rcode() != dns.rcode.NOERROR or not response.question or depth > 7:
            return reply
        question = response.question[0]
        qtype = question.rdtype
        if qtype in (dns.rdatatype.CNAME, ANY) or dns.rdatatype.is_metatype(qtype):
            return reply
        name, seen = question.name, set()
        by_owner = {(rr.name, rr.rdtype): rr for rr in response.answer}
        while (name, qtype) not in by_owner and (name, dns.rdatatype.CNAME) in by_owner and name not in seen:
            seen.add(name)
            name = by_owner[(name, dns.rdatatype.CNAME)][0].target
        if not seen or name in seen or (name, qtype) in by_owner:
            return reply  # no CNAME, a loop, or the chain is complete
        follow = dns.message.make_query(name, qtype)
        follow.flags |= dns.flags.RD
        follow_wire = follow.to_wire()
        server = self._forwarded(follow_wire)  # asked here, not through handle(): the depth stays counted
        answer = self._forward(follow_wire, tcp, server) if server is not None else (self.handle(follow_wire, tcp=tcp)
                                                                                     or [None])[0]
        if answer is None:
            return reply
        try:
            tail = dns.message.from_wire(self._chase(answer, tcp, depth + 1))
        except Exception:
            return reply
        response.answer += tail.answer
        response.set_rcode(tail.rcode())
        response.flags &= ~dns.flags.AA  # the answer now comes from more than one zone
        response.flags |= dns.flags.RA
        return response.to_wire()

    def _negative_fast(self, wire: bytes) -> bytes | None:
        """NXDOMAIN and NODATA answers to a plain query, built from the query's bytes and the zone's SOA rendered
        once — no message parsed nor rendered by dnspython. A name that does not exist is, by nature, asked once
        (a resolver caches the answer): this is the path of every distinct miss, most of a busy server's work.

        Only the simplest form is taken here: opcode QUERY, one question without compression, class IN, an
        ordinary type, no answer/authority, at most an OPT of version 0 without options (no TSIG); and only when
        the answer is negative. Anything else (None) goes through :meth:`_handle`, whose answers these are byte
        for byte in meaning (tests/test_dns_server.py compares the two paths)."""
        if len(wire) < 17 or wire[2] & 0xFA:  # QR, an opcode other than QUERY, or TC set: the full path decides
            return None
        qdcount, ancount, nscount, arcount = struct.unpack_from("!HHHH", wire, 4)
        if qdcount != 1 or ancount or nscount or arcount > 1:
            return None
        end, labels = 12, []
        while True:
            length = wire[end]
            if length == 0:
                end += 1
                break
            if length > 63 or end + 1 + length >= len(wire):  # a compression pointer, or cut short
                return None
            labels.append(wire[end + 1:end + 1 + length])
            end += 1 + length
        if end > 12 + 255 or end + 4 > len(wire):
            return None
        qtype, qclass = struct.unpack_from("!HH", wire, end)
        end += 4
        if qclass != IN or qtype in (ANY, CNAME, DS) or dns.rdatatype.is_metatype(qtype) or qtype == 0:
            return None
        edns = False
        if arcount:
            if len(wire) != end + 11 or wire[end] != 0:
                return None
            rtype, _payload, ttl, rdlen = struct.unpack_from("!HHIH", wire, end + 1)
            if rtype != dns.rdatatype.OPT or (ttl >> 16) & 0xFF or rdlen:  # TSIG, EDNS version ≠ 0, options
                return None
            edns = True
        elif len(wire) != end:
            return None
        try:
            qname = dns.name.Name([*labels, b""])
        except dns.exception.DNSException:
            return None
        zone = self.zones.find_zone(qname, self.view.served)
        if zone is None or self._delegation(zone, qname) is not None:
            return None
        node = zone.nodes.get(qname)
        if node is None:
            existing = self.zones.existing[zone.origin]
            if qname in existing:
                rcode = dns.rcode.NOERROR  # an empty non-terminal
            elif self._wildcard(zone, qname) is not None:
                return None
            else:
                rcode = dns.rcode.NXDOMAIN
        elif node.get_rdataset(IN, qtype) is not None or node.get_rdataset(IN, CNAME) is not None:
            return None
        else:
            rcode = dns.rcode.NOERROR
        soa = self._soa_wire.get(zone.origin)
        if soa is None:
            soa = self._soa_wire[zone.origin] = self._render_negative_soa(zone)
        flags = 0x8000 | (struct.unpack_from("!H", wire, 2)[0] & 0x0100) | rcode
        flags |= 0x0400 if self.view.authoritative else 0x0080  # AA, or RA on the resolver
        opt = struct.pack("!BHHIH", 0, dns.rdatatype.OPT, OUR_PAYLOAD, 0, 0) if edns else b""
        return (wire[:2] + struct.pack("!HHHHH", flags, 1, 0, 1, 1 if edns else 0) + wire[12:end]
                + soa + opt)

    @staticmethod
    def _render_negative_soa(zone: dns.zone.Zone) -> bytes:
        """The zone's SOA as a negative answer carries it (RFC 2308 §3: TTL = min(TTL, MINIMUM)), uncompressed."""
        import io

        soa_rds = zone.nodes[zone.origin].get_rdataset(IN, SOA)
        soa = dns.rrset.RRset(zone.origin, IN, SOA)
        soa.update(soa_rds)
        soa.ttl = min(soa_rds.ttl, soa_rds[0].minimum)
        out = io.BytesIO()
        soa.to_wire(out, None, None)
        return out.getvalue()

    def _handle(self, wire: bytes, tcp: bool, cache: dict[bytes, bytes], peer: object) -> list[bytes]:
        opcode = (wire[2] >> 3) & 0xF
        if opcode not in (dns.opcode.QUERY, dns.opcode.UPDATE):
            return [_header_only_reply(wire, dns.rcode.NOTIMP, recursion_available=not self.view.authoritative)]
        try:
            msg = dns.message.from_wire(wire, keyring=self.keys.keyring)
        except dns.message.UnknownTSIGKey:
            return self._tsig_error(wire, dns.rcode.BADKEY, peer)
        except dns.tsig.BadSignature:
            return self._tsig_error(wire, dns.rcode.BADSIG, peer)
        except dns.tsig.BadTime:
            return self._tsig_error(wire, dns.rcode.BADTIME, peer)
        except dns.tsig.BadAlgorithm:  # a key this server knows, with another algorithm (RFC 8945 §5.2.1: BADKEY)
            return self._tsig_error(wire, dns.rcode.BADKEY, peer)
        except Exception:  # FormError, ShortHeader, TrailingJunk, bad rdata, bad names...
            return [_header_only_reply(wire, dns.rcode.FORMERR, recursion_available=not self.view.authoritative)]

        if msg.edns > 0:
            response = dns.message.make_response(msg, our_payload=OUR_PAYLOAD)
            response.use_edns(0, 0, OUR_PAYLOAD)
            response.set_rcode(dns.rcode.BADVERS)
            return [response.to_wire()]
        if opcode == dns.opcode.UPDATE:
            return [self._update(msg, peer)]
        ixfr = len(msg.question) == 1 and msg.question[0].rdtype == dns.rdatatype.IXFR
        if len(msg.question) != 1 or msg.answer or (msg.authority and not ixfr):  # IXFR carries the client's SOA
            # FORMERR, with an OPT record when the query had one (RFC 6891 §7), as BIND answers
            refusal = dns.message.make_response(msg, our_payload=OUR_PAYLOAD,
                                                recursion_available=not self.view.authoritative)
            refusal.set_rcode(dns.rcode.FORMERR)
            return [refusal.to_wire()]
        question = msg.question[0]
        response = dns.message.make_response(msg, our_payload=OUR_PAYLOAD,
                                             recursion_available=not self.view.authoritative)
        if question.rdclass != IN:
            response.set_rcode(dns.rcode.REFUSED)
            return [response.to_wire()]
        qtype = question.rdtype
        if qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            if not tcp:
                response.set_rcode(dns.rcode.FORMERR)
                return [response.to_wire()]
            return self._axfr(msg, response, peer)
        if dns.rdatatype.is_metatype(qtype) and qtype != ANY:
            response.set_rcode(dns.rcode.NOTIMP if qtype in (dns.rdatatype.MAILA, dns.rdatatype.MAILB) else dns.rcode.FORMERR)
            return [response.to_wire()]

        self._answer(response, question.name, qtype)
        # over UDP, no more than we announce (RFC 6891 §6.2.5, as BIND's max-udp-size): a client asking for 64 KB
        # turned a 57-byte query into a 60 KB answer, an amplifier in a class lab on a LAN address
        limit = 65535 if tcp else (max(512, min(msg.payload, OUR_PAYLOAD)) if msg.edns >= 0 else 512)
        out = _fit(response, limit, tcp)
        if not msg.had_tsig:
            self._remember(tcp, wire, out)
        return [out]

    def _serves(self, origin: dns.name.Name) -> bool:
        return self.view.served is None or self.view.served(origin)

    # -- queries ------------------------------------------------------------
    def _answer(self, response: dns.message.Message, qname: dns.name.Name, qtype: int) -> None:
        zones, served = self.zones, self.view.served
        zone = zones.find_zone(qname, served)
        if zone is None:  # an authoritative server asked about a zone it does not serve
            response.set_rcode(dns.rcode.REFUSED)
            return
        cut = self._delegation(zone, qname)
        if cut is not None and not (qtype == DS and cut == qname):
            if self._recursing(response):  # a resolver asked to recurse answers or fails, it does not refer
                _give_up(response)  # (RFC 1034 §4.3.1): the delegated server is out of reach
                return
            self._referral(response, zone, cut)
            return
        if self.view.authoritative:
            response.flags |= dns.flags.AA
        current, seen = qname, set()
        for _ in range(MAX_CNAME_CHAIN + 1):
            seen.add(current)
            node = zone.nodes.get(current)
            owner = current
            if node is None and current not in zones.existing[zone.origin]:
                node = self._wildcard(zone, current)
            if node is None:
                if current in zones.existing[zone.origin]:
                    self._negative(response, zone, dns.rcode.NOERROR)  # empty non-terminal
                else:
                    self._negative(response, zone, dns.rcode.NXDOMAIN)
                return
            if qtype == ANY:
                for rds in node.rdatasets:
                    self._add(response.answer, owner, rds)
                return
            rds = node.get_rdataset(IN, qtype)
            if rds is not None:
                self._add(response.answer, owner, rds)
                self._additional(response, rds)
                return
            cname = node.get_rdataset(IN, CNAME)
            if cname is None or qtype == CNAME:
                self._negative(response, zone, dns.rcode.NOERROR)
                return
            self._add(response.answer, owner, cname)
            target = cname[0].target
            if target in seen:
                if self._recursing(response):  # the resolver: a loop is a failure (SERVFAIL, as resolvers say it)
                    _give_up(response)
                return  # a CNAME loop: give the chain, the resolver reports the loop
            next_zone = zones.find_zone(target, served)
            if next_zone is None or self._delegation(next_zone, target) is not None:
                return  # outside what we serve: the resolver continues from here
            current, zone = target, next_zone
        if self._recursing(response):  # a chain longer than MAX_CNAME_CHAIN: the resolver gives up, SERVFAIL
            _give_up(response)

    def _recursing(self, response: dns.message.Message) -> bool:
        """The resolver asked for recursion (RD): it gives an answer or SERVFAIL — NOERROR with a half chain or a
        referral read as "no such data" to a mail server (found by an outside review). Without RD, or on an
        authoritative server, what the zones hold is given as it is."""
        return not self.view.authoritative and bool(response.flags & dns.flags.RD)

    @staticmethod
    def _add(section: list, owner: dns.name.Name, rds: dns.rdataset.Rdataset) -> None:
        rrset = dns.rrset.RRset(owner, rds.rdclass, rds.rdtype, rds.covers)
        rrset.update(rds)
        section.append(rrset)

    def _wildcard(self, zone: dns.zone.Zone, name: dns.name.Name):
        existing = self.zones.existing[zone.origin]
        encloser = name.parent()
        while encloser not in existing and len(encloser) > len(zone.origin):
            encloser = encloser.parent()
        return zone.nodes.get(dns.name.Name((b"*",) + encloser.labels))

    def _delegation(self, zone: dns.zone.Zone, name: dns.name.Name) -> dns.name.Name | None:
        origin_len = len(zone.origin)
        for depth in range(origin_len + 1, len(name) + 1):
            candidate = name if depth == len(name) else name.split(depth)[1]
            node = zone.nodes.get(candidate)
            if node is not None and node.get_rdataset(IN, NS) is not None:
                return candidate
        return None

    def _referral(self, response: dns.message.Message, zone: dns.zone.Zone, cut: dns.name.Name) -> None:
        ns = zone.nodes[cut].get_rdataset(IN, NS)
        self._add(response.authority, cut, ns)
        for rdata in ns:
            self._glue(response, rdata.target, zone)

    def _glue(self, response: dns.message.Message, target: dns.name.Name, zone: dns.zone.Zone | None = None) -> None:
        zone = zone or self.zones.find_zone(target, self.view.served)
        if zone is None or not target.is_subdomain(zone.origin):
            return
        node = zone.nodes.get(target)
        if node is None:
            return
        for rdtype in (A, AAAA):
            rds = node.get_rdataset(IN, rdtype)
            if rds is not None and not any(r.name == target and r.rdtype == rdtype for r in response.additional):
                self._add(response.additional, target, rds)

    def _additional(self, response: dns.message.Message, rds: dns.rdataset.Rdataset) -> None:
        if rds.rdtype == MX:
            targets = [r.exchange for r in rds]
        elif rds.rdtype in (SRV, NS):
            targets = [r.target for r in rds]
        else:
            return
        for target in targets:
            if target != dns.name.root:
                self._glue(response, target)

    @staticmethod
    def _negative(response: dns.message.Message, zone: dns.zone.Zone, rcode: int) -> None:
        soa_rds = zone.nodes[zone.origin].get_rdataset(IN, SOA)
        soa = dns.rrset.RRset(zone.origin, IN, SOA)
        soa.update(soa_rds)
        soa.ttl = min(soa_rds.ttl, soa_rds[0].minimum)
        response.authority.append(soa)
        response.set_rcode(rcode)

    # -- zone transfer ------------------------------------------------------
    def _axfr(self, msg: dns.message.Message, response: dns.message.Message, peer: object) -> list[bytes]:
        qname = msg.question[0].name
        if not self.view.accepts_changes:
            response.set_rcode(dns.rcode.REFUSED)
            return [response.to_wire()]
        zone = self.zones.zones.get(qname) if self._serves(qname) else None
        if zone is None:
            response.set_rcode(dns.rcode.NOTAUTH)
            return [response.to_wire()]
        if not self.keys.may_change(msg.keyname if msg.had_tsig else None, zone.origin):
            log.warning("AXFR of %s refused to %s (key %s)", qname, peer, msg.keyname)
            response.set_rcode(dns.rcode.REFUSED)
            return [response.to_wire()]
        soa = zone.nodes[zone.origin].get_rdataset(IN, SOA)
        rrsets = [(zone.origin, soa)] + [(name, rds) for name, rds in zone.iterate_rdatasets()
                                         if not (name == zone.origin and rds.rdtype == SOA)] + [(zone.origin, soa)]
        # As many messages as needed (RFC 5936 §2.2): the question in the first only, each one TSIG-signed in
        # sequence (RFC 8945 §5.3.1).
        out, current, size, tsig_ctx = [], response, 0, None
        for name, rds in rrsets:
            length = _wire_size(name, rds)
            if current.answer and size + length > _AXFR_MESSAGE_BYTES:
                out.append(current.to_wire(max_size=65535, multi=True, tsig_ctx=tsig_ctx))
                tsig_ctx = current.tsig_ctx
                current = dns.message.make_response(msg)
                current.question = []
                size = 0
            current.flags |= dns.flags.AA
            self._add(current.answer, name, rds)
            size += length
        out.append(current.to_wire(max_size=65535, multi=True, tsig_ctx=tsig_ctx))
        log.info("AXFR of %s to %s (key %s, %d message(s))", qname, peer, msg.keyname, len(out))
        return out

    # -- dynamic update (RFC 2136) ------------------------------------------
    def _update(self, msg: dns.update.UpdateMessage, peer: object) -> bytes:
        response = dns.message.make_response(msg)
        try:
            origin = self._apply_update(msg)
        except _Refuse as refusal:
            log.warning("UPDATE refused (%s) from %s key %s: %s", dns.rcode.to_text(refusal.rcode), peer,
                        msg.keyname, refusal.reason)
            response.set_rcode(refusal.rcode)
            return response.to_wire()
        except OSError as exc:
            log.error("UPDATE could not be saved: %s", exc)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        if origin is not None and self.on_change:
            self.on_change(origin)
        return response.to_wire()

    def _apply_update(self, msg: dns.update.UpdateMessage) -> dns.name.Name | None:
        if len(msg.zone) != 1 or msg.zone[0].rdtype != SOA:
            raise _Refuse(dns.rcode.FORMERR, "zone section must hold exactly one SOA question")
        origin = msg.zone[0].name
        if not self.view.accepts_changes:
            raise _Refuse(dns.rcode.REFUSED, f"the {self.view.name} server accepts no updates")
        zone = self.zones.zones.get(origin) if self._serves(origin) else None
        if zone is None or msg.zone[0].rdclass != IN:
            raise _Refuse(dns.rcode.NOTAUTH, f"not authoritative for {origin}")
        if not msg.had_tsig:
            raise _Refuse(dns.rcode.REFUSED, "unsigned update")
        if not self.keys.may_change(msg.keyname, origin):
            raise _Refuse(dns.rcode.REFUSED, f"key {msg.keyname} may not change {origin}")

        with zone.writer() as txn:
            self._check_prerequisites(txn, origin, msg.prerequisite)
            self._prescan(origin, msg.update)
            changes = [self._apply_one(txn, origin, rrset) for rrset in msg.update]
            if not any(changes):
                txn.rollback()
                return None
            self._check_size(txn, origin, msg.update)
            txn.update_serial(name=origin)
            descr = "; ".join(c for c in changes if c)
        self.zones.committed(origin)
        log.info("UPDATE %s by key %s: %s", origin, msg.keyname, descr)
        return origin

    @staticmethod
    def _check_size(txn, origin: dns.name.Name, updates: list[dns.rrset.RRset]) -> None:
        """Refuse an update after which a record set, or the zone, could no longer be served (nothing is changed)."""
        for rr in updates:
            if rr.deleting is not None:
                continue
            rds = txn.get(rr.name, rr.rdtype)
            if rds is None:
                continue
            if len(rds) > MAX_RECORDS_PER_RRSET:
                raise _Refuse(dns.rcode.REFUSED, f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} would hold {len(rds)} "
                                                 f"records (at most {MAX_RECORDS_PER_RRSET})")
            size = _wire_size(rr.name, rds)
            if size > MAX_RRSET_BYTES:
                raise _Refuse(dns.rcode.REFUSED, f"{rr.name} {dns.rdatatype.to_text(rr.rdtype)} would take {size} "
                                                 f"bytes (at most {MAX_RRSET_BYTES}): an answer could not be served")
        total = sum(_wire_size(name, rds) for name, rds in txn.iterate_rdatasets())
        if total > MAX_ZONE_BYTES:
            raise _Refuse(dns.rcode.REFUSED, f"the zone {origin} would take {total} bytes (at most {MAX_ZONE_BYTES})")

    @staticmethod
    def _check_prerequisites(txn, origin: dns.name.Name, prerequisites: list[dns.rrset.RRset]) -> None:
        wanted: dict[tuple[dns.name.Name, int], set] = {}
        for rr in prerequisites:
            if not rr.name.is_subdomain(origin):
                raise _Refuse(dns.rcode.NOTZONE, f"prerequisite {rr.name} outside {origin}")
            if rr.deleting == dns.rdataclass.ANY:
                if rr.rdtype == ANY:
                    if not txn.name_exists(rr.name):
                        raise _Refuse(dns.rcode.NXDOMAIN, f"prerequisite: {rr.name} not in use")
                elif txn.get(rr.name, rr.rdtype) is None:
                    raise _Refuse(dns.rcode.NXRRSET, f"prerequisite: no {dns.rdatatype.to_text(rr.rdtype)} at {rr.name}")
            elif rr.deleting == dns.rdataclass.NONE:
                if rr.rdtype == ANY:
                    if txn.name_exists(rr.name):
                        raise _Refuse(dns.rcode.YXDOMAIN, f"prerequisite: {rr.name} in use")
                elif txn.get(rr.name, rr.rdtype) is not None:
                    raise _Refuse(dns.rcode.YXRRSET, f"prerequisite: {dns.rdatatype.to_text(rr.rdtype)} at {rr.name} exists")
            elif rr.rdclass == IN and rr.ttl == 0 and rr.rdtype != ANY:
                wanted.setdefault((rr.name, rr.rdtype), set()).update(rr)
            else:
                raise _Refuse(dns.rcode.FORMERR, f"malformed prerequisite {rr.name}")
        for (name, rdtype), rdatas in wanted.items():
            current = txn.get(name, rdtype)
            if current is None or set(current) != rdatas:
                raise _Refuse(dns.rcode.NXRRSET, f"prerequisite: {dns.rdatatype.to_text(rdtype)} at {name} differs")

    @staticmethod
    def _prescan(origin: dns.name.Name, updates: list[dns.rrset.RRset]) -> None:
        for rr in updates:
            if not rr.name.is_subdomain(origin):
                raise _Refuse(dns.rcode.NOTZONE, f"{rr.name} is outside the zone {origin}")
            if rr.deleting is None and (rr.rdclass != IN or rr.rdtype in _FORBIDDEN_UPDATE_TYPES):
                raise _Refuse(dns.rcode.FORMERR, f"cannot add type {dns.rdatatype.to_text(rr.rdtype)}")
            if rr.deleting == dns.rdataclass.NONE and rr.rdtype in _FORBIDDEN_UPDATE_TYPES:
                raise _Refuse(dns.rcode.FORMERR, f"cannot delete type {dns.rdatatype.to_text(rr.rdtype)}")
            if rr.deleting == dns.rdataclass.ANY and rr.rdtype in _FORBIDDEN_UPDATE_TYPES - {ANY}:
                raise _Refuse(dns.rcode.FORMERR, f"cannot delete type {dns.rdatatype.to_text(rr.rdtype)}")
            if rr.deleting is None and rr.rdtype in _REFUSED_UPDATE_TYPES:
                raise _Refuse(dns.rcode.REFUSED, f"type {dns.rdatatype.to_text(rr.rdtype)} is not served by the lab")
            if rr.rdtype == SOA or (rr.name == origin and rr.rdtype == NS):
                raise _Refuse(dns.rcode.REFUSED, f"the zone's SOA and apex NS are managed by the lab ({rr.name})")

    @staticmethod
    def _apply_one(txn, origin: dns.name.Name, rr: dns.rrset.RRset) -> str:
        name, rdtype = rr.name, rr.rdtype
        label = f"{name} {dns.rdatatype.to_text(rdtype)}"
        if rr.deleting is None:
            node = txn.get_node(name)
            if node is not None:
                has_cname = node.get_rdataset(IN, CNAME) is not None
                has_other = any(r.rdtype not in (CNAME, dns.rdatatype.RRSIG, dns.rdatatype.NSEC) for r in node.rdatasets)
                if rdtype == CNAME and has_other:
                    raise _Refuse(dns.rcode.REFUSED, f"CNAME at {name}, which has other data (RFC 1034 §3.6.2)")
                if rdtype != CNAME and has_cname:
                    raise _Refuse(dns.rcode.REFUSED, f"{label} at a name that has a CNAME (RFC 1034 §3.6.2)")
            if rdtype == CNAME and name == origin:
                raise _Refuse(dns.rcode.REFUSED, "CNAME at the zone apex (RFC 1034 §3.6.2)")
            existing = txn.get(name, rdtype)
            if existing is not None and all(r in existing for r in rr) and existing.ttl == rr.ttl:
                return ""
            merged = dns.rdataset.Rdataset(IN, rdtype)
            if existing is not None and rdtype != CNAME:
                merged.update(existing)
            merged.update(rr)
            merged.ttl = rr.ttl  # as BIND does: the TTL of the last added record wins
            txn.replace(name, merged)
            return "+" + " ".join(f"{label} {r}" for r in rr)
        if rr.deleting == dns.rdataclass.ANY:
            if rdtype == ANY:
                node = txn.get_node(name)
                if node is None:
                    return ""
                removed = []
                for rds in list(node.rdatasets):
                    if name == origin and rds.rdtype in (SOA, NS):
                        continue
                    txn.delete(name, rds.rdtype, rds.covers)
                    removed.append(dns.rdatatype.to_text(rds.rdtype))
                return f"-{name} ({', '.join(removed)})" if removed else ""
            if txn.get(name, rdtype) is None:
                return ""
            txn.delete(name, rdtype)
            return f"-{label}"
        # deleting NONE: remove the given records
        existing = txn.get(name, rdtype)
        if existing is None:
            return ""
        gone = [r for r in rr if r in existing]
        if not gone:
            return ""
        remaining = dns.rdataset.Rdataset(IN, rdtype)
        remaining.update(existing)
        for r in gone:
            remaining.discard(r)
        if len(remaining):
            txn.replace(name, remaining)
        else:
            txn.delete(name, rdtype)
        return "-" + " ".join(f"{label} {r}" for r in gone)

    # -- TSIG errors ----------------------------------------------------------
    def _tsig_error(self, wire: bytes, error: int, peer: object) -> list[bytes]:
        try:
            msg = dns.message.from_wire(wire, keyring=False)
        except Exception:
            return [_header_only_reply(wire, dns.rcode.FORMERR)]
        log.warning("TSIG %s from %s for key %s", _TSIG_ERRORS.get(error, error), peer, msg.keyname)
        response = dns.message.make_response(msg)
        response.set_rcode(dns.rcode.NOTAUTH)
        if msg.tsig:
            tsig = msg.tsig[0]
            response.tsig = dns.message.Message._make_tsig(
                msg.keyname, tsig.algorithm, int(time.time()), tsig.fudge, b"", msg.id, error, b""
            )
        return [response.to_wire()]


def _recv_exactly(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("connection closed")
        data += chunk
    return data


# ---------------------------------------------------------------------------
# Transports
# ---------------------------------------------------------------------------
_UDP_BACKLOG = 4096  # queries waiting for the event loop, at most


class _UDP:
    """UDP on one socket, read by a thread of its own in blocking ``recvfrom``: a query whose answer is cached is
    answered from that thread (one ``recvfrom``, one dictionary lookup, one ``sendto``); so is any other plain
    query, zones read under the zone store's lock (no hand-over to the loop: +25 % on distinct questions); an
    UPDATE, a NOTIFY, a response or a forwarded zone's question is handed to the event loop, where zones change.

    Why a thread: asyncio's datagram transport costs an ``epoll`` round and a callback per packet. On 2 cores, a
    bare responder answering from a dictionary does ~30,000 q/s through asyncio and ~171,000 q/s with a blocking
    loop (dnsperf, 4 clients; ``bench/udp_floor.py``), which is what separated the lab from BIND on cached answers."""

    def __init__(self, engine: DNSEngine, sock, loop: asyncio.AbstractEventLoop) -> None:
        import threading

        self.engine, self.sock, self.loop = engine, sock, loop
        self._closing = False
        self._pending: collections.deque = collections.deque()  # queries for the loop, in arrival order
        self._scheduled = False
        self._thread = threading.Thread(target=self._serve, name="labmail-dns-udp", daemon=True)
        self._thread.start()

    def get_extra_info(self, name: str):
        return self.sock.getsockname() if name == "sockname" else None

    def _serve(self) -> None:
        recv, send, cached, pending = self.sock.recvfrom, self.sock.sendto, self.engine.cached, self._pending
        off_loop, handle = self.engine.off_loop, self.engine.handle
        while True:
            try:
                data, addr = recv(65535)
            except OSError:  # an ICMP error from a gone client, or the socket closed
                if self._closing:
                    return
                continue
            if self._closing:
                return
            reply = cached(data)
            if reply is not None:
                try:
                    send(reply, addr)
                except OSError:
                    pass
                continue
            if off_loop(data):  # a plain query: answered here, zones read under their lock
                try:
                    replies = handle(data, tcp=False, peer=addr)
                except Exception:  # handle() answers SERVFAIL on bad input; anything else must not end this thread
                    log.exception("DNS UDP query from %s", addr)
                    continue
                for reply in replies:
                    try:
                        send(reply, addr)
                    except OSError:
                        pass
                continue
            if len(pending) >= _UDP_BACKLOG:  # the loop is that far behind: dropped, as a full socket buffer drops
                continue
            pending.append((data, addr))  # appended before the flag is read: _drain, which clears it first, sees it
            if not self._scheduled:
                self._scheduled = True
                try:
                    self.loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: the lab is stopping
                    return

    def _drain(self) -> None:  # on the event loop: every query waiting, one wake-up for a burst
        self._scheduled = False
        pending, handle, send = self._pending, self.engine.handle, self.sock.sendto
        while pending:
            data, addr = pending.popleft()
            for reply in handle(data, tcp=False, peer=addr):
                try:
                    send(reply, addr)
                except OSError:  # a gone client, a full buffer: as a lost datagram
                    pass

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:  # an empty datagram to itself wakes the thread out of recvfrom
            import socket

            with socket.socket(self.sock.family, socket.SOCK_DGRAM) as poke:
                poke.sendto(b"", self.sock.getsockname()[:2])
        except OSError:
            pass
        self._thread.join(2)
        self.sock.close()


#: DNS-over-TCP connections the lab's DNS servers hold at once (BIND's ``tcp-clients`` default); beyond, closed at
#: once: 113 held open with a query every 5 s took the lab's whole connection budget, and SMTP and IMAP refused
#: everyone (found by an outside review) — UDP, what resolvers use, is not affected
MAX_TCP_CLIENTS = 150
_tcp_clients = 0


async def _serve_tcp_client(engine: DNSEngine, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global _tcp_clients
    peer = writer.get_extra_info("peername")
    if _tcp_clients >= MAX_TCP_CLIENTS:
        log.warning("DNS over TCP: %d connections open, %s refused", _tcp_clients, peer)
        writer.close()
        return
    _tcp_clients += 1
    try:
        while True:
            try:
                head = await asyncio.wait_for(reader.readexactly(2), timeout=10)
                (length,) = struct.unpack("!H", head)
                data = await asyncio.wait_for(reader.readexactly(length), timeout=10)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                break
            for reply in engine.handle(data, tcp=True, peer=peer):
                writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except Exception:
        log.exception("TCP client %s", peer)
    finally:
        _tcp_clients -= 1
        writer.close()


def _udp_socket(host: str, port: int):
    """A UDP socket bound to ``host``:``port`` (0 = a free port), blocking (its thread waits in recvfrom)."""
    import socket

    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def start_transports(engine: DNSEngine, host: str, port: int) -> tuple[list, int]:
    """Bind UDP and TCP on the same ``port`` (0 = pick a free one); returns (servers, port)."""
    loop = asyncio.get_running_loop()
    attempts = 20 if port == 0 else 1
    last_error: OSError | None = None
    for _ in range(attempts):
        try:
            sock = _udp_socket(host, port)
        except OSError as exc:
            last_error = exc
            continue
        chosen = sock.getsockname()[1]
        try:
            tcp = await start_stream_server(lambda r, w: _serve_tcp_client(engine, r, w), host, chosen, refusal=None,
                                            reuse_address=True)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        return [_UDP(engine, sock, loop), tcp], chosen
    raise last_error or OSError("no port")


class ThreadedDNS:
    """Serve one engine on loopback from a background thread (tests, benchmarks, notebooks without a lab process).

    >>> with ThreadedDNS(engine) as (host, port):   # doctest: +SKIP
    ...     dns.query.udp(query, host, port=port)
    """

    def __init__(self, engine: DNSEngine, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        self.engine, self.host, self.port = engine, host, port
        self._loop = asyncio.new_event_loop()
        self._servers: list = []
        self._thread = threading.Thread(target=self._run, name="labmail-dns", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._servers, self.port = self._loop.run_until_complete(start_transports(self.engine, self.host, self.port))
        except BaseException as exc:  # report the bind error to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> tuple[str, int]:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error
        return self.host, self.port

    def stop(self) -> None:
        async def close() -> None:
            for server in self._servers:
                server.close()
                if hasattr(server, "wait_closed"):
                    await server.wait_closed()
            await asyncio.sleep(0.01)

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> tuple[str, int]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
