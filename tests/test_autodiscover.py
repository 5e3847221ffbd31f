"""Autoconfig and Autodiscover replayed as Thunderbird and Outlook look them up, on the running lab."""

from __future__ import annotations

import pytest

from labmail import autodiscover, course, dns
from labmail.dns import ZonePanel
from labmail.errors import LabmailError
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
    with pytest.raises(LabmailError, match="ErrorCode 600"):
        autodiscover.parse_autodiscover(web.autodiscover_error(), TINTIN)
    with pytest.raises(LabmailError, match="ActiveSync"):
        autodiscover.parse_autodiscover(web.autodiscover_activesync(HOST, TINTIN), TINTIN)
    with pytest.raises(LabmailError, match="illisible"):
        autodiscover.parse_autoconfig("<clientConfig><oops", TINTIN)
    with pytest.raises(LabmailError, match="adresse mail complète"):
        autodiscover.thunderbird("tintin")


def test_without_records_nothing_is_found_and_every_place_is_named(clean):
    tb = autodiscover.thunderbird(TINTIN)
    assert not tb.found and "saisir à la main" in str(tb)
    assert [a.method for a in tb.attempts][:4] == ["autoconfig (ISP)", "well-known (ISP)", "autoconfig (ISP, http)",
                                                   "well-known (ISP, http)"]
    assert tb.attempts[0].detail == "le nom n'existe pas dans le DNS"
    assert tb.attempts[1].detail == "ce nom n'a pas d'adresse (A) dans le DNS"  # the apex exists, without an address
    assert any(a.method == "MX" and "labmail.cloud" in a.detail for a in tb.attempts)  # then the MX's base domain
    ol = autodiscover.outlook(TINTIN)
    assert not ol.found and [a.method for a in ol.attempts] == ["domaine", "autodiscover", "redirection http", "SRV"]
    with pytest.raises(LabmailError, match="Rien à tester"):
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
    assert tb.attempts[0].ok and f"CNAME {HOST}" in tb.attempts[0].dns and "A 203.0.113.10" in tb.attempts[0].dns
    assert (tb.best("imap").port, tb.best("smtp").port) == (993, 465)  # implicit TLS first (RFC 8314)
    status, xml = autodiscover.fetch(f"https://autoconfig.{DOMAIN}/mail/config-v1.1.xml")
    assert status == 200 and f"<hostname>{HOST}</hostname>" in xml
    with pytest.raises(LabmailError, match="rien n'écoute sur le port 80"):
        autodiscover.fetch(f"http://autoconfig.{DOMAIN}/mail/config-v1.1.xml")
    with pytest.raises(LabmailError, match="URL"):
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
    assert not autodiscover.thunderbird(TINTIN).found  # Thunderbird does not read SRV records


def test_an_unknown_mailbox_gets_error_600(clean):
    clean.add("autodiscover", "CNAME", f"{HOST}.")
    ol = autodiscover.outlook(f"personne@{DOMAIN}")
    assert not ol.found and "ErrorCode 600" in ol.attempts[1].detail


def test_a_certificate_that_does_not_cover_the_name_is_refused(clean):
    clean.add("www", "CNAME", f"{HOST}.")
    from labmail.world import current

    status, text, _path, _headers = autodiscover._fetch(current(), "https", f"www.{DOMAIN}", "/mail/config-v1.1.xml")
    assert status is None and "certificat refusé" in text and f"www.{DOMAIN}" in text
