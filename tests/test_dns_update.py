"""RFC 2136 dynamic updates with TSIG, and AXFR, on the lab DNS: who may change what, and how it is kept."""

from __future__ import annotations

import base64

import dns.flags
import dns.message
import dns.query
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
import pytest

from labmail.lab.zones import ZoneStore


def key_of(lab, label):
    entry = lab.keys.entries[f"{label}.labmail.cloud."]
    return dns.tsig.Key(entry.name, base64.b64decode(entry.secret), entry.algorithm)


def send(engine, update, *, verify_key=None):
    reply = engine.handle(update.to_wire(), tcp=True)[0]
    keyring = {verify_key.name: verify_key} if verify_key else False
    return dns.message.from_wire(reply, keyring=keyring, request_mac=update.mac if verify_key else b"")


def make(zone, key=None):
    if key is None:
        return dns.update.UpdateMessage(zone)
    return dns.update.UpdateMessage(zone, keyring={key.name: key}, keyname=key.name, keyalgorithm=key.algorithm)


def serial(lab, origin):
    zone = lab.zones.zones[dns.name.from_text(origin)]
    return zone.get_rdataset(zone.origin, "SOA")[0].serial


def test_own_key_adds_a_record_bumps_serial_and_saves(world_lab, students):
    key = key_of(world_lab, "alice")
    before = serial(world_lab, "alice.labmail.cloud")
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, "MX", "10 mailcow.labmail.cloud.")
    r = send(students, u, verify_key=key)  # the reply is TSIG-signed with the same key
    assert r.rcode() == dns.rcode.NOERROR and r.had_tsig
    assert serial(world_lab, "alice.labmail.cloud") == before + 1
    reloaded = ZoneStore(world_lab.zones.directory)
    reloaded.load()
    zone = reloaded.zones[dns.name.from_text("alice.labmail.cloud")]
    assert zone.get_rdataset(zone.origin, "MX")[0].exchange == dns.name.from_text("mailcow.labmail.cloud")


def test_another_students_key_is_refused(world_lab, students):
    u = make("alice.labmail.cloud", key_of(world_lab, "bob"))
    u.add("@", 300, "TXT", "pwned")
    assert send(students, u).rcode() == dns.rcode.REFUSED
    assert world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")].get_rdataset("alice.labmail.cloud.", "TXT") is None


def test_student_key_cannot_change_the_parent_zone(world_lab, students, registry, engine):
    u = make("labmail.cloud", key_of(world_lab, "alice"))
    u.add("evil", 300, "A", "192.0.2.1")
    assert send(students, u).rcode() == dns.rcode.NOTAUTH  # dns.labmail.cloud does not serve labmail.cloud
    assert send(registry, u).rcode() == dns.rcode.REFUSED  # ns1 serves it but takes no updates
    assert send(engine, u).rcode() == dns.rcode.REFUSED  # nor does the resolver


def test_only_the_students_server_takes_updates_and_transfers(world_lab, registry, engine):
    key = key_of(world_lab, "alice")
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, "TXT", "x")
    assert send(registry, u).rcode() == dns.rcode.REFUSED
    assert send(engine, u).rcode() == dns.rcode.REFUSED
    assert axfr(registry, "alice.labmail.cloud", key).rcode() == dns.rcode.REFUSED
    assert axfr(engine, "alice.labmail.cloud", key).rcode() == dns.rcode.REFUSED


def test_unsigned_update_is_refused(students):
    u = make("alice.labmail.cloud")
    u.add("@", 300, "TXT", "hello")
    assert send(students, u).rcode() == dns.rcode.REFUSED


def test_bad_signature_gets_notauth_badsig(world_lab, students):
    real = key_of(world_lab, "alice")
    forged = dns.tsig.Key(real.name, b"\x00" * 32, real.algorithm)
    u = make("alice.labmail.cloud", forged)
    u.add("@", 300, "TXT", "hello")
    r = send(students, u)
    assert r.rcode() == dns.rcode.NOTAUTH and r.tsig_error == dns.rcode.BADSIG


def test_unknown_key_gets_notauth_badkey(students):
    stranger = dns.tsig.Key("stranger.", b"\x01" * 32, dns.tsig.HMAC_SHA256)
    u = make("alice.labmail.cloud", stranger)
    u.add("@", 300, "TXT", "hello")
    r = send(students, u)
    assert r.rcode() == dns.rcode.NOTAUTH and r.tsig_error == dns.rcode.BADKEY


def test_zone_not_hosted_gets_notauth(world_lab, students):
    u = make("example.org", key_of(world_lab, "alice"))
    u.add("www", 300, "A", "192.0.2.1")
    assert send(students, u).rcode() == dns.rcode.NOTAUTH


def test_name_outside_the_zone_gets_notzone(world_lab, students):
    u = make("alice.labmail.cloud", key_of(world_lab, "alice"))
    u.add(dns.name.from_text("bob.labmail.cloud."), 300, "TXT", "x")
    assert send(students, u).rcode() == dns.rcode.NOTZONE


@pytest.mark.parametrize("rdtype,value", [("SOA", "ns1.labmail.cloud. h.x. 99 1 1 1 1"), ("NS", "ns.evil.test.")])
def test_apex_soa_and_ns_are_protected(world_lab, students, rdtype, value):
    key = key_of(world_lab, "alice")
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, rdtype, value)
    assert send(students, u).rcode() == dns.rcode.REFUSED
    u = make("alice.labmail.cloud", key)
    u.delete("@", rdtype)
    assert send(students, u).rcode() == dns.rcode.REFUSED


def test_deleting_the_apex_name_keeps_soa_and_ns(world_lab, students):
    key = key_of(world_lab, "alice")
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, "TXT", "v=spf1 -all")
    send(students, u)
    u = make("alice.labmail.cloud", key)
    u.delete("@")
    assert send(students, u).rcode() == dns.rcode.NOERROR
    zone = world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")]
    assert zone.get_rdataset(zone.origin, "SOA") and zone.get_rdataset(zone.origin, "NS")
    assert zone.get_rdataset(zone.origin, "TXT") is None


def test_cname_and_other_data_refused_both_ways(world_lab, students):
    key = key_of(world_lab, "alice")
    u = make("alice.labmail.cloud", key)
    u.add("www", 300, "A", "203.0.113.80")
    assert send(students, u).rcode() == dns.rcode.NOERROR
    u = make("alice.labmail.cloud", key)
    u.add("www", 300, "CNAME", "mailcow.labmail.cloud.")
    assert send(students, u).rcode() == dns.rcode.REFUSED
    u = make("alice.labmail.cloud", key)
    u.add("autoconfig", 300, "CNAME", "mailcow.labmail.cloud.")
    assert send(students, u).rcode() == dns.rcode.NOERROR
    u = make("alice.labmail.cloud", key)
    u.add("autoconfig", 300, "TXT", "x")
    assert send(students, u).rcode() == dns.rcode.REFUSED


def test_update_is_all_or_nothing(world_lab, students):
    key = key_of(world_lab, "alice")
    before = serial(world_lab, "alice.labmail.cloud")
    u = make("alice.labmail.cloud", key)
    u.add("ok", 300, "A", "203.0.113.80")
    u.add("@", 300, "NS", "ns.evil.test.")  # refused: the first change must not stay either
    assert send(students, u).rcode() == dns.rcode.REFUSED
    zone = world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")]
    assert zone.get_node("ok.alice.labmail.cloud.") is None
    assert serial(world_lab, "alice.labmail.cloud") == before


class TestPrerequisites:
    @pytest.fixture
    def key(self, world_lab, students):
        key = key_of(world_lab, "alice")
        u = make("alice.labmail.cloud", key)
        u.add("www", 300, "A", "203.0.113.80")
        assert send(students, u).rcode() == dns.rcode.NOERROR
        return key

    def run(self, engine, key, prereq):  # engine: the students' server
        u = make("alice.labmail.cloud", key)
        prereq(u)
        u.add("marker", 300, "TXT", "done")
        return send(engine, u).rcode()

    def test_name_in_use(self, students, key):
        assert self.run(students, key, lambda u: u.present("www")) == dns.rcode.NOERROR
        assert self.run(students, key, lambda u: u.present("nope")) == dns.rcode.NXDOMAIN

    def test_name_not_in_use(self, students, key):
        assert self.run(students, key, lambda u: u.absent("nope")) == dns.rcode.NOERROR
        assert self.run(students, key, lambda u: u.absent("www")) == dns.rcode.YXDOMAIN

    def test_rrset_exists_value_independent(self, students, key):
        assert self.run(students, key, lambda u: u.present("www", "A")) == dns.rcode.NOERROR
        assert self.run(students, key, lambda u: u.present("www", "AAAA")) == dns.rcode.NXRRSET

    def test_rrset_does_not_exist(self, students, key):
        assert self.run(students, key, lambda u: u.absent("www", "AAAA")) == dns.rcode.NOERROR
        assert self.run(students, key, lambda u: u.absent("www", "A")) == dns.rcode.YXRRSET

    def test_rrset_exists_value_dependent(self, students, key):
        assert self.run(students, key, lambda u: u.present("www", "A", "203.0.113.80")) == dns.rcode.NOERROR
        assert self.run(students, key, lambda u: u.present("www", "A", "203.0.113.81")) == dns.rcode.NXRRSET

    def test_prerequisite_outside_zone(self, students, key):
        assert self.run(students, key, lambda u: u.present(dns.name.from_text("bob.labmail.cloud."))) == dns.rcode.NOTZONE


def test_delete_one_record_keeps_the_others(world_lab, students):
    key = key_of(world_lab, "alice")
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, "MX", "10 mailcow.labmail.cloud.")
    u.add("@", 300, "MX", "20 backup.labmail.cloud.")
    send(students, u)
    u = make("alice.labmail.cloud", key)
    u.delete("@", "MX", "20 backup.labmail.cloud.")
    assert send(students, u).rcode() == dns.rcode.NOERROR
    zone = world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")]
    assert [r.preference for r in zone.get_rdataset(zone.origin, "MX")] == [10]


def test_noop_update_does_not_bump_serial(world_lab, students):
    key = key_of(world_lab, "alice")
    before = serial(world_lab, "alice.labmail.cloud")
    u = make("alice.labmail.cloud", key)
    u.delete("nothing-here", "TXT")
    assert send(students, u).rcode() == dns.rcode.NOERROR
    assert serial(world_lab, "alice.labmail.cloud") == before


def axfr(engine, zone, key=None):
    q = dns.message.make_query(zone, "AXFR")
    if key is not None:
        q.use_tsig({key.name: key}, keyname=key.name)
    return dns.message.from_wire(engine.handle(q.to_wire(), tcp=True)[0], keyring=False, one_rr_per_rrset=True)


def test_axfr_with_own_key(world_lab, students):
    r = axfr(students, "alice.labmail.cloud", key_of(world_lab, "alice"))
    assert r.rcode() == dns.rcode.NOERROR
    types = [dns.rdatatype.to_text(rr.rdtype) for rr in r.answer]
    assert types[0] == "SOA" and types[-1] == "SOA" and "NS" in types


def test_axfr_of_another_zone_or_without_key_is_refused(world_lab, students, registry):
    assert axfr(students, "alice.labmail.cloud", key_of(world_lab, "bob")).rcode() == dns.rcode.REFUSED
    assert axfr(students, "alice.labmail.cloud").rcode() == dns.rcode.REFUSED
    assert axfr(students, "gmail.test").rcode() == dns.rcode.NOTAUTH  # not a zone of dns.labmail.cloud
    assert axfr(registry, "gmail.test").rcode() == dns.rcode.REFUSED


def test_failed_save_keeps_old_zone_and_answers_servfail(world_lab, students, monkeypatch):
    key = key_of(world_lab, "alice")
    before = serial(world_lab, "alice.labmail.cloud")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("labmail.lab.zones.atomic_write_text", disk_full)
    u = make("alice.labmail.cloud", key)
    u.add("@", 300, "TXT", "v=spf1 -all")
    assert send(students, u).rcode() == dns.rcode.SERVFAIL
    monkeypatch.undo()
    zone = world_lab.zones.zones[dns.name.from_text("alice.labmail.cloud")]
    assert zone.get_rdataset(zone.origin, "TXT") is None  # in memory: rolled back to what is on disk
    assert serial(world_lab, "alice.labmail.cloud") == before


def test_over_udp_an_acknowledged_update_is_seen_by_the_next_query(world_lab):
    """Cached answers leave from the UDP thread while updates are applied on the event loop: a query sent after an
    UPDATE's reply never gets the answer cached before it (negative answers included), 40 times in a row."""
    import dns.query

    from labmail.lab.dnsserver import ThreadedDNS

    engine = world_lab.engine("students")
    key = key_of(world_lab, "alice")
    with ThreadedDNS(engine) as (host, port):
        for i in range(40):
            name = f"h{i}.alice.labmail.cloud"
            query = dns.message.make_query(name, "A")
            for _ in range(2):  # the second comes from the cache
                before = dns.query.udp(query, host, port=port, timeout=2)
                assert before.rcode() == dns.rcode.NXDOMAIN and before.id == query.id
            assert engine.cached(query.to_wire()) is not None
            update = make("alice.labmail.cloud", key)
            update.add(f"h{i}", 300, "A", f"192.0.2.{i + 1}")
            assert dns.query.udp(update, host, port=port, timeout=2).rcode() == dns.rcode.NOERROR
            after = dns.query.udp(query, host, port=port, timeout=2)
            assert after.rcode() == dns.rcode.NOERROR and after.answer[0][0].address == f"192.0.2.{i + 1}", i


def _ask_until(stop, host: str, port: int, name_of, rdtype: str, seen) -> None:
    """Ask over UDP until ``stop`` is set — question ``i`` about ``name_of(i)`` — and give every reply to ``seen``."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        i = 0
        while not stop.is_set():
            sock.sendto(dns.message.make_query(name_of(i), rdtype).to_wire(), (host, port))
            try:
                seen(dns.message.from_wire(sock.recv(4096)))
            except TimeoutError:
                pass
            i += 1


def test_udp_threads_answer_while_zones_change_on_the_loop(world_lab, caplog):
    """Plain queries are answered in the UDP thread, zones read under their lock, while UPDATEs change the zone on
    the event loop (over TCP here): a query sent after each UPDATE's reply sees it, and the hundreds of queries in
    flight meanwhile (misses and hits, on the zone being changed) all get a well-formed answer — no SERVFAIL, no
    internal error from a zone read in the middle of a change."""
    import logging
    import threading

    import dns.query

    from labmail.lab.dnsserver import ThreadedDNS

    engine = world_lab.engine("students")
    key = key_of(world_lab, "alice")
    rcodes: list[int] = []
    stop = threading.Event()

    def hammer(host: str, port: int) -> None:
        _ask_until(stop, host, port, lambda i: f"h{i % 40}.alice.labmail.cloud" if i % 3 else f"m{i}.alice.labmail.cloud",
                   "A", lambda reply: rcodes.append(reply.rcode()))

    caplog.set_level(logging.ERROR, logger="labmail")
    with ThreadedDNS(engine) as (host, port):
        worker = threading.Thread(target=hammer, args=(host, port))
        worker.start()
        try:
            for i in range(30):
                update = make("alice.labmail.cloud", key)
                update.add(f"h{i}", 300, "A", f"192.0.2.{i + 1}")
                assert dns.query.tcp(update, host, port=port, timeout=5).rcode() == dns.rcode.NOERROR
                after = dns.query.udp(dns.message.make_query(f"h{i}.alice.labmail.cloud", "A"), host, port=port, timeout=2)
                assert after.rcode() == dns.rcode.NOERROR and after.answer[0][0].address == f"192.0.2.{i + 1}", i
        finally:
            stop.set()
            worker.join(10)
    assert len(rcodes) > 100 and set(rcodes) <= {dns.rcode.NOERROR, dns.rcode.NXDOMAIN}, (len(rcodes), set(rcodes))
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


def test_an_update_that_fails_to_save_is_never_seen_over_udp(world_lab, monkeypatch):
    """While an UPDATE is being saved, a query answered by the UDP thread waits for the outcome: when saving fails
    and the zone is rolled back, no client has seen the record (no read of a change that never happened)."""
    import threading
    import time

    import dns.query

    from labmail.lab.dnsserver import ThreadedDNS

    engine = world_lab.engine("students")
    key = key_of(world_lab, "alice")
    saving = threading.Event()

    def slow_full_disk(*args, **kwargs):
        saving.set()
        time.sleep(0.5)
        raise OSError(28, "No space left on device")

    seen: list = []
    with ThreadedDNS(engine) as (host, port):
        def ask() -> None:
            saving.wait(10)
            seen.append(dns.query.udp(dns.message.make_query("ghost.alice.labmail.cloud", "A"), host, port=port, timeout=5))

        reader = threading.Thread(target=ask)
        reader.start()
        monkeypatch.setattr("labmail.lab.zones.atomic_write_text", slow_full_disk)
        update = make("alice.labmail.cloud", key)
        update.add("ghost", 300, "A", "192.0.2.66")
        assert dns.query.tcp(update, host, port=port, timeout=5).rcode() == dns.rcode.SERVFAIL
        reader.join(10)
        monkeypatch.undo()
    assert seen and seen[0].rcode() == dns.rcode.NXDOMAIN and not seen[0].answer, seen


def test_an_unexpected_error_answering_over_udp_does_not_end_the_udp_thread(world_lab, monkeypatch, caplog):
    """The UDP thread answers queries itself: whatever goes wrong with one (here: an error injected in the engine) is
    logged, and the next query is answered — DNS over UDP never silently stops."""
    import dns.exception
    import dns.query

    from labmail.lab.dnsserver import ThreadedDNS

    engine = world_lab.engine("students")
    original = engine.handle

    def fragile(wire, **kwargs):
        if b"\x04boom" in wire:
            raise RuntimeError("injected")
        return original(wire, **kwargs)

    monkeypatch.setattr(engine, "handle", fragile)
    with ThreadedDNS(engine) as (host, port):
        with pytest.raises(dns.exception.Timeout):
            dns.query.udp(dns.message.make_query("boom.alice.labmail.cloud", "A"), host, port=port, timeout=1)
        answer = dns.query.udp(dns.message.make_query("alice.labmail.cloud", "SOA"), host, port=port, timeout=3)
        assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    assert any("DNS UDP query" in r.getMessage() for r in caplog.records)


def test_a_student_zone_appears_at_once_never_answered_by_the_registry(world_lab):
    """While students are provisioned, the registry (ns1) and the students' server answer from their UDP threads:
    the registry never answers for a student's zone itself — only the delegation (found by an outside review: an
    authoritative answer from the registry for a moment, 1 to 10 times per provisioning)."""
    import threading

    from labmail.lab.dnsserver import ThreadedDNS

    registry = world_lab.engine("registry")
    labels = [f"nouveau{i}" for i in range(6)]
    wrong: list = []
    answered = [0]
    stop = threading.Event()

    def seen(reply) -> None:
        answered[0] += 1
        if reply.flags & dns.flags.AA and reply.answer:
            wrong.append(reply.to_text())

    def ask(host: str, port: int) -> None:
        _ask_until(stop, host, port, lambda i: f"{labels[i % len(labels)]}.labmail.cloud", "SOA", seen)

    with ThreadedDNS(registry) as (host, port):
        workers = [threading.Thread(target=ask, args=(host, port)) for _ in range(2)]
        for worker in workers:
            worker.start()
        try:
            world_lab.provision(labels)
        finally:
            stop.set()
            for worker in workers:
                worker.join(10)
        final = dns.query.udp(dns.message.make_query(f"{labels[0]}.labmail.cloud", "SOA"), host, port=port, timeout=2)
    assert answered[0] > 50 and not wrong, (answered[0], wrong[:1])
    assert not final.answer and any(rr.rdtype == dns.rdatatype.NS for rr in final.authority)  # a referral


def test_a_flood_over_udp_neither_wedges_nor_outlives_the_server(world_lab):
    """More distinct queries at once than the socket buffer holds: the excess is dropped as a full buffer drops it,
    and the next query is answered; stopping frees the port at once."""
    import socket
    import time

    import dns.exception
    import dns.query

    from labmail.lab.dnsserver import ThreadedDNS

    engine = world_lab.engine("students")
    with ThreadedDNS(engine) as (host, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flood:
            for i in range(6000):
                flood.sendto(dns.message.make_query(f"f{i}.alice.labmail.cloud", "A").to_wire(), (host, port))
        answer, deadline = None, time.monotonic() + 30
        while answer is None and time.monotonic() < deadline:  # as a resolver retries (dig: 3 tries): the query may
            try:  # arrive while the backlog is full and be dropped, as a full socket buffer drops it
                answer = dns.query.udp(dns.message.make_query("alice.labmail.cloud", "SOA"), host, port=port, timeout=2)
            except dns.exception.Timeout:
                pass
        assert answer is not None and answer.rcode() == dns.rcode.NOERROR and answer.answer
        started = time.monotonic()
    assert time.monotonic() - started < 1.5
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((host, port))  # the server's socket is closed


@pytest.mark.parametrize("rdtype,value", [
    ("DNAME", "gmail.test."),  # accepted, then never applied: imap.alias.<zone> answered NXDOMAIN (RFC 6672)
    ("RRSIG", "A 13 3 300 20300101000000 20200101000000 12345 alice.labmail.cloud. AAAA"),  # DNSSEC in an
    ("NSEC", "next.alice.labmail.cloud. A"),  # unsigned zone: BIND refuses them too
])
def test_records_the_server_would_not_apply_are_refused(world_lab, students, rdtype, value):
    """Found by an outside review against BIND 9.18: refused (and nothing applied), not accepted and ignored."""
    key = key_of(world_lab, "alice")
    before = serial(world_lab, "alice.labmail.cloud")
    u = make("alice.labmail.cloud", key)
    u.add("r.alice.labmail.cloud.", 300, rdtype, value)
    assert send(students, u).rcode() == dns.rcode.REFUSED
    assert serial(world_lab, "alice.labmail.cloud") == before


def test_ixfr_is_answered_with_the_whole_zone(world_lab, students):
    """An IXFR query carries the client's SOA in its authority section (RFC 1995 §3): it got FORMERR; the server
    may answer with the whole zone, as AXFR does (RFC 1995 §4) — what dig and BIND secondaries then take."""
    key = key_of(world_lab, "alice")
    q = dns.message.make_query("alice.labmail.cloud", "IXFR")
    q.authority.append(dns.rrset.from_text("alice.labmail.cloud.", 0, "IN", "SOA",
                                           "ns. hostmaster. 1 3600 600 86400 300"))
    q.use_tsig({key.name: key}, keyname=key.name)
    r = dns.message.from_wire(students.handle(q.to_wire(), tcp=True)[0], keyring=False, one_rr_per_rrset=True)
    assert r.rcode() == dns.rcode.NOERROR
    assert r.answer[0].rdtype == dns.rdatatype.SOA and r.answer[-1].rdtype == dns.rdatatype.SOA and len(r.answer) > 2
