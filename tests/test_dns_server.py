"""The lab's authoritative DNS: what a resolver, dig or a student sees for each kind of query."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from fuzzing import count, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def ask(engine, name, rdtype="A", *, tcp=False, edns=0, payload=1232, rdclass="IN", rd=True):
    q = dns.message.make_query(name, rdtype, rdclass=rdclass, use_edns=edns, payload=payload)
    if not rd:
        q.flags &= ~dns.flags.RD
    replies = engine.handle(q.to_wire(), tcp=tcp)
    assert len(replies) == 1
    return dns.message.from_wire(replies[0])


def test_authoritative_servers_set_aa_and_the_resolver_sets_ra(engine, students, registry):
    r = ask(students, "alice.labmail.cloud", "SOA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer[0].rdtype == dns.rdatatype.SOA
    assert r.flags & dns.flags.AA and not r.flags & dns.flags.RA
    assert ask(registry, "gmail.test", "MX").flags & dns.flags.AA
    resolved = ask(engine, "alice.labmail.cloud", "SOA")
    assert resolved.answer and resolved.flags & dns.flags.RA and not resolved.flags & dns.flags.AA


def test_the_registry_refers_to_the_students_server_with_glue(registry):
    r = ask(registry, "alice.labmail.cloud", "SOA", rd=False)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer and not r.flags & dns.flags.AA
    ns = r.authority[0]
    assert ns.rdtype == dns.rdatatype.NS and ns.name == dns.name.from_text("alice.labmail.cloud")
    assert ns[0].target == dns.name.from_text("dns.labmail.cloud")
    glue = {rr.rdtype: rr[0].address for rr in r.additional}
    assert glue == {dns.rdatatype.A: "203.0.113.54", dns.rdatatype.AAAA: "2001:db8:113::54"}
    deeper = ask(registry, "_dmarc.alice.labmail.cloud", "TXT", rd=False)
    assert deeper.authority[0].name == dns.name.from_text("alice.labmail.cloud")  # referral, not NXDOMAIN


def test_the_students_server_refuses_other_zones(students):
    assert ask(students, "gmail.test", "MX").rcode() == dns.rcode.REFUSED
    assert ask(students, "labmail.cloud", "SOA").rcode() == dns.rcode.REFUSED


def test_nxdomain_carries_soa_with_negative_ttl(engine):
    r = ask(engine, "nothing.alice.labmail.cloud", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN
    soa = r.authority[0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.name == dns.name.from_text("alice.labmail.cloud")
    assert soa.ttl == min(3600, soa[0].minimum) == 60  # RFC 2308: min(SOA TTL, MINIMUM)


def test_nodata_carries_soa(engine):
    r = ask(engine, "alice.labmail.cloud", "MX")  # step 0: the student's zone has no MX yet
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert r.authority[0].rdtype == dns.rdatatype.SOA


def test_every_name_of_the_world_gets_an_answer_never_refused(engine):
    for name, rtype in [("_dmarc.cloud", "TXT"), ("cloud", "SOA"), ("com", "NS"), ("example.org", "A"),
                        ("10.113.0.203.in-addr.arpa", "PTR"), ("4.3.2.1.in-addr.arpa", "PTR"), (".", "SOA"),
                        ("_dmarc.labmail.cloud", "TXT"), ("x.y.z.test", "MX")]:
        r = ask(engine, name, rtype)
        assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN), (name, dns.rcode.to_text(r.rcode()))
        assert r.answer or r.authority[0].rdtype == dns.rdatatype.SOA


def test_world_addresses_and_fcrdns(engine):
    a = ask(engine, "mailcow.labmail.cloud", "A").answer[0]
    assert [r.address for r in a] == ["203.0.113.10"]
    ptr = ask(engine, "10.113.0.203.in-addr.arpa", "PTR").answer[0]
    assert ptr[0].target == dns.name.from_text("mailcow.labmail.cloud")
    spoofer = ask(engine, "66.2.0.192.in-addr.arpa", "PTR").answer[0]
    assert spoofer[0].target == dns.name.from_text("mx.arnaque.test")


def test_providers_publish_mx_spf_dkim_dmarc(engine):
    assert ask(engine, "gmail.test", "MX").answer
    spf = ask(engine, "outlook.test", "TXT").answer[0]
    assert b"".join(spf[0].strings).startswith(b"v=spf1 include:spf.protection.outlook.test")
    dkim = ask(engine, "20230601._domainkey.gmail.test", "TXT").answer[0]
    assert b"".join(dkim[0].strings).startswith(b"v=DKIM1; k=rsa; p=MII")
    assert len(dkim[0].strings) > 1  # a 2048-bit key needs several 255-byte strings
    assert ask(engine, "_dmarc.gmail.test", "TXT").answer


def test_dnsbl_follows_rfc5782(engine):
    listed = ask(engine, "2.0.0.127.dnsbl.test", "A")
    assert listed.answer[0][0].address == "127.0.0.2"
    assert ask(engine, "2.0.0.127.dnsbl.test", "TXT").answer
    assert ask(engine, "1.0.0.127.dnsbl.test", "A").rcode() == dns.rcode.NXDOMAIN  # 127.0.0.1 never listed
    assert ask(engine, "66.2.0.192.dnsbl.test", "A").answer  # the spoofer is listed


def test_mx_answer_adds_target_addresses(engine):
    r = ask(engine, "labmail.cloud", "MX")
    additional = {(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in r.additional}
    assert ("mailcow.labmail.cloud.", "A") in additional and ("mailcow.labmail.cloud.", "AAAA") in additional


def test_empty_non_terminal_is_nodata(engine):
    # _domainkey.gmail.test exists only as the parent of the DKIM selector
    r = ask(engine, "_domainkey.gmail.test", "TXT")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def _add_records(lab, origin, lines):
    zone = lab.zones.zones[dns.name.from_text(origin)]
    with zone.writer() as txn:
        for line in lines:
            name, ttl, rdtype, value = line.split(" ", 3)
            txn.add(dns.name.from_text(name), int(ttl), dns.rdata.from_text("IN", rdtype, value))
    lab.zones.committed(zone.origin)


def test_cname_chain_followed_across_zones(world_lab, engine):
    _add_records(world_lab, "alice.labmail.cloud", [
        "www.alice.labmail.cloud. 300 CNAME web.alice.labmail.cloud.",
        "web.alice.labmail.cloud. 300 CNAME mailcow.labmail.cloud.",
    ])
    r = ask(engine, "www.alice.labmail.cloud", "A")
    types = [dns.rdatatype.to_text(rr.rdtype) for rr in r.answer]
    assert types == ["CNAME", "CNAME", "A"]
    assert r.answer[-1][0].address == "203.0.113.10"


def test_cname_loop_terminates(world_lab, engine, students):
    """The authoritative server gives the chain as its zone holds it; the resolver, asked to recurse, fails
    (SERVFAIL, as BIND and Unbound do): NOERROR with a loop read as "no address" to a mail server."""
    _add_records(world_lab, "alice.labmail.cloud", [
        "a.alice.labmail.cloud. 300 CNAME b.alice.labmail.cloud.",
        "b.alice.labmail.cloud. 300 CNAME a.alice.labmail.cloud.",
    ] + [f"c{i}.alice.labmail.cloud. 300 CNAME c{i + 1}.alice.labmail.cloud." for i in range(20)]
      + ["c20.alice.labmail.cloud. 300 A 192.0.2.20"])
    r = ask(students, "a.alice.labmail.cloud", "A")
    assert len(r.answer) == 2 and all(rr.rdtype == dns.rdatatype.CNAME for rr in r.answer)
    r = ask(engine, "a.alice.labmail.cloud", "A")
    assert r.rcode() == dns.rcode.SERVFAIL and not r.answer
    assert ask(engine, "c0.alice.labmail.cloud", "A").rcode() == dns.rcode.SERVFAIL  # 20 links: past the limit
    assert ask(engine, "c15.alice.labmail.cloud", "A").answer[-1][0].address == "192.0.2.20"


def test_wildcard_synthesis(world_lab, engine):
    _add_records(world_lab, "alice.labmail.cloud", ["*.w.alice.labmail.cloud. 300 TXT \"wild\""])
    r = ask(engine, "anything.w.alice.labmail.cloud", "TXT")
    assert r.answer[0].name == dns.name.from_text("anything.w.alice.labmail.cloud")
    assert r.answer[0][0].strings == (b"wild",)
    assert ask(engine, "anything.w.alice.labmail.cloud", "MX").rcode() == dns.rcode.NOERROR  # NODATA


def test_referral_with_glue_for_a_delegation_not_hosted_here(world_lab, engine):
    # even the resolver can only refer: no server of the world hosts this child
    _add_records(world_lab, "labmail.cloud", [
        "ailleurs.labmail.cloud. 3600 NS ns.ailleurs.labmail.cloud.",
        "ns.ailleurs.labmail.cloud. 3600 A 203.0.113.99",
    ])
    r = ask(engine, "www.ailleurs.labmail.cloud", "A", rd=False)
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert not r.flags & dns.flags.AA
    assert r.authority[0].rdtype == dns.rdatatype.NS
    assert r.additional[0][0].address == "203.0.113.99"
    # asked to recurse, the resolver cannot reach that server: SERVFAIL, not a referral a stub reads as NODATA
    assert ask(engine, "www.ailleurs.labmail.cloud", "A").rcode() == dns.rcode.SERVFAIL


def test_students_zones_are_delegated_from_the_parent(engine, registry):
    assert ask(registry, "labmail.cloud", "AXFR", tcp=True).rcode() == dns.rcode.REFUSED  # no transfer of the parent
    ns = ask(engine, "alice.labmail.cloud", "NS")
    assert ns.answer[0][0].target == dns.name.from_text("dns.labmail.cloud")


def test_udp_truncation_and_tcp_fallback(world_lab, engine):
    _add_records(world_lab, "alice.labmail.cloud",
                 [f"big.alice.labmail.cloud. 300 TXT \"{'x' * 200}-{i}\"" for i in range(15)])
    small = ask(engine, "big.alice.labmail.cloud", "TXT", edns=-1)
    assert small.flags & dns.flags.TC and not small.answer
    edns = ask(engine, "big.alice.labmail.cloud", "TXT", payload=4096)  # 3.1 KB: over what the lab sends on UDP
    assert edns.flags & dns.flags.TC and not edns.answer  # (1232, RFC 6891 §6.2.5, as BIND's max-udp-size)
    fits = ask(engine, "big.alice.labmail.cloud", "TXT", payload=1232)
    assert fits.flags & dns.flags.TC
    tcp = ask(engine, "big.alice.labmail.cloud", "TXT", edns=-1, tcp=True)
    assert not tcp.flags & dns.flags.TC and len(tcp.answer[0]) == 15


def test_no_amplification_no_oversized_reply_no_cache_growth(world_lab, engine):
    """Found by an outside review against BIND 9.18: (1) a client announcing 64 KB got 64 KB over UDP — now at most
    1232 bytes (a 57-byte ANY query turned into 60 KB: a 1,000× amplifier on a class lab's LAN address); (2) a reply
    over 64 KB (an ANY at a name with several big RRsets) gave SERVFAIL and a traceback at each query — over TCP
    the RRsets that fit, as BIND; (3) additional data that does not fit is left out without TC (RFC 2181 §9);
    (4) the answer caches stay within their byte budget whatever the queries' variations."""
    from labmail.lab import dnsserver

    _add_records(world_lab, "alice.labmail.cloud",
                 [f"amp.alice.labmail.cloud. 300 {kind} \"{'y' * 250}-{i}\"" for kind in ("TXT", "SPF") for i in range(60)])
    udp = engine.handle(dns.message.make_query("amp.alice.labmail.cloud", "ANY", use_edns=0, payload=65535).to_wire())[0]
    assert len(udp) <= dnsserver.OUR_PAYLOAD and dns.message.from_wire(udp).flags & dns.flags.TC
    tcp = dns.message.from_wire(engine.handle(dns.message.make_query("amp.alice.labmail.cloud", "ANY").to_wire(),
                                              tcp=True)[0])
    assert tcp.rcode() == dns.rcode.NOERROR and tcp.answer
    for i in range(300):  # one name, many forms of the question
        name = "".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate("amp.alice.labmail.cloud"))
        engine.handle(dns.message.make_query(name, "TXT", use_edns=0, payload=1232 + i).to_wire(), tcp=True)
    assert engine._cache_bytes[True] <= dnsserver.CACHE_BYTES


def test_a_reply_over_64_kb_is_cut_to_what_fits(world_lab, engine):
    names = [f"b{i}.alice.labmail.cloud" for i in range(6)]
    blob = "ab" * 15000  # five RRsets of 15 KB at one name: an ANY answer of 75 KB
    _add_records(world_lab, "alice.labmail.cloud",
                 [f"huge.alice.labmail.cloud. 300 TYPE{65280 + k} \\# 15000 {blob}" for k in range(5)]
                 + [f"huge.alice.labmail.cloud. 300 MX {n} {name}." for n, name in enumerate(names)]
                 + [f"{name}. 300 A 192.0.2.{j}" for name in names for j in range(1, 90)])
    reply = dns.message.from_wire(engine.handle(
        dns.message.make_query("huge.alice.labmail.cloud", "ANY").to_wire(), tcp=True)[0])
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
    mx = dns.message.from_wire(engine.handle(
        dns.message.make_query("huge.alice.labmail.cloud", "MX", use_edns=0, payload=1232).to_wire())[0])
    assert mx.rcode() == dns.rcode.NOERROR and len(mx.answer[0]) == 6 and not mx.flags & dns.flags.TC


def test_edns_version_1_gets_badvers(engine):
    q = dns.message.make_query("labmail.cloud", "A", use_edns=1)
    r = dns.message.from_wire(engine.handle(q.to_wire())[0])
    assert r.rcode() == dns.rcode.BADVERS


def test_other_class_is_refused(engine):
    assert ask(engine, "version.bind", "TXT", rdclass="CH").rcode() == dns.rcode.REFUSED


def test_unknown_opcode_is_notimp(engine):
    q = dns.message.make_query("labmail.cloud", "A")
    q.set_opcode(dns.opcode.STATUS)
    r = dns.message.from_wire(engine.handle(q.to_wire())[0])
    assert r.rcode() == dns.rcode.NOTIMP and r.id == q.id


def test_axfr_over_udp_is_formerr(students):
    assert ask(students, "alice.labmail.cloud", "AXFR").rcode() == dns.rcode.FORMERR


def test_malformed_packets(engine):
    assert engine.handle(b"") == [] and engine.handle(b"\x01\x02") == []
    garbage = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\xff\xff\xff"
    r = engine.handle(garbage)
    assert len(r) == 1 and r[0][:2] == b"\x12\x34" and (r[0][3] & 0xF) == dns.rcode.FORMERR
    response = dns.message.make_response(dns.message.make_query("labmail.cloud", "A"))
    assert engine.handle(response.to_wire()) == []  # never answer a response


def test_answers_are_cached_and_cache_follows_changes(world_lab, engine):
    q = dns.message.make_query("alice.labmail.cloud", "TXT")
    first = dns.message.from_wire(engine.handle(q.to_wire())[0])
    assert not first.answer
    _add_records(world_lab, "alice.labmail.cloud", ["alice.labmail.cloud. 300 TXT \"v=spf1 -all\""])
    q.id = (q.id + 1) % 65536
    second = dns.message.from_wire(engine.handle(q.to_wire())[0])
    assert second.id == q.id and second.answer  # same bytes but the zone changed: fresh answer


@pytest.mark.fuzz
@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=600))
def test_random_bytes_never_kill_the_server(engine, data):
    count()
    for tcp in (False, True):
        replies = engine.handle(data, tcp=tcp)
        for reply in replies:
            assert reply[:2] == data[:2]  # every reply is addressed to the sender's id


@pytest.mark.fuzz
@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=40), st.integers(0, 3))
def test_mutated_valid_queries_get_a_parseable_reply(engine, flags, qtype, tail, extra):
    count()
    q = dns.message.make_query("alice.labmail.cloud", "A").to_wire()
    wire = q[:2] + struct.pack("!H", flags & 0x7FFF) + q[4:-4] + struct.pack("!HH", qtype, 1) + tail * extra
    for reply in engine.handle(wire):
        parsed = dns.message.from_wire(reply, ignore_trailing=True) if len(reply) > 12 else None
        assert reply[:2] == wire[:2]
        if parsed is not None:
            assert parsed.flags & dns.flags.QR


@pytest.mark.parametrize("name", ["ALICE.LabMail.Cloud", "alice.labmail.cloud."])
def test_names_are_case_insensitive(engine, name):
    assert ask(engine, name, "SOA").answer


_NAMES = ["labmail.cloud", "jean-emile.labmail.cloud", "nexiste.pas.labmail.cloud", "gmail.test", "mx.gmail.test",
          "_dmarc.gmail.test", "x.y.gmail.test", "cloud", "test", "nulle.part.example", "_domainkey.gmail.test",
          "jean-emile.labmail.cloud", "a.b.jean-emile.labmail.cloud", "www.labmail.cloud", "123.arpa", "in-addr.arpa",
          "10.113.0.203.in-addr.arpa", "9.9.9.9.in-addr.arpa", "alice.labmail.cloud", "w.alice.labmail.cloud",
          "x.w.alice.labmail.cloud", "x.y.w.alice.labmail.cloud", "www.alice.labmail.cloud"]
_TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "CAA", "DS", "CNAME", "ANY", "TYPE65280"]


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_NAMES), st.sampled_from(_TYPES), st.integers(0, 2**16 - 1), st.booleans(), st.booleans(),
       st.sampled_from(["", "q1.", "deep.er.", "*."]), st.booleans(), st.sampled_from(["resolver", "registry", "students"]))
def test_the_negative_fast_path_answers_what_the_full_path_answers(world_lab, name, rtype, qid, rd, edns, prefix,
                                                                    upper, role):
    """Negative answers are built from the query's bytes and a pre-rendered SOA; every reply must mean exactly what the
    full dnspython path replies (same flags, rcode, sections, TTLs, OPT) — or the fast path must step aside."""
    count()
    zone = world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")]
    if zone.get_node("*.w.alice.labmail.cloud.") is None:  # a wildcard (RFC 4592) and the empty non-terminal w.
        _add_records(world_lab, "alice.labmail.cloud", ['*.w.alice.labmail.cloud. 300 TXT "wild"',
                                                         "www.alice.labmail.cloud. 300 CNAME alice.labmail.cloud."])
    engine = world_lab.engine(role)
    qname = prefix + name
    query = dns.message.make_query(qname.upper() if upper else qname, rtype, use_edns=0 if edns else False)
    query.id = qid
    if not rd:
        query.flags &= ~dns.flags.RD
    wire = query.to_wire()
    fast = engine._negative_fast(wire)
    full = engine._handle(wire, False, {}, None)[0]
    if fast is None:
        return
    a, b = dns.message.from_wire(fast), dns.message.from_wire(full)
    assert a.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR) and not a.answer
    assert (a.id, a.flags, a.rcode(), a.edns, a.payload, a.ednsflags, a.options) == \
        (b.id, b.flags, b.rcode(), b.edns, b.payload, b.ednsflags, b.options)
    assert a.question == b.question and a.question[0].name.to_text() == b.question[0].name.to_text()  # case kept
    assert [(r, r.ttl) for r in a.authority] == [(r, r.ttl) for r in b.authority] and a.additional == b.additional


def test_the_fast_path_takes_the_common_misses_and_steps_aside_otherwise(engine):
    """It does take NXDOMAIN and NODATA (else it saves nothing), and leaves positive answers, TSIG, options, odd
    forms to the full path."""
    def wire(name, rtype="A", **kw):
        return dns.message.make_query(name, rtype, **kw).to_wire()

    assert engine._negative_fast(wire("personne.gmail.test")) is not None  # NXDOMAIN
    assert engine._negative_fast(wire("gmail.test", "AAAA", use_edns=0)) is not None  # NODATA, with EDNS
    assert engine._negative_fast(wire("gmail.test", "MX")) is None  # an answer
    assert engine._negative_fast(wire("personne.gmail.test", use_edns=0, options=[dns.edns.GenericOption(65001, b"x")])) is None
    assert engine._negative_fast(wire("personne.gmail.test", use_edns=1)) is None  # BADVERS is the full path's
    assert engine._negative_fast(wire("personne.gmail.test", "ANY")) is None
    assert engine._negative_fast(b"\x00" * 12) is None
    truncated = wire("personne.gmail.test")[:-3]
    assert engine._negative_fast(truncated) is None


class _OtherServer:
    """A DNS server of someone else's (a school's BIND, here a few lines of dnspython): UDP and TCP on loopback,
    answering ``mail.ecole.test A`` with whatever ``self.address`` is now."""

    def __init__(self) -> None:
        import socket
        import threading

        self.address = "192.0.2.1"
        while True:  # one port for UDP and TCP: a port free for UDP may be taken for TCP (a lab of the other worker)
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen()
        threading.Thread(target=self._serve_udp, daemon=True).start()
        threading.Thread(target=self._serve_tcp, daemon=True).start()

    def _reply(self, wire: bytes) -> bytes:
        import dns.rrset

        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        name = query.question[0].name
        if name == dns.name.from_text("mail.ecole.test"):
            response.answer.append(dns.rrset.from_text("mail.ecole.test.", 60, "IN", "A", self.address))
        elif name == dns.name.from_text("autoconfig.ecole.test"):  # authoritative only: the chain stops at its edge
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "mail.ecole.test."))
        elif name.labels[0].startswith(b"boucle"):  # boucle1 → boucle2 → boucle1, each answered alone
            other = b"boucle2" if name.labels[0] == b"boucle1" else b"boucle1"
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", other.decode() + ".ecole.test."))
        elif name == dns.name.from_text("vers-lab.ecole.test"):
            response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "mailcow.labmail.cloud."))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _serve_udp(self) -> None:
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
                self.udp.sendto(self._reply(data), peer)
            except OSError:  # closed
                return

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _peer = self.tcp.accept()
                with conn:
                    size = struct.unpack("!H", conn.recv(2))[0]
                    out = self._reply(conn.recv(size))
                    conn.sendall(struct.pack("!H", len(out)) + out)
            except OSError:  # closed
                return

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


def test_a_forwarded_zone_is_asked_of_its_own_server_never_cached(world_lab):
    """labmail lab start --forward ecole.test=HOST:PORT: the lab's resolver asks that server for every name of the
    zone (UDP and TCP, the client's ID kept), never caches it (students change it), and says SERVFAIL if it is
    down; the lab's other names and its authoritative servers are untouched."""
    other = _OtherServer()
    try:
        world_lab.forwards[dns.name.from_text("ecole.test")] = ("127.0.0.1", other.port)
        resolver = world_lab.engine("resolver")
        first = ask(resolver, "mail.ecole.test", "A")
        assert first.rcode() == dns.rcode.NOERROR and first.answer[0][0].address == "192.0.2.1"
        other.address = "192.0.2.2"  # the school changed its zone: seen at once
        assert ask(resolver, "mail.ecole.test", "A").answer[0][0].address == "192.0.2.2"
        assert ask(resolver, "mail.ecole.test", "A", tcp=True).answer[0][0].address == "192.0.2.2"
        assert ask(resolver, "autre.ecole.test", "A").rcode() == dns.rcode.NXDOMAIN
        # a CNAME chain that leaves what the other server answers is followed, as a recursive resolver does
        chained = ask(resolver, "autoconfig.ecole.test", "A")
        assert [(rr.name.to_text(), dns.rdatatype.to_text(rr.rdtype)) for rr in chained.answer] == \
            [("autoconfig.ecole.test.", "CNAME"), ("mail.ecole.test.", "A")]
        into_lab = ask(resolver, "vers-lab.ecole.test", "A")
        assert into_lab.answer[-1].name == dns.name.from_text("mailcow.labmail.cloud") and into_lab.answer[-1][0].address
        assert ask(resolver, "autoconfig.ecole.test", "CNAME").answer[0].rdtype == dns.rdatatype.CNAME  # asked as is
        looped = ask(resolver, "boucle1.ecole.test", "A")  # a CNAME loop across answers: stopped, not followed forever
        assert looped.rcode() == dns.rcode.NOERROR and not any(rr.rdtype == dns.rdatatype.A for rr in looped.answer)
        assert ask(resolver, "gmail.test", "MX").answer  # the lab's own names: as before
        assert not ask(world_lab.engine("registry"), "mail.ecole.test", "A", rd=False).answer  # authoritative: never
    finally:
        other.close()
    import time as _time

    started = _time.monotonic()
    assert ask(resolver, "mail.ecole.test", "A").rcode() == dns.rcode.SERVFAIL
    assert _time.monotonic() - started < 3


def test_dns_over_tcp_holds_a_bounded_number_of_connections(engine, monkeypatch):
    """BIND's tcp-clients: past MAX_TCP_CLIENTS open connections a new one is closed at once, so that DNS over TCP
    cannot take the connection budget SMTP and IMAP share (113 held open locked the class out of its mail); a
    connection that closes frees its place; UDP is not affected."""
    import asyncio
    import socket
    import struct

    from labmail.lab import dnsserver

    monkeypatch.setattr(dnsserver, "MAX_TCP_CLIENTS", 3)
    query = dns.message.make_query("labmail.cloud", "SOA").to_wire()

    def ask_tcp(sock) -> bytes:
        try:
            sock.sendall(struct.pack("!H", len(query)) + query)
            head = sock.recv(2)
            return sock.recv(struct.unpack("!H", head)[0]) if len(head) == 2 else b""
        except ConnectionResetError:  # closed by the server as soon as accepted
            return b""

    async def scenario():
        servers, port = await dnsserver.start_transports(engine, "127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        try:
            held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
            for sock in held:
                assert await loop.run_in_executor(None, ask_tcp, sock)
            extra = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert await loop.run_in_executor(None, ask_tcp, extra) == b""  # closed: no answer
            extra.close()
            held.pop().close()
            await asyncio.sleep(0.2)
            again = socket.create_connection(("127.0.0.1", port), timeout=5)
            assert await loop.run_in_executor(None, ask_tcp, again)
            again.close()
            for sock in held:
                sock.close()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.settimeout(5)
            udp.sendto(query, ("127.0.0.1", port))
            assert udp.recvfrom(4096)[0]
            udp.close()
        finally:
            for server in servers:
                close = getattr(server, "close", None)
                if close:
                    close()

    asyncio.run(scenario())
