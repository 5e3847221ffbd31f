"""Autoconfig and Autodiscover replayed as Thunderbird and Outlook look them up, on the running lab."""

from __future__ import annotations

import pytest

from labmail import autodiscover, course, dns
from labmail.dns import ZonePanel
from labmail import errors
from labmail.lab import web

DOMAIN = "jean-emile.labmail.cloud"
TINTIN = f"tintin@{DOMAIN}"
HOST = "mailcow.labmail.cloud"


@pytest.fixture
def clean(lab_env):
    course.prepare(6)  # tintin exists, no autodiscover record yet
    yield ZonePanel()
    course.prepare(4)


def test_documents_are_read_as_a_client_reads_them():
    servers = autodiscover.parse_autoconfig(web.autoconfig_xml(HOST), TINTIN)
    assert [(s.protocol, s.port, s.security) for s in servers] == [
        ("IMAP", 993, "SSL"), ("IMAP", 143, "STARTTLS"), ("POP3", 995, "SSL"), ("POP3", 110, "STARTTLS"),
        ("SMTP", 465, "SSL"), ("SMTP", 587, "STARTTLS")]
    assert {s.username for s in servers} == {TINTIN} and {s.hostname for s in servers} == {HOST}
    outlook = autodiscover.parse_autodiscover(web.autodiscover_imap(HOST, TINTIN), TINTIN)
    assert [(s.protocol, s.port, s.security) for s in outlook] == [("IMAP", 993, "SSL"), ("SMTP", 465, "SSL")]
    with pytest.raises(errors.AutodiscoverError, match="ErrorCode 600"):
        autodiscover.parse_autodiscover(web.autodiscover_error(), TINTIN)
    with pytest.raises(errors.AutodiscoverError, match="ActiveSync"):
        autodiscover.parse_autodiscover(web.autodiscover_activesync(HOST, TINTIN), TINTIN)
    with pytest.raises(errors.AutodiscoverError, match="illisible"):
        autodiscover.parse_autoconfig("<clientConfig><oops", TINTIN)
    with pytest.raises(errors.UsageError, match="adresse mail complète"):
        autodiscover.thunderbird("tintin")


def test_without_records_nothing_is_found_and_every_place_is_named(clean):
    tb = autodiscover.thunderbird(TINTIN)
    assert not tb.found and "saisir à la main" in str(tb)
    # Thunderbird 153's priorities (FindConfig.sys.mjs): its install file, the domain's autoconfig (HTTPS, then
    # HTTP, with ?emailaddress=), Mozilla's ISPDB, the MX's domains; Exchange Autodiscover alongside; guesses last
    methods = [a.method for a in tb.attempts]
    assert methods[:7] == ["fichier d'installation", "autoconfig (ISP)", "well-known (ISP)", "autoconfig (ISP, http)",
                           "well-known (ISP, http)", "ISPDB (Mozilla)", "MX"], methods
    assert tb.attempts[1].target == f"https://autoconfig.{DOMAIN}/mail/config-v1.1.xml?emailaddress={TINTIN}"
    assert tb.attempts[2].target == f"https://{DOMAIN}/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress={TINTIN}"
    assert tb.attempts[5].target == f"https://live.thunderbird.net/autoconfig/v1.1/{DOMAIN}"
    assert tb.attempts[1].detail == "le nom n'existe pas dans le DNS"
    assert tb.attempts[2].detail == "ce nom n'a pas d'adresse (A) dans le DNS"  # the apex exists, without an address
    mx = tb.attempts[6]
    assert "mailcow.labmail.cloud puis labmail.cloud" in mx.detail  # the MX host's domain, then its registrable one
    assert [a.target for a in tb.attempts if a.method == "autoconfig du MX"] == [
        f"https://autoconfig.{HOST}/mail/config-v1.1.xml?emailaddress={TINTIN}",
        f"https://autoconfig.labmail.cloud/mail/config-v1.1.xml?emailaddress={TINTIN}"]
    alongside = [a.target for a in tb.attempts if a.method == "Autodiscover (en parallèle)"]
    assert alongside == [f"https://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml",
                         f"https://{DOMAIN}/autodiscover/autodiscover.xml",
                         f"http://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml", f"_autodiscover._tcp.{DOMAIN}"]
    assert methods[-2:] == ["devinette", "devinette"]
    ol = autodiscover.outlook(TINTIN)
    assert not ol.found and [a.method for a in ol.attempts] == ["domaine", "autodiscover", "redirection http", "SRV"]
    with pytest.raises(errors.AutodiscoverError, match="Rien à tester"):
        autodiscover.check_settings(tb)


def test_the_seed_records_make_both_clients_configure_themselves(clean):
    zone = clean
    zone.add("autodiscover", "CNAME", f"{HOST}.")
    zone.add("_autodiscover._tcp", "SRV", f"0 0 443 {HOST}.")
    zone.add("autoconfig", "CNAME", f"{HOST}.")
    # the alias's own zone answers for it (its SOA query follows the CNAME to labmail.cloud's: not that zone)
    answer = dns.lookup(f"autodiscover.{DOMAIN}", "CNAME", authoritative=True)
    assert answer.ok and answer.authoritative and answer.values == [f"{HOST}."], answer.explanation
    tb = autodiscover.thunderbird(TINTIN)
    assert tb.found and tb.source.startswith(f"https://autoconfig.{DOMAIN}/mail/config-v1.1.xml")
    assert tb.attempts[1].ok and f"CNAME {HOST}" in tb.attempts[1].dns and "A 203.0.113.10" in tb.attempts[1].dns
    # Exchange Autodiscover ran alongside and answered too, but autoconfig has the priority
    exchange = next(a for a in tb.attempts if a.method == "Autodiscover (en parallèle)")
    assert exchange.ok and "non utilisé" in exchange.detail
    assert (tb.best("imap").port, tb.best("smtp").port) == (993, 465)  # implicit TLS first (RFC 8314)
    status, xml = autodiscover.fetch(f"https://autoconfig.{DOMAIN}/mail/config-v1.1.xml")
    assert status == 200 and f"<hostname>{HOST}</hostname>" in xml
    with pytest.raises(errors.AutodiscoverError, match="rien n'écoute sur le port 80"):
        autodiscover.fetch(f"http://autoconfig.{DOMAIN}/mail/config-v1.1.xml")
    with pytest.raises(errors.UsageError, match="URL"):
        autodiscover.fetch("ftp://example.org/")
    ol = autodiscover.outlook(TINTIN)
    assert ol.found and ol.source == f"https://autodiscover.{DOMAIN}/autodiscover/autodiscover.xml"
    checked = autodiscover.check_settings(tb)
    assert list(checked["résultat"]) == ["✔", "✔"], checked.to_dict("records")
    assert list(autodiscover.check_settings(ol)["résultat"]) == ["✔", "✔"]
    wrong = autodiscover.check_settings(tb, password="pas-le-bon")
    assert list(wrong["résultat"]) == ["✘", "✘"]
    table = tb.to_dataframe()
    assert list(table.columns) == ["méthode", "où", "DNS", "résultat", "détail"] and "<table>" in tb._repr_html_()


def test_outlook_falls_back_to_the_srv_record(clean):
    clean.add("_autodiscover._tcp", "SRV", f"0 0 443 {HOST}.")
    ol = autodiscover.outlook(TINTIN)
    assert ol.found and ol.source == f"https://{HOST}/autodiscover/autodiscover.xml"
    assert [a.ok for a in ol.attempts] == [False, False, False, True, True]
    # Thunderbird reads no SRV for autoconfig, but its Exchange Autodiscover, run alongside, does (153 ESR,
    # ExchangeAutoDiscover.sys.mjs): with autoconfig silent, the IMAP/SMTP servers it lists are used
    tb = autodiscover.thunderbird(TINTIN)
    assert tb.found and tb.source == f"https://{HOST}/autodiscover/autodiscover.xml"
    assert (tb.best("imap").port, tb.best("smtp").port) == (993, 465)
    assert not any(a.ok for a in tb.attempts if "ISP" in a.method or a.method == "autoconfig du MX")


def test_an_unknown_mailbox_gets_error_600(clean):
    clean.add("autodiscover", "CNAME", f"{HOST}.")
    ol = autodiscover.outlook(f"personne@{DOMAIN}")
    assert not ol.found and "ErrorCode 600" in ol.attempts[1].detail


def test_a_certificate_that_does_not_cover_the_name_is_refused(clean):
    clean.add("www", "CNAME", f"{HOST}.")
    from labmail.world import current

    try:
        status, text, _path, _headers = autodiscover._fetch(current(), "https", f"www.{DOMAIN}", "/mail/config-v1.1.xml")
    finally:
        clean.delete("www", "CNAME")  # not a course record: course.prepare() would leave it for the next tests
    assert status is None and "certificat refusé" in text and f"www.{DOMAIN}" in text
