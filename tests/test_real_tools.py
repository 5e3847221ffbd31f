"""Real DNS tools against the lab (dig, nsupdate), and the DNS panel against a real BIND (the live world)."""

from __future__ import annotations

import base64
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import dns.zone
import pytest

from labmail import dns as ldns
from labmail import lab
from labmail.config import Config
from labmail.errors import UpdateRefused
from labmail.world import World

pytestmark = pytest.mark.tools


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kwargs)


def test_dig_answers_the_student_soa(lab_env):
    _, status = lab_env
    out = run(["dig", f"@{status.host}", "-p", str(status.dns_port), "jean-emile.labmail.cloud", "SOA"])
    assert "status: NOERROR" in out.stdout and "flags: qr rd ra;" in out.stdout  # the lab's resolver
    assert "dns.labmail.cloud. hostmaster.jean-emile.labmail.cloud." in out.stdout
    auth = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "jean-emile.labmail.cloud", "SOA", "+norec"])
    assert "status: NOERROR" in auth.stdout and "flags: qr aa;" in auth.stdout  # the zone's own server
    referral = run(["dig", f"@{status.host}", "-p", str(status.registry_port), "jean-emile.labmail.cloud", "SOA",
                    "+norec"])
    assert "AUTHORITY: 1" in referral.stdout and "IN\tNS\tdns.labmail.cloud." in referral.stdout
    assert "203.0.113.54" in referral.stdout  # the glue
    tcp = run(["dig", f"@{status.host}", "-p", str(status.dns_port), "+tcp", "+short", "gmail.test", "MX"])
    assert tcp.stdout.strip() == "5 gmail-smtp-in.l.gmail.test."


def nsupdate(status, key_file, commands):
    script = f"server {status.host} {status.auth_port}\n" + commands + "send\n"
    return run(["nsupdate", "-k", str(key_file)], input=script)


def test_nsupdate_with_own_key_adds_mx_and_another_key_is_refused(lab_env):
    cfg, status = lab_env
    own = lab.student_key_file(cfg)
    other = cfg.state_dir / "keys" / "milou.labmail.cloud.key"
    try:
        ok = nsupdate(status, own, "zone jean-emile.labmail.cloud\n"
                                   "update add jean-emile.labmail.cloud. 300 MX 10 mailcow.labmail.cloud.\n")
        assert ok.returncode == 0, ok.stderr
        dig = run(["dig", f"@{status.host}", "-p", str(status.dns_port), "+short", "jean-emile.labmail.cloud", "MX"])
        assert dig.stdout.strip() == "10 mailcow.labmail.cloud."
        refused = nsupdate(status, other, "zone jean-emile.labmail.cloud\n"
                                          "update add jean-emile.labmail.cloud. 300 TXT pwned\n")
        assert refused.returncode != 0 and "REFUSED" in refused.stdout + refused.stderr
        forged = subprocess.run(
            ["nsupdate", "-y", "hmac-sha256:jean-emile.labmail.cloud.:" + base64.b64encode(b"x" * 32).decode()],
            input=f"server {status.host} {status.auth_port}\nzone jean-emile.labmail.cloud\n"
                  "update add jean-emile.labmail.cloud. 300 TXT forged\nsend\n",
            capture_output=True, text=True, timeout=30)
        assert "NOTAUTH(BADSIG)" in forged.stdout + forged.stderr
        axfr = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "-k", str(own), "jean-emile.labmail.cloud", "AXFR"])
        assert "MX\t10 mailcow.labmail.cloud." in axfr.stdout and "TSIG" in axfr.stdout
        denied = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "-k", str(other), "jean-emile.labmail.cloud", "AXFR"])
        assert "Transfer failed" in denied.stdout
    finally:
        nsupdate(status, own, "zone jean-emile.labmail.cloud\nupdate delete jean-emile.labmail.cloud. MX\n")


def test_real_tools_get_the_rfc_answers_to_odd_requests(lab_env):
    """A known key name with another algorithm: NOTAUTH(BADKEY), as BIND answers (RFC 8945 §5.2.1), not FORMERR;
    a malformed query to the resolver: FORMERR with RA set, as every reply of a recursive server carries it."""
    _cfg, status = lab_env
    other_algorithm = subprocess.run(
        ["nsupdate", "-y", "hmac-sha512:jean-emile.labmail.cloud.:" + base64.b64encode(secrets.token_bytes(64)).decode()],
        input=f"server {status.host} {status.auth_port}\nzone jean-emile.labmail.cloud\n"
              "update add x.jean-emile.labmail.cloud. 300 TXT forged\nsend\n",
        capture_output=True, text=True, timeout=30)
    assert "NOTAUTH(BADKEY)" in other_algorithm.stdout + other_algorithm.stderr, other_algorithm.stderr
    empty = run(["dig", f"@{status.host}", "-p", str(status.dns_port), "+header-only", "jean-emile.labmail.cloud"])
    assert "status: FORMERR" in empty.stdout and "flags: qr rd ra;" in empty.stdout, empty.stdout
    assert "OPT PSEUDOSECTION" in empty.stdout and "retry with +noedns" not in empty.stdout  # EDNS answered in kind
    auth = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "+header-only", "jean-emile.labmail.cloud"])
    assert "status: FORMERR" in auth.stdout and "flags: qr rd;" in auth.stdout, auth.stdout  # no recursion there


def test_exported_zone_passes_named_checkzone(lab_env, tmp_path):
    p = ldns.panel()
    try:
        p.add("@", "MX", "10 mailcow.labmail.cloud.")
        p.add("@", "TXT", "v=spf1 ip4:203.0.113.10 -all")
        p.add("dkim._domainkey", "TXT", "v=DKIM1; k=rsa; p=" + "A" * 392)
        p.add("_dmarc", "TXT", "v=DMARC1; p=quarantine")
        p.add("autoconfig", "CNAME", "mailcow.labmail.cloud.")
        p.add("_autodiscover._tcp", "SRV", "0 0 443 mailcow.labmail.cloud.")
        path = tmp_path / "zone.db"
        path.write_text(p.export())
        check = run(["named-checkzone", "jean-emile.labmail.cloud", str(path)])
        assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
    finally:
        for rec in p.list():
            if rec.type not in ("SOA", "NS"):
                p.delete(rec.name, rec.type)


def _records(dig_output: str, rtype: str) -> int:
    """How many records of ``rtype`` dig printed (answer lines, not the question)."""
    import re

    return sum(1 for line in dig_output.splitlines() if not line.startswith(";") and re.search(rf"\sIN\s+{rtype}\s", line))


def test_an_oversized_update_is_refused_and_a_big_zone_still_transfers(lab_env, tmp_path):
    """One update cannot make the zone unservable: an RRset that would outgrow a DNS answer is REFUSED, with nothing
    changed; a zone larger than one DNS message (64 KiB) still transfers (AXFR in several signed messages), answers,
    and passes named-checkzone."""
    cfg, status = lab_env
    own = lab.student_key_file(cfg)
    zone = "jean-emile.labmail.cloud"
    chunk = " ".join('"' + "a" * 250 + '"' for _ in range(30))  # one TXT record of 7.5 KB
    try:
        for i in range(12):  # 12 names × 7.5 KB = 90 KB: a zone bigger than a DNS message
            ok = nsupdate(status, own, f"zone {zone}\nupdate add big{i}.{zone}. 300 TXT {chunk}\n")
            assert ok.returncode == 0, ok.stdout + ok.stderr
        before = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "-k", str(own), zone, "SOA", "+short"]).stdout
        ok = nsupdate(status, own, f"zone {zone}\nupdate add big0.{zone}. 300 TXT {chunk.replace('a', 'b')}\n")
        assert ok.returncode == 0  # 15 KB at one name and type: still servable
        refused = nsupdate(status, own, f"zone {zone}\nupdate add big0.{zone}. 300 TXT {chunk.replace('a', 'c')}\n")
        assert "REFUSED" in refused.stdout + refused.stderr  # 22 KB: refused, and nothing changed
        after = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "-k", str(own), zone, "SOA", "+short"]).stdout
        assert after.split()[2] == str(int(before.split()[2]) + 1)  # only the accepted update bumped the serial
        answer = run(["dig", f"@{status.host}", "-p", str(status.dns_port), "+tcp", f"big0.{zone}", "TXT"])
        assert "status: NOERROR" in answer.stdout and _records(answer.stdout, "TXT") == 2
        axfr = run(["dig", f"@{status.host}", "-p", str(status.auth_port), "-k", str(own), zone, "AXFR"])
        assert "Transfer failed" not in axfr.stdout and _records(axfr.stdout, "TXT") == 13, axfr.stdout[-500:]
        assert _records(axfr.stdout, "SOA") == 2 and "XFR size: 16 records (messages 2" in axfr.stdout, axfr.stdout[-300:]
        path = tmp_path / "zone.db"
        path.write_text(ldns.panel().export())
        check = run(["named-checkzone", zone, str(path)])
        assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
        log = lab.status(cfg).log_path.read_text(errors="replace")
        assert "would take" in log and "TooBig" not in log and "Traceback" not in log
        assert max(len(line) for line in log.splitlines()) < 2200  # records are cut in the log, never 7 KB lines
    finally:
        nsupdate(status, own, f"zone {zone}\n" + "".join(f"update delete big{i}.{zone}.\n" for i in range(12)))


# --- a real BIND as the class's authoritative server (live world) -------------------------------
def _free_port() -> int:
    """A loopback port free for UDP *and* TCP (named serves both; a port free for UDP alone was once taken for TCP by
    a lab of the other test worker: the updates, over TCP, were refused)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _named_options(work: Path, port: int) -> str:
    """A private named: its files in ``work``, loopback ``port`` only, authoritative, no control channel."""
    return f"""
options {{
    directory "{work}"; pid-file "{work}/named.pid"; session-keyfile "{work}/session.key";
    managed-keys-directory "{work}"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; allow-query {{ any; }}; notify no;
}};
controls {{ }};
"""


@pytest.fixture
def bind_server(tmp_path):
    named = shutil.which("named") or "/usr/sbin/named"
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = _free_port()
    work = tmp_path / "bind"
    work.mkdir()
    (work / "live.zone").write_text(
        "$TTL 300\n@ IN SOA ns1.labmail.cloud. hostmaster.live.labmail.cloud. 1 3600 900 1209600 60\n"
        "@ IN NS ns1.labmail.cloud.\n")
    (work / "parent.zone").write_text(
        "$TTL 300\n@ IN SOA ns1.labmail.cloud. hostmaster.labmail.cloud. 1 3600 900 1209600 60\n"
        "@ IN NS ns1.labmail.cloud.\nns1 IN A 203.0.113.53\nmailcow IN A 203.0.113.10\n"
        "live IN NS ns1.labmail.cloud.\n")
    (work / "named.conf").write_text(_named_options(work, port) + f"""
key "live.labmail.cloud." {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "labmail.cloud" {{ type primary; file "{work}/parent.zone"; }};
zone "live.labmail.cloud" {{
    type primary; file "{work}/live.zone";
    update-policy {{ grant live.labmail.cloud. subdomain live.labmail.cloud. ANY; }};
    allow-transfer {{ key live.labmail.cloud.; }};
}};
""")
    log = open(work / "named.log", "w")
    proc = subprocess.Popen([named, "-g", "-c", str(work / "named.conf")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            r = dns.query.udp(dns.message.make_query("live.labmail.cloud", "SOA"), "127.0.0.1", port=port, timeout=0.3)
            if r.answer:
                break
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.close()
            pytest.fail("named did not start: " + (work / "named.log").read_text())
        time.sleep(0.1)
    yield port, dns.tsig.Key("live.labmail.cloud.", base64.b64decode(secret), "hmac-sha256")
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_panel_drives_a_real_bind_server(bind_server, tmp_path):
    port, key = bind_server
    cfg = Config(prenom="live", world="live", state_dir=tmp_path / "unused")
    world = World("live", cfg, ("127.0.0.1", port), (("127.0.0.1", port),))
    p = ldns.ZonePanel(world=world, key=key)
    p.add("@", "MX", "10 mailcow.labmail.cloud.")
    long_spf = "v=spf1 " + " ".join(f"ip4:203.0.113.{i}" for i in range(1, 30)) + " -all"
    change = p.add("@", "TXT", long_spf)
    assert any("découpée" in n for n in change.notes)
    p.replace("_dmarc", "TXT", "v=DMARC1; p=quarantine")
    p.replace("_dmarc", "TXT", "v=DMARC1; p=reject")
    r = ldns.lookup("live.labmail.cloud", "TXT", world=world)
    assert r.values == [long_spf]
    assert ldns.lookup("_dmarc.live.labmail.cloud", "TXT", world=world).values == ["v=DMARC1; p=reject"]
    listed = {(rec.name, rec.type, rec.value) for rec in p.list()}
    assert ("live.labmail.cloud.", "MX", "10 mailcow.labmail.cloud.") in listed
    p.delete("_dmarc")
    assert ldns.lookup("_dmarc.live.labmail.cloud", "TXT", world=world).outcome.value == "NXDOMAIN"
    zone = dns.zone.from_text(p.export(), relativize=False)
    assert zone.get_rdataset("live.labmail.cloud.", "MX") is not None
    wrong = ldns.ZonePanel(world=world, key=dns.tsig.Key("live.labmail.cloud.", b"\x00" * 32, "hmac-sha256"))
    with pytest.raises(UpdateRefused, match="TSIG"):
        wrong.add("@", "TXT", "forged")
    parent = ldns.ZonePanel("labmail.cloud", world=world, key=key)
    with pytest.raises(UpdateRefused, match="REFUSED"):
        parent.add("evil", "A", "192.0.2.1")


def test_provision_live_sets_up_a_class_on_a_real_bind(tmp_path):
    """labmail provision-live writes what BIND needs for a class: named-checkconf accepts it, a real named serves it,
    each student's key changes their zone and not another's, transfers need the key, a re-run keeps the keys and
    adds the new student, a dry run writes nothing."""
    from labmail import cli
    from labmail.liveclass import provision_live

    named = shutil.which("named") or "/usr/sbin/named"
    roster = tmp_path / "classe.csv"
    roster.write_text("prenom,nom,email\nJean-Émile,Dupont,je@ecole.test\nMilou,Chien,m@ecole.test\n", encoding="utf-8")
    out = tmp_path / "classe-live"
    dry = provision_live(roster, out, dry_run=True)
    assert dry.new == ["jean-emile", "milou"] and not out.exists()  # nothing written
    assert cli.main(["provision-live", str(tmp_path / "absente.csv"), "--dossier", str(out)]) == 2  # a clear error
    assert cli.main(["provision-live", str(roster), "--dossier", "/proc/labmail-interdit"]) == 2
    assert cli.main(["provision-live", str(roster), "--dossier", str(out)]) == 0
    student = out / "etudiants" / "jean-emile"
    assert (student / "tsig.key").stat().st_mode & 0o777 == 0o600
    assert (out / "bind" / "keys" / "milou.key").stat().st_mode & 0o077 == 0
    assert 'tsig_secret_file' in (student / "config.toml").read_text() and (out / "CHECKLIST.md").exists()
    assert "jean-emile.labmail.cloud. 3600 IN NS ns1.labmail.cloud." in (out / "bind" / "delegations.txt").read_text()
    port = _free_port()
    work = tmp_path / "named"
    work.mkdir()
    (work / "named.conf").write_text(_named_options(work, port) + f'include "{out / "bind" / "named.conf.labmail"}";\n')
    check = run(["named-checkconf", str(work / "named.conf")])
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(work / "named.log", "w")
    proc = subprocess.Popen([named, "-g", "-c", str(work / "named.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if dns.query.tcp(dns.message.make_query("milou.labmail.cloud", "SOA"), "127.0.0.1", port=port,
                                 timeout=0.3).answer:  # over TCP, as the updates below: named listens on both
                    break
            except Exception:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (work / "named.log").read_text()[-2000:]
            time.sleep(0.1)
        secret = (student / "tsig.key").read_text().strip()
        key = dns.tsig.Key("jean-emile.labmail.cloud.", base64.b64decode(secret), "hmac-sha256")

        def update(zone: str):
            message = dns.update.UpdateMessage(zone, keyring={key.name: key}, keyname=key.name, keyalgorithm=key.algorithm)
            message.add("_dmarc", 300, "TXT", '"v=DMARC1; p=none"')
            return dns.query.tcp(message, "127.0.0.1", port=port, timeout=5).rcode()

        assert update("jean-emile.labmail.cloud") == dns.rcode.NOERROR  # their zone
        assert update("milou.labmail.cloud") == dns.rcode.REFUSED  # another student's
        answer = dns.query.udp(dns.message.make_query("_dmarc.jean-emile.labmail.cloud", "TXT"), "127.0.0.1", port=port)
        assert b"v=DMARC1; p=none" in answer.answer[0][0].strings[0]
        axfr = dns.message.make_query("jean-emile.labmail.cloud", "AXFR")
        assert dns.query.tcp(axfr, "127.0.0.1", port=port, timeout=5).rcode() == dns.rcode.REFUSED  # no key
        axfr.use_tsig(keyring={key.name: key}, keyname=key.name)
        assert dns.query.tcp(axfr, "127.0.0.1", port=port, timeout=5).answer  # with the key
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
    zone_before = (out / "bind" / "zones" / "jean-emile.labmail.cloud.zone").read_text()
    roster.write_text(roster.read_text(encoding="utf-8") + "Tintin,Reporter,t@ecole.test\n", encoding="utf-8")
    again = provision_live(roster, out)
    assert again.kept == ["jean-emile", "milou"] and again.new == ["tintin"]
    assert (student / "tsig.key").read_text().strip() == secret  # same key: nothing broken for the others
    assert (out / "bind" / "zones" / "jean-emile.labmail.cloud.zone").read_text() == zone_before  # never overwritten
