"""labmail.checks.domain: every row and status, including each of Mailcow's shortfalls, on the lab."""

from __future__ import annotations

import shutil
import subprocess

import dns.name
import dns.query
import dns.rdata
import dns.update
import dns.zone
import pytest

from labmail import checks, dns as ldns
from labmail.world import current

DOMAIN = "jean-emile.labmail.cloud"
H = "mailcow.labmail.cloud"


def _empty_zone(world) -> None:
    """Only SOA and NS left in the student's zone (raw RFC 2136: the panel would refuse to touch a doubled name)."""
    key = world.tsig_key()
    cleanup = dns.update.UpdateMessage(DOMAIN, keyring={key.name: key}, keyname=key.name)
    for rec in ldns.ZonePanel(world=world).list():
        if rec.type not in ("SOA", "NS"):
            cleanup.delete(rec.name, rec.type)
    dns.query.tcp(cleanup, world.dns_server[0], port=world.dns_server[1], timeout=5)


@pytest.fixture
def world(lab_env):
    """The session's lab, the student's zone empty whatever a module run before on this worker left in it."""
    found = current()
    _empty_zone(found)
    return found


@pytest.fixture
def publish(world):
    """Write records straight into the zone with RFC 2136 (like nsupdate: no panel safety net); cleaned after."""
    key = world.tsig_key()

    def send(name: str, rtype: str, *values: str, ttl: int = 300) -> None:
        update = dns.update.UpdateMessage(DOMAIN, keyring={key.name: key}, keyname=key.name)
        owner = name if name.endswith(".") else (f"{name}.{DOMAIN}." if name != "@" else f"{DOMAIN}.")
        for value in values:
            update.add(owner, ttl, dns.rdata.from_text("IN", rtype, value, origin=dns.name.from_text(f"{DOMAIN}.")))
        assert dns.query.tcp(update, world.dns_server[0], port=world.dns_server[1], timeout=5).rcode() == 0

    yield send
    _empty_zone(world)


def dkim_record(lab_env) -> str:
    cfg, _ = lab_env
    return (cfg.state_dir / "keys" / "dkim" / f"{DOMAIN}.dkim.txt").read_text().strip()


def _txt(value: str) -> str:
    return " ".join('"' + value[i:i + 255] + '"' for i in range(0, len(value), 255))


def good_zone(publish, lab_env):
    publish("@", "MX", f"10 {H}.")
    publish("@", "TXT", '"v=spf1 ip4:203.0.113.10 -all"')
    publish("dkim._domainkey", "TXT", _txt(dkim_record(lab_env)))
    publish("_dmarc", "TXT", '"v=DMARC1; p=quarantine"')
    publish("autodiscover", "CNAME", f"{H}.")
    publish("_autodiscover._tcp", "SRV", f"0 1 443 {H}.")
    publish("autoconfig", "CNAME", f"{H}.")


def test_empty_zone_says_missing_not_optional(world):
    audit = checks.domain(DOMAIN)
    status = {r.role: r.status for r in audit.rows}
    for role in ("mx", "spf", "dkim", "dmarc", "autodiscover", "autodiscover-srv", "autoconfig"):
        assert status[role] == "MISSING", role  # Mailcow shows "²" (optional) here
    assert status["server-A"] == "OK" and status["ptr-203.0.113.10"] == "OK" and status["dnsbl-203.0.113.10"] == "OK"
    assert status["imaps"] == "OPTIONAL" and status["mta-sts"] == "OPTIONAL"
    mx = audit.row("mx")
    assert mx.ttl == 60 and "60 s" in mx.visible_in  # the negative TTL: when a fix becomes visible
    assert "MX 10 mailcow.labmail.cloud." in str(mx.fix) and mx.rfc == "RFC 5321 §5.1"
    assert not audit.ok
    frame = audit.to_dataframe()
    assert list(frame.columns) == ["nom", "type", "attendu", "trouvé", "statut", "pourquoi", "correction", "ttl", "RFC"]
    assert set(frame["statut"]) <= set(checks.STATUSES)
    assert "<table" in audit._repr_html_() and "MISSING" in str(audit)


def test_good_zone_is_all_ok(world, publish, lab_env):
    good_zone(publish, lab_env)
    audit = checks.domain(DOMAIN)
    assert audit.ok, str(audit)
    assert audit.row("mx").found == (f"10 {H}.",)  # the priority is shown
    assert "IPv6" in str(audit.row("spf").why)  # IPv4-only SPF: OK (Mailcow: never ✓), the IPv6 gap is explained
    assert audit.row("dkim").status == "OK"


@pytest.mark.parametrize("record", [
    "v=spf1 ip4:203.0.113.0/24 -all",  # CIDR: Mailcow shows "?"
    "v=spf1 mx -all",
    "V=SPF1 MX -ALL",  # upper case: Mailcow shows "?"
    "v=spf1 a:mailcow.labmail.cloud ~all",
    "v=spf1 include:_spf.jean-emile.labmail.cloud -all",
    "v=spf1 redirect=_spf.jean-emile.labmail.cloud",
    "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(1, 30)) + " ip4:203.0.113.10 -all",  # split strings
])
def test_spf_is_evaluated_not_string_matched(world, publish, record):
    publish("@", "MX", f"10 {H}.")
    publish("_spf", "TXT", '"v=spf1 ip4:203.0.113.10 -all"')
    publish("@", "TXT", _txt(record))
    row = checks.domain(DOMAIN).row("spf")
    assert row.status == "OK", str(row.why)


@pytest.mark.parametrize("values,fragment", [
    (['"v=spf1 ip4:192.0.2.1 -all"'], "ip4:203.0.113.10"),  # the server is not authorised: the fix names it
    (['"v=spf1 mx -all"', '"v=spf1 -all"'], "2 enregistrements SPF"),
    (['"\\"v=spf1 mx -all\\""'], "guillemets"),
    (['" v=spf1 mx -all"'], "espace"),
])
def test_spf_mistakes(world, publish, values, fragment):
    publish("@", "MX", f"10 {H}.")
    for value in values:
        publish("@", "TXT", value)
    row = checks.domain(DOMAIN).row("spf")
    assert row.status == "WRONG"
    assert fragment in str(row.why) + str(row.fix)


def test_dkim_compares_the_key(world, publish, lab_env):
    key = dkim_record(lab_env).split("p=", 1)[1]
    publish("dkim._domainkey", "TXT", _txt(f"v=DKIM1; p={key}"))  # no k=rsa: fine (rsa is the default)
    assert checks.domain(DOMAIN).row("dkim").status == "OK"


@pytest.mark.parametrize("make,fragment", [
    (lambda rec: [_txt(rec[:255])], "tronquée"),
    (lambda rec: ['"\\"' + rec[:200] + '" "' + rec[200:] + '\\""'], "guillemets"),
    (lambda rec: [_txt(rec[:200]), _txt(rec[200:])], "plusieurs enregistrements"),
    (lambda rec: [_txt("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAother")], "pas celle"),
])
def test_dkim_mistakes(world, publish, lab_env, make, fragment):
    for value in make(dkim_record(lab_env)):
        publish("dkim._domainkey", "TXT", value)
    row = checks.domain(DOMAIN).row("dkim")
    assert row.status == "WRONG" and fragment in str(row.why), str(row.why)


def test_dmarc_is_validated(world, publish):
    publish("_dmarc", "TXT", '"v=DMARC1; p=block"')
    assert checks.domain(DOMAIN).row("dmarc").status == "WRONG"


def test_dmarc_at_the_apex_and_external_reports(world, publish):
    publish("@", "TXT", '"v=DMARC1; p=reject"')
    row = checks.domain(DOMAIN).row("dmarc")
    assert row.status == "WRONG" and "au lieu de _dmarc" in str(row.why)
    publish("_dmarc", "TXT", '"v=DMARC1; p=none; rua=mailto:rapports@gmail.test"')
    row = checks.domain(DOMAIN).row("dmarc")
    assert row.status == "WRONG" and "non autorisée" in str(row.why)


@pytest.mark.parametrize("values,fragment", [
    ([f"10 autodiscover.{DOMAIN}."], "alias"),
    (["10 mail.elsewhere.test."], "aucun MX"),
    (["0 ."], "MX nul"),
])
def test_mx_mistakes(world, publish, values, fragment):
    publish("autodiscover", "CNAME", f"{H}.")
    for value in values:
        publish("@", "MX", value)
    row = checks.domain(DOMAIN).row("mx")
    assert row.status == "WRONG" and fragment in str(row.why), str(row.why)


def test_names_compare_case_insensitively_and_priorities_show(world, publish):
    publish("@", "MX", "10 MAILCOW.LabMail.cloud.", "20 mailcow.labmail.cloud.")
    row = checks.domain(DOMAIN).row("mx")
    assert row.status == "OK" and len(row.found) == 2  # Mailcow: exact, case-sensitive match


def test_autodiscover_as_an_address(world, publish):
    publish("autodiscover", "A", "203.0.113.10")  # the server's own address: Mailcow shows a mismatch (IPv4 only)
    publish("autoconfig", "A", "192.0.2.1")
    audit = checks.domain(DOMAIN)
    assert audit.row("autodiscover").status == "INFO" and "CNAME" in str(audit.row("autodiscover").fix)
    assert audit.row("autoconfig").status == "WRONG"


def test_srv_rows(world, publish):
    publish("_autodiscover._tcp", "SRV", f"0 1 8443 {H}.")
    publish("_imaps._tcp", "SRV", f"0 1 993 {H}.")
    publish("_pop3._tcp", "SRV", "0 0 0 .")
    audit = checks.domain(DOMAIN)
    assert audit.row("autodiscover-srv").status == "WRONG"
    assert audit.row("imaps").status == "OK" and audit.row("imaps").found == (f"0 1 993 {H}.",)
    assert audit.row("pop3").status == "INFO"  # "." = service not offered (RFC 2782)


def test_a_doubled_name_is_recognised(world, publish):
    publish(f"_dmarc.{DOMAIN}.{DOMAIN}.", "TXT", '"v=DMARC1; p=none"')
    audit = checks.domain(DOMAIN)
    doubled = [r for r in audit.rows if r.role.startswith("doubled-")]
    assert len(doubled) == 1 and doubled[0].status == "WRONG" and "doublé" in str(doubled[0].why)
    assert audit.row("dmarc").status == "MISSING"


def test_expected_zone_file(world, lab_env, tmp_path):
    audit = checks.domain(DOMAIN)
    text = audit.zone_file()
    assert "@ IN MX 10 mailcow.labmail.cloud." in text and '"v=spf1 ip4:203.0.113.10 -all"' in text
    zone = dns.zone.from_text(text, relativize=False)
    txt = zone.get_rdataset(f"dkim._domainkey.{DOMAIN}.", "TXT")[0]
    published = b"".join(txt.strings).decode()  # Mailcow's form of the record, from the API
    assert published.startswith("v=DKIM1;k=rsa;t=s;s=email;p=") and all(len(s) <= 255 for s in txt.strings)
    assert checks._key_of(published) == checks._key_of(dkim_record(lab_env))
    if shutil.which("named-checkzone"):
        path = tmp_path / "zone.db"
        path.write_text(text)
        out = subprocess.run(["named-checkzone", DOMAIN, str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_fix_the_zone_with_the_expected_file_then_all_ok(world, publish, lab_env):
    """What a student does with the audit: apply each proposed record, re-run, all green."""
    audit = checks.domain(DOMAIN)
    for name, rtype, value in audit.expected_records:
        if rtype == "SRV" and name != "_autodiscover._tcp":
            continue  # optional rows
        publish(name, rtype, value)
    assert checks.domain(DOMAIN).ok


def test_cli_check(world, lab_env):
    import os
    import sys

    out = subprocess.run([sys.executable, "-m", "labmail.cli", "check", DOMAIN], capture_output=True, text=True,
                         env=dict(os.environ), timeout=60)
    assert out.returncode == 1 and "MISSING" in out.stdout and "MX 10 mailcow.labmail.cloud." in out.stdout
    zone = subprocess.run([sys.executable, "-m", "labmail.cli", "check", DOMAIN, "--zone"], capture_output=True, text=True,
                          env=dict(os.environ), timeout=60)
    assert zone.stdout.startswith(f"$ORIGIN {DOMAIN}.")


def _copied(widget):
    """What a student copies from each fix box: (name, type, value)."""
    out = []
    for box in widget.fixes.children:
        texts = [c for c in getattr(box, "children", ()) if hasattr(c, "children")]
        if texts:
            name, rtype = (t.value for t in texts[0].children)
            out.append((name, rtype, box.children[2].value))
    return out


def test_dns_button_widget(world, lab_env, publish):
    """The widget: colours and a reason per row, then the student pastes each fix into the panel, clicks: all green."""
    from labmail.widgets import dns_check

    widget = dns_check()
    assert widget.domain.value == DOMAIN and widget.audit is not None
    table = widget.table.value
    assert "#fdecea" in table and "MISSING" in table and "#e8f5e9" in table  # red rows and green rows
    assert html_escape(str(widget.audit.row("mx").why)) in table
    assert "7 " in widget.summary.value and "corriger" in widget.summary.value
    copied = dict(((n, t), v) for n, t, v in _copied(widget))
    assert copied[("_dmarc", "TXT")] == "v=DMARC1; p=quarantine" and copied[("@", "MX")] == f"10 {H}."
    key = copied[("dkim._domainkey", "TXT")]  # whole key as the server's API gives it, no quotes: the panel splits it
    assert '"' not in key and key.startswith("v=DKIM1;") and key.split("p=")[1] == dkim_record(lab_env).split("p=")[1]
    panel = ldns.ZonePanel(world=world)
    for (name, rtype), value in copied.items():
        panel.add(name, rtype, value)
    widget.button.click()
    assert widget.audit.ok and "✔" in widget.summary.value and widget.fixes.children == ()


def test_dns_button_widget_names_a_pasted_mistake_and_bad_input(world, publish):
    from labmail.widgets import dns_check

    publish("@", "TXT", '"\\"v=spf1 ip4:203.0.113.10 -all\\""')  # quotes pasted into the value
    widget = dns_check()
    assert widget.audit.row("spf").status == "WRONG"
    assert ("@", "TXT", "v=spf1 ip4:203.0.113.10 -all") in _copied(widget)
    widget.domain.value = "pas un domaine!"
    widget.button.click()
    assert widget.audit is None and "⚠" in widget.summary.value and widget.table.value == ""
    assert not widget.button.disabled


def html_escape(text: str) -> str:
    import html

    return html.escape(text)
