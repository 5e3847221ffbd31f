"""labmail.dns as a student uses it: lookups that explain themselves, records(), the DNS panel, zone export."""

from __future__ import annotations

import socket
import threading

import dns.message
import dns.rcode
import dns.resolver
import dns.zone
import pytest

from labmail import dns as ldns
from labmail.dns import Outcome
from labmail.errors import DNSLookupFailed, LabError, RecordError, UpdateRefused
from labmail.world import World, current, use_world_resolver


@pytest.fixture
def world(lab_env):
    return current()


@pytest.fixture
def zone_panel(world):
    p = ldns.panel()
    yield p
    for rec in p.list():  # leave the shared lab's zone as it was (SOA and NS only)
        if rec.type not in ("SOA", "NS"):
            p.delete(rec.name, rec.type)


def test_lookup_answer_with_ttl(world):
    r = ldns.lookup("labmail.cloud", "MX")
    assert r.outcome is Outcome.ANSWER and r.ok
    assert r.values == ["10 mailcow.labmail.cloud."] and r.records[0].ttl == 3600
    assert "existe" in r.explanation
    assert list(r.to_dataframe().columns) == ["nom", "ttl", "type", "valeur"]
    assert "<table>" in r._repr_html_()


def test_lookup_nxdomain_and_nodata_are_distinct_and_explained(world):
    nx = ldns.lookup("_dmarc.jean-emile.labmail.cloud", "TXT")
    assert nx.outcome is Outcome.NXDOMAIN and nx.negative_ttl == 60
    assert "n'existe pas" in nx.explanation and "60 s" in nx.explanation
    nodata = ldns.lookup("jean-emile.labmail.cloud", "MX")
    assert nodata.outcome is Outcome.NODATA and nodata.negative_ttl == 60
    assert "pas d'enregistrement de ce type" in nodata.explanation
    assert nx.raise_for_status() is nx


def test_lookup_txt_strings_are_joined(world):
    r = ldns.lookup("20230601._domainkey.gmail.test", "TXT")
    assert len(r.records) == 1 and r.values[0].startswith("v=DKIM1; k=rsa; p=MII") and " " not in r.values[0][20:]


def test_lookup_authoritative_asks_the_zone_servers_without_recursion(world):
    r = ldns.lookup("gmail.test", "MX", authoritative=True)
    assert r.ok and r.authoritative


def test_lookup_follows_cnames(world):
    r = ldns.lookup("autoconfig.jean-emile.labmail.cloud", "A")
    assert r.outcome is Outcome.NXDOMAIN


@pytest.mark.parametrize("name,rdtype", [("", "A"), ("a..b", "A"), ("labmail.cloud", "MXX")])
def test_lookup_bad_input(world, name, rdtype):
    with pytest.raises(RecordError):
        ldns.lookup(name, rdtype)


@pytest.fixture
def silent_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()
    sock.close()


@pytest.fixture
def servfail_server():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)

    def serve():
        try:
            data, addr = sock.recvfrom(4096)
        except OSError:
            return
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(dns.rcode.SERVFAIL)
        sock.sendto(reply.to_wire(), addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()
    sock.close()


def _world_at(server, lab_cfg):
    return World("local", lab_cfg, server, (server,))


def test_lookup_timeout_is_an_outcome_not_a_hang(lab_env, silent_server):
    cfg, _ = lab_env
    r = ldns.lookup("labmail.cloud", "A", world=_world_at(silent_server, cfg), timeout=0.3)
    assert r.outcome is Outcome.TIMEOUT and "lab tourne" in r.explanation
    with pytest.raises(DNSLookupFailed, match="Pas de réponse"):
        r.raise_for_status()


def test_lookup_servfail(lab_env, servfail_server):
    cfg, _ = lab_env
    r = ldns.lookup("labmail.cloud", "A", world=_world_at(servfail_server, cfg))
    assert r.outcome is Outcome.SERVFAIL and "pas une absence" in r.explanation


def test_lookup_without_a_running_lab_says_so(isolated_config):
    with pytest.raises(LabError, match="labmail.lab.ensure"):
        ldns.lookup("labmail.cloud")


def test_records_lists_what_exists_and_what_is_missing(world):
    df = ldns.records("gmail.test", selector="20230601")
    by_role = dict(zip(df["rôle"], df["résultat"]))
    assert by_role["MX"] == "answer" and by_role["SPF"] == "answer" and by_role["DKIM"] == "answer"
    assert by_role["DMARC"] == "answer" and by_role["autoconfig"] == "NXDOMAIN"
    assert "MX → adresse" in set(df["rôle"])
    assert str(df["ttl"].dtype) == "Int64"
    empty = ldns.records("jean-emile.labmail.cloud")
    assert set(empty["résultat"]) <= {"NODATA", "NXDOMAIN"}


def test_use_world_resolver_points_dkimpy_at_the_lab(world):
    import dkim.dnsplug

    previous = dns.resolver.default_resolver
    with use_world_resolver(world):
        txt = dkim.dnsplug.get_txt(b"20230601._domainkey.gmail.test.")
        assert txt.startswith(b"v=DKIM1")
        assert dns.resolver.resolve("gmail.test", "MX")[0].preference == 5
    assert dns.resolver.default_resolver is previous


# --- the DNS panel -----------------------------------------------------------------------------
def test_panel_add_list_replace_delete(zone_panel):
    change = zone_panel.add("@", "MX", "10 mailcow.labmail.cloud.")
    assert change.notes == () and change.type == "MX"
    assert ldns.lookup("jean-emile.labmail.cloud", "MX").values == ["10 mailcow.labmail.cloud."]
    zone_panel.replace("@", "MX", ["10 mailcow.labmail.cloud.", "20 mailcow.labmail.cloud."], ttl=600)
    r = ldns.lookup("jean-emile.labmail.cloud", "MX")
    assert sorted(r.values) == ["10 mailcow.labmail.cloud.", "20 mailcow.labmail.cloud."] and r.records[0].ttl == 600
    zone_panel.delete("@", "MX", "20 mailcow.labmail.cloud.")
    assert ldns.lookup("jean-emile.labmail.cloud", "MX").values == ["10 mailcow.labmail.cloud."]
    listed = {(r.name, r.type) for r in zone_panel.list()}
    assert ("jean-emile.labmail.cloud.", "MX") in listed and ("jean-emile.labmail.cloud.", "SOA") in listed
    zone_panel.delete("@", "MX")
    assert ldns.lookup("jean-emile.labmail.cloud", "MX").outcome is Outcome.NODATA
    assert list(zone_panel.to_dataframe().columns) == ["nom", "ttl", "type", "valeur"]


def test_panel_strips_pasted_quotes_and_says_so(zone_panel):
    change = zone_panel.add("@", "TXT", '"v=spf1 ip4:203.0.113.10 -all"')
    assert "Guillemets retirés" in change.notes[0]
    assert ldns.lookup("jean-emile.labmail.cloud", "TXT").values == ["v=spf1 ip4:203.0.113.10 -all"]
    multi = zone_panel.add("_dmarc", "TXT", '"v=DMARC1; " "p=quarantine"')
    assert multi.values == ("v=DMARC1; p=quarantine",)


@pytest.mark.parametrize("value,message", [
    ('v=spf1 "ip4:203.0.113.10" -all', "guillemets au milieu"),
    ('"v=spf1 -all', "mal appariés"),
    ('jean-emile.labmail.cloud. IN TXT "v=spf1 -all"', "ligne entière"),
])
def test_panel_refuses_broken_txt(zone_panel, value, message):
    with pytest.raises(RecordError, match=message):
        zone_panel.add("@", "TXT", value)
    assert ldns.lookup("jean-emile.labmail.cloud", "TXT").outcome is Outcome.NODATA  # nothing half-written


def test_panel_splits_long_txt_and_says_so(zone_panel, lab_env):
    cfg, _ = lab_env
    record = (cfg.state_dir / "keys" / "dkim" / "jean-emile.labmail.cloud.dkim.txt").read_text().strip()
    change = zone_panel.add("dkim._domainkey", "TXT", record)
    assert any("découpée en 2 chaînes" in n for n in change.notes)
    r = ldns.lookup("dkim._domainkey.jean-emile.labmail.cloud", "TXT")
    assert r.values == [record]  # the receiver joins the strings back
    assert all(len(s) <= 255 for s in r.records[0].rdata.strings)


def test_panel_deletes_what_is_published_or_says_it_is_not(zone_panel):
    zone_panel.add("_dmarc", "TXT", '"v=DMARC1; " "p=none"')  # published as two strings
    with pytest.raises(RecordError, match="n'est pas publié : rien n'a été supprimé.*v=DMARC1; p=none"):
        zone_panel.delete("_dmarc", "TXT", "v=DMARC1; p=reject")
    assert ldns.lookup("_dmarc.jean-emile.labmail.cloud", "TXT").values == ["v=DMARC1; p=none"]
    change = zone_panel.delete("_dmarc", "TXT", "v=DMARC1; p=none")  # the joined text, as lookups show it
    assert change.values == ("v=DMARC1; p=none",)
    assert ldns.lookup("_dmarc.jean-emile.labmail.cloud", "TXT").outcome is Outcome.NXDOMAIN
    with pytest.raises(RecordError, match="Publiés pour ce nom et ce type : aucun"):
        zone_panel.delete("@", "MX", "10 mailcow.labmail.cloud.")


def test_panel_catches_doubled_names_and_reads_full_names(zone_panel):
    with pytest.raises(RecordError, match="deux fois votre zone") as info:
        zone_panel.add("_dmarc.jean-emile.labmail.cloud.jean-emile.labmail.cloud", "TXT", "v=DMARC1; p=none")
    assert "« _dmarc »" in str(info.value)
    change = zone_panel.add("_dmarc.jean-emile.labmail.cloud", "TXT", "v=DMARC1; p=none")
    assert change.name == "_dmarc.jean-emile.labmail.cloud." and "point final" in change.notes[0]


def test_panel_refuses_names_outside_the_zone(zone_panel):
    with pytest.raises(RecordError, match="pas dans votre zone"):
        zone_panel.add("_dmarc.labmail.cloud.", "TXT", "v=DMARC1; p=none")
    with pytest.raises(RecordError, match="label invalide"):
        zone_panel.add("bad name", "TXT", "x")


def test_panel_mx_rules(zone_panel):
    with pytest.raises(RecordError, match="pas vers une adresse IP"):
        zone_panel.add("@", "MX", "10 203.0.113.10")
    with pytest.raises(RecordError, match="priorité cible"):
        zone_panel.add("@", "MX", "mailcow.labmail.cloud.")
    zone_panel.add("alias", "CNAME", "mailcow.labmail.cloud")
    with pytest.raises(RecordError, match="CNAME") as info:
        zone_panel.add("@", "MX", "10 alias.jean-emile.labmail.cloud.")
    assert info.value.rfc == "RFC 2181 §10.3"
    change = zone_panel.add("@", "MX", "10 mailcow.labmail.cloud")  # no final dot: read as a full name
    assert "point final est obligatoire" in change.notes[0]
    warn = zone_panel.add("@", "MX", "20 nowhere.jean-emile.labmail.cloud.")
    assert any("n'a pas (encore) d'adresse" in n for n in warn.notes)


def test_panel_cname_rules(zone_panel):
    with pytest.raises(RecordError, match="apex"):
        zone_panel.add("@", "CNAME", "mailcow.labmail.cloud.")
    zone_panel.add("www", "A", "203.0.113.80")
    with pytest.raises(RecordError, match="seul à son nom"):
        zone_panel.add("www", "CNAME", "mailcow.labmail.cloud.")
    zone_panel.add("autoconfig", "CNAME", "mailcow.labmail.cloud.")
    with pytest.raises(RecordError, match="alias"):
        zone_panel.add("autoconfig", "TXT", "x")


def test_panel_other_types_and_values(zone_panel):
    with pytest.raises(RecordError, match="utilisez le type AAAA"):
        zone_panel.add("www", "A", "2001:db8::1")
    with pytest.raises(RecordError, match="pas une adresse IP"):
        zone_panel.add("www", "A", "mailcow")
    with pytest.raises(RecordError, match="Type d'enregistrement inconnu"):
        zone_panel.add("www", "MXX", "x")
    with pytest.raises(RecordError, match="SOA"):
        zone_panel.add("@", "SOA", "x")
    with pytest.raises(RecordError, match="TTL"):
        zone_panel.add("www", "A", "203.0.113.80", ttl=-5)
    zone_panel.add("_autodiscover._tcp", "SRV", "0 0 443 mailcow.labmail.cloud.")
    assert ldns.lookup("_autodiscover._tcp.jean-emile.labmail.cloud", "SRV").values == ["0 0 443 mailcow.labmail.cloud."]


def test_panel_refuses_a_second_spf_record(zone_panel):
    zone_panel.add("@", "TXT", "v=spf1 mx -all")
    with pytest.raises(RecordError, match="un seul|only one|déjà un enregistrement SPF"):
        zone_panel.add("@", "TXT", "v=spf1 ip4:203.0.113.10 -all")
    zone_panel.replace("@", "TXT", "v=spf1 ip4:203.0.113.10 -all")
    assert ldns.lookup("jean-emile.labmail.cloud", "TXT").values == ["v=spf1 ip4:203.0.113.10 -all"]


def test_panel_with_a_wrong_key_or_another_zone(world, lab_env):
    import dns.tsig

    wrong = dns.tsig.Key("jean-emile.labmail.cloud.", b"\x00" * 32, "hmac-sha256")
    p = ldns.ZonePanel(world=world, key=wrong)
    with pytest.raises(UpdateRefused, match="TSIG"):
        p.list()
    other = ldns.ZonePanel("milou.labmail.cloud", world=world)  # jean-emile's key on milou's zone
    with pytest.raises(UpdateRefused, match="REFUSED"):
        other.add("@", "TXT", "hello")
    with pytest.raises(UpdateRefused, match="transfert"):
        other.list()


def test_export_is_a_valid_bind_zone_file(zone_panel):
    zone_panel.add("@", "MX", "10 mailcow.labmail.cloud.")
    zone_panel.add("@", "TXT", "v=spf1 " + " ".join(f"ip4:203.0.113.{i}" for i in range(1, 30)) + " -all")
    text = zone_panel.export()
    assert text.startswith("$ORIGIN jean-emile.labmail.cloud.\n$TTL 300\n")
    assert "jean-emile.labmail.cloud. 300 IN MX 10 mailcow.labmail.cloud." in text
    parsed = dns.zone.from_text(text, relativize=False)
    txt = parsed.get_rdataset("jean-emile.labmail.cloud.", "TXT")[0]
    assert len(txt.strings) == 2 and all(len(s) <= 255 for s in txt.strings)
    again = ldns.export_zone(zone_panel.list(), "jean-emile.labmail.cloud.")
    assert dns.zone.from_text(again, relativize=False) == parsed


def test_a_simulated_address_the_lab_does_not_serve_is_an_error_not_the_internet(lab_env):
    from labmail.errors import LabError
    from labmail.world import current

    world = current()
    with pytest.raises(LabError, match="ne sert pas encore le port 80 de 203.0.113.10"):
        world.connect_address("203.0.113.10", 80)
    assert world.connect_address("127.0.0.1", 9) == ("127.0.0.1", 9)  # loopback is used as it is
    host, port = world.connect_address("203.0.113.10", 25)
    assert host == "127.0.0.1" and port != 25  # a served port: the lab's port map


@pytest.mark.parametrize("value", ["v=DKIM1; k=rsa; p=" + "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A" * 12, "court",
                                   "é" * 200 + ' "guillemets" et \\ barre', ""])
def test_txt_strings_is_what_bind_reads_back(value):
    """The form shown for nsupdate: strings of at most 255 bytes that a zone-file parser joins back to the value,
    8-bit bytes and quotes escaped (RFC 1035 §5.1)."""
    import dns.rdata

    text = ldns.txt_strings(value)
    rdata = dns.rdata.from_text("IN", "TXT", text)
    assert b"".join(rdata.strings).decode() == value
    assert all(len(s) <= 255 for s in rdata.strings) and len(rdata.strings) == max(1, -(-len(value.encode()) // 255))
