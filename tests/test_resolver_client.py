"""The DNS client's own wire paths (labmail.resolver): queries written without dnspython's Message, negative answers
read from the bytes, several questions asked together — each compared with dnspython's full path, which stays the
reference, and with real faults (lost, truncated, malformed, stray answers)."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset
from fuzzing import count, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labmail import resolver as R
from labmail.resolver import Outcome, Resolver

_NAMES = ["labmail.cloud", "nexiste.pas.labmail.cloud", "gmail.test", "mx.gmail.test", "_dmarc.gmail.test",
          "x.y.gmail.test", "cloud", "alice.labmail.cloud", "_dmarc.alice.labmail.cloud", "w.alice.labmail.cloud",
          "_imaps._tcp.alice.labmail.cloud", "alice.labmail.cloud.alice.labmail.cloud", "10.113.0.203.in-addr.arpa",
          "nulle.part.example", "Alice.LabMail.Cloud", "été.labmail.cloud"]
_TYPES = ["A", "AAAA", "MX", "TXT", "NS", "SOA", "PTR", "SRV", "CNAME", "CAA", "ANY"]


def _same(a: R.LookupResult, b: R.LookupResult) -> None:
    """Equal as a student or a check sees them (the time taken aside), rdata included."""
    assert (a.name, a.type, a.outcome, a.records, a.cnames, a.soa, a.server, a.authoritative, a.rcode, a.additional) == \
        (b.name, b.type, b.outcome, b.records, b.cnames, b.soa, b.server, b.authoritative, b.rcode, b.additional)
    assert [r.rdata for r in a.records + a.cnames] == [r.rdata for r in b.records + b.cnames]
    assert (a.soa.rdata if a.soa else None) == (b.soa.rdata if b.soa else None)


@settings(max_examples=examples(300), deadline=None)
@given(st.sampled_from(_NAMES), st.sampled_from(_TYPES), st.integers(0, 2**16 - 1))
def test_a_query_written_by_hand_is_dnspythons_byte_for_byte(name, rtype, qid):
    count()
    qname = dns.name.from_text(name)
    reference = dns.message.make_query(qname, rtype)
    reference.id = qid
    assert R._query_wire(qname, dns.rdatatype.from_text(rtype), qid) == reference.to_wire()


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(_NAMES), st.sampled_from(_TYPES), st.integers(0, 2**16 - 1),
       st.sampled_from(["resolver", "registry", "students"]), st.booleans())
def test_negative_answers_read_from_the_bytes_mean_what_dnspython_reads(world_lab, name, rtype, qid, role, compress):
    """The lab's answers (its SOA uncompressed) and the same answers compressed as BIND writes them: the fast reading
    gives dnspython's result, or steps aside (None) — never another result."""
    count()
    qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rtype)
    query = R._query_wire(qname, qtype, qid)
    reply = world_lab.engine(role).handle(query)[0]
    if compress:  # dnspython compresses the SOA's names against the question, as BIND does
        reply = dns.message.from_wire(reply).to_wire()
    full = R._interpret(qname, qtype, dns.message.from_wire(reply), "lab#53", 0.0)
    fast = R._negative_fast(qname, qtype, query, reply, "lab#53", 0.0)
    if fast is not None:
        _same(fast, full)
        assert full.outcome in (Outcome.NXDOMAIN, Outcome.NODATA)


def test_the_fast_reading_takes_the_labs_misses_and_refuses_the_rest(engine):
    qname = dns.name.from_text("personne.gmail.test")
    query = R._query_wire(qname, dns.rdatatype.A, 4242)
    reply = engine.handle(query)[0]
    result = R._negative_fast(qname, dns.rdatatype.A, query, reply, "lab#53", 0.0)
    assert result is not None and result.outcome is Outcome.NXDOMAIN and result.soa.type == "SOA"  # it does save work
    other = R._query_wire(qname, dns.rdatatype.A, 4243)
    assert R._negative_fast(qname, dns.rdatatype.A, other, reply, "lab#53", 0.0) is None  # not our ID
    mx = dns.name.from_text("gmail.test")
    assert R._negative_fast(mx, dns.rdatatype.MX, R._query_wire(mx, dns.rdatatype.MX, 1),
                            engine.handle(R._query_wire(mx, dns.rdatatype.MX, 1))[0], "x", 0.0) is None  # an answer
    assert R._negative_fast(qname, dns.rdatatype.A, query, reply[:-1], "lab#53", 0.0) is None  # cut short
    assert R._negative_fast(qname, dns.rdatatype.A, query, reply + b"\0", "lab#53", 0.0) is None  # trailing byte
    truncated = reply[:2] + bytes([reply[2] | 0x02]) + reply[3:]
    assert R._negative_fast(qname, dns.rdatatype.A, query, truncated, "lab#53", 0.0) is None  # TC: TCP's job


class _FaultyServer:
    """A UDP server in front of the lab's engine that loses, truncates, garbles or doubles the answers to some names,
    and first sends a stray datagram from the right port with the wrong ID."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            text = dns.message.from_wire(data).question[0].name.to_text()
            reply = self.engine.handle(data)[0]
            self.sock.sendto(bytes([data[0] ^ 0xFF, data[1]]) + reply[2:], peer)  # stray: another ID
            if text.startswith("perdu."):
                continue
            if text.startswith("tronque."):
                reply = reply[:2] + bytes([reply[2] | 0x02]) + reply[3:]
            elif text.startswith("bizarre."):
                reply = reply[:12] + b"\xff" * 5
            elif text.startswith("autre."):  # our ID, another question: not our answer, wait on
                other = dns.message.from_wire(data)
                other.question = [dns.rrset.RRset(dns.name.from_text("ailleurs.test"), 1, 1)]
                self.sock.sendto(self.engine.handle(other.to_wire())[0], peer)
            self.sock.sendto(reply, peer)

    def close(self) -> None:
        self.sock.close()


def test_questions_asked_together_give_the_answers_asked_one_by_one(world_lab):
    """query_many over a faulty server: lost → TIMEOUT, truncated → TCP (nobody listens: unreachable), garbled → ERROR,
    strays ignored; every result is the one ``query`` gives alone."""
    server = _FaultyServer(world_lab.engine("resolver"))
    try:
        questions = [("gmail.test", "MX"), ("_dmarc.gmail.test", "TXT"), ("personne.gmail.test", "A"),
                     ("gmail.test", "AAAA"), ("perdu.gmail.test", "A"), ("tronque.gmail.test", "TXT"),
                     ("bizarre.gmail.test", "A"), ("autre.gmail.test", "A"), ("a..b", "A"), ("gmail.test", "MX")]
        together = Resolver([server.address], timeout=0.5).query_many(questions)
        alone = [Resolver([server.address], timeout=0.5).query(n, t) for n, t in questions]
    finally:
        server.close()
    assert len(together) == len(questions)
    for a, b in zip(together, alone):
        _same(a, b)
    outcomes = [r.outcome for r in together]
    assert outcomes[:4] == [Outcome.ANSWER, Outcome.ANSWER, Outcome.NXDOMAIN, Outcome.NODATA]
    assert outcomes[4] is Outcome.TIMEOUT and outcomes[7] is Outcome.NXDOMAIN and outcomes[-1] is Outcome.ANSWER
    assert outcomes[5] is Outcome.UNREACHABLE and outcomes[6] is Outcome.ERROR and together[8].rcode == "bad name"


def test_questions_asked_together_to_the_lab_over_the_network(dns_thread):
    questions = [("gmail.test", "MX"), ("_dmarc.gmail.test", "TXT"), ("personne.gmail.test", "A"),
                 ("_imaps._tcp.alice.labmail.cloud", "SRV"), ("alice.labmail.cloud", "SOA")]
    resolver = Resolver([dns_thread])
    together = resolver.query_many(questions)
    for a, (n, t) in zip(together, questions):
        _same(a, resolver.query(n, t))
    assert [r.outcome for r in together] == [Outcome.ANSWER, Outcome.ANSWER, Outcome.NXDOMAIN, Outcome.NXDOMAIN,
                                             Outcome.ANSWER]
    assert resolver.count == 2 * len(questions)


def test_an_unreachable_server_in_a_batch_is_said_per_question():
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    address = closed.getsockname()
    closed.close()  # nothing listens: ICMP port unreachable
    results = Resolver([address], timeout=0.5).query_many([("gmail.test", "MX"), ("gmail.test", "TXT")])
    assert [r.outcome for r in results] in ([Outcome.UNREACHABLE] * 2, [Outcome.TIMEOUT] * 2)
