"""The real-client matrix: mail clients of the field against the lab, TLS verified with the lab's CA.

Besides swaks, curl, dig, nsupdate (test_security, test_real_tools) and Python's imaplib/poplib/smtplib:

* ``mbsync`` (isync) syncs a mailbox over IMAP with TLS (993), pulls it, and a deletion made in the local copy
  is expunged on the server (what "IMAP keeps every client in sync" means, step 6);
* ``msmtp`` submits over 587 with STARTTLS and AUTH, as a desktop client does; without TLS it sends no password;
* Thunderbird (Debian's package), the course's client, in a network namespace where only loopback exists:
  ``scripts/real_thunderbird.py`` (see its docstring) — its own discovery, login, INBOX, sending, restart.

Each tool is installed by ``make test`` (scripts/system-deps.sh).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labmail import lab, mail

pytestmark = pytest.mark.tools

ROOT = Path(__file__).resolve().parents[1]
HOST = "mailcow.labmail.cloud"


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"missing {', '.join(missing)}: run 'make test' as root to install them")


def _mailbox(cfg, prefix: str) -> tuple[str, str]:
    address = f"{prefix}-{secrets.token_hex(3)}@{cfg.domain}"
    password = secrets.token_urlsafe(12)
    lab.add_mailbox(address, password, config=cfg)
    return address, password


def _subjects(address: str, password: str) -> list[str]:
    return [m.subject for m in mail.imap(address, password=password)]


def _wait_subjects(address: str, password: str, wanted: set[str], timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        subjects = _subjects(address, password)
        if wanted <= set(subjects) or time.monotonic() > deadline:
            return subjects
        time.sleep(0.2)


def _port(status, port: int) -> int:
    return status.endpoints[f"203.0.113.10:{port}"]


def _other_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the lab's certificates (what an attacker in the middle would present)."""
    key, cert = tmp_path / "other.key", tmp_path / "other.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=Autre autorite"],
                   check=True, capture_output=True, timeout=30)
    return cert


def _mbsyncrc(path: Path, status, address: str, password_file: Path, ca: Path, maildir: Path, *, sync: str) -> Path:
    path.write_text(f"""IMAPAccount lab
Host localhost
Port {_port(status, 993)}
User {address}
PassCmd "cat {password_file}"
SSLType IMAPS
SystemCertificates no
CertificateFile {ca}

IMAPStore lab-remote
Account lab

MaildirStore lab-local
Path {maildir}/
Inbox {maildir}/INBOX

Channel lab
Far :lab-remote:
Near :lab-local:
Patterns INBOX
Create Near
Sync {sync}
Expunge Both
SyncState *
""", encoding="utf-8")
    return path


def test_mbsync_syncs_a_mailbox_over_imap_tls_and_a_local_deletion_reaches_the_server(lab_env, tmp_path):
    _need("mbsync")
    cfg, status = lab_env
    address, password = _mailbox(cfg, "mbsync")
    for subject in ("premier", "second"):
        assert mail.submit(address, address, subject, "bonjour", password=password).accepted
    assert {"premier", "second"} <= set(_wait_subjects(address, password, {"premier", "second"}))
    secret = tmp_path / "password"
    secret.write_text(password)
    secret.chmod(0o600)
    maildir = tmp_path / "Mail"
    maildir.mkdir()
    ca = cfg.state_dir / "tls" / "ca.pem"

    refused = subprocess.run(["mbsync", "-c", str(_mbsyncrc(tmp_path / "bad", status, address, secret,
                                                           _other_ca(tmp_path), tmp_path, sync="Pull")), "lab"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "certificate" in (refused.stdout + refused.stderr).lower()

    rc = _mbsyncrc(tmp_path / "mbsyncrc", status, address, secret, ca, maildir, sync="All")
    pulled = subprocess.run(["mbsync", "-c", str(rc), "lab"], capture_output=True, text=True, timeout=60)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    files = [p for p in (maildir / "INBOX").glob("*/*") if p.is_file()]
    assert sorted(b"premier" in p.read_bytes() for p in files) == [False, True] and len(files) == 2
    next(p for p in files if b"Subject: premier" in p.read_bytes()).unlink()  # deleted in the local client
    pushed = subprocess.run(["mbsync", "-c", str(rc), "lab"], capture_output=True, text=True, timeout=60)
    assert pushed.returncode == 0, pushed.stdout + pushed.stderr
    assert _subjects(address, password) == ["second"]  # expunged on the server too
    assert password not in (pulled.stdout + pulled.stderr + pushed.stdout + pushed.stderr)


def test_msmtp_submits_over_587_with_starttls_and_never_sends_a_password_in_clear(lab_env, tmp_path):
    _need("msmtp")
    cfg, status = lab_env
    sender, password = _mailbox(cfg, "msmtp")
    rcpt, rcpt_password = _mailbox(cfg, "lecteur")
    secret = tmp_path / "password"
    secret.write_text(password)
    secret.chmod(0o600)

    def msmtprc(name: str, tls: str) -> Path:
        path = tmp_path / name
        path.write_text(f"""account lab
host 127.0.0.1
port {_port(status, 587)}
tls {tls}
tls_starttls on
tls_trust_file {cfg.state_dir / "tls" / "ca.pem"}
tls_host_override {HOST}
auth on
user {sender}
passwordeval "cat {secret}"
from {sender}
""", encoding="utf-8")
        path.chmod(0o600)
        return path

    message = f"From: Tintin <{sender}>\nTo: {rcpt}\nSubject: Par msmtp\n\nBonjour !\n"
    clear = subprocess.run(["msmtp", "-C", str(msmtprc("clear", "off")), "-a", "lab", "-d", rcpt], input=message,
                           capture_output=True, text=True, timeout=60)
    assert clear.returncode != 0 and "AUTH" not in "".join(l for l in clear.stdout.splitlines() if l.startswith("-->"))
    sent = subprocess.run(["msmtp", "-C", str(msmtprc("msmtprc", "on")), "-a", "lab", "-d", rcpt], input=message,
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "<-- 250 2.0.0 Ok: queued as" in sent.stdout and "STARTTLS" in sent.stdout
    assert password not in sent.stdout + sent.stderr
    assert "Par msmtp" in _wait_subjects(rcpt, rcpt_password, {"Par msmtp"})
    received = next(m for m in mail.imap(rcpt, password=rcpt_password, fetch=True) if m.subject == "Par msmtp").data
    assert b"DKIM-Signature:" in received and b"with ESMTPSA" in received  # signed by the school, authenticated


# -- Thunderbird -----------------------------------------------------------------------------------------------------
def test_the_lab_profile_maps_the_course_ports_and_names_and_trusts_the_ca_for_servers(lab_env, tmp_path):
    from labmail import thunderbird
    from labmail.errors import LabError

    cfg, status = lab_env
    values = thunderbird.prefs(cfg)
    remap = dict(pair.split("=") for pair in values["network.socket.forcePort"].split(";"))
    assert remap == {str(p): str(_port(status, p)) for p in (443, 993, 143, 995, 110, 465, 587)}
    names = values["network.dns.localDomains"].split(",")
    assert {HOST, "autoconfig.jean-emile.labmail.cloud", "autodiscover.jean-emile.labmail.cloud"} <= set(names)
    assert values["mailnews.auto_config_url"] == ""  # nothing asked of Mozilla's servers
    made = thunderbird.make_profile(tmp_path / "profil", config=cfg)
    # an older CA under the same name (a lab rebuilt since): replaced by the lab's current one
    subprocess.run(["certutil", "-D", "-n", thunderbird.CA_NICKNAME, "-d", f"sql:{made.path}"], check=True, timeout=30)
    subprocess.run(["certutil", "-A", "-n", thunderbird.CA_NICKNAME, "-t", "C,,", "-i", str(_other_ca(tmp_path)),
                    "-d", f"sql:{made.path}"], check=True, timeout=30)
    again = thunderbird.make_profile(tmp_path / "profil", config=cfg)  # idempotent: run it again after a change
    assert made.path == again.path and again.ca_trusted
    user_js = (made.path / "user.js").read_text()
    assert f'user_pref("network.socket.forcePort", "{values["network.socket.forcePort"]}");' in user_js
    listed = subprocess.run(["certutil", "-L", "-d", f"sql:{made.path}"], capture_output=True, text=True, timeout=30)
    assert "Autorité du lab labmail" in listed.stdout and "C,," in listed.stdout  # servers only, not S/MIME
    pem = subprocess.run(["certutil", "-L", "-n", thunderbird.CA_NICKNAME, "-a", "-d", f"sql:{made.path}"],
                         capture_output=True, text=True, timeout=30).stdout
    assert pem.count("BEGIN CERTIFICATE") == 1, pem  # one CA under that name: the old one is gone
    lab_ca = (cfg.state_dir / "tls" / "ca.pem").read_text()
    assert "".join(pem.split()) in "".join(lab_ca.split())  # the lab's CA, as it is now
    # a folder holding another Thunderbird profile (the student's own) is left alone; bad paths are explained
    own = tmp_path / "mon-profil"
    own.mkdir()
    (own / "prefs.js").write_text('user_pref("mail.account.account1.server", "server1");\n')
    with pytest.raises(LabError, match="n'est pas celui du lab"):
        thunderbird.make_profile(own, config=cfg)
    assert sorted(p.name for p in own.iterdir()) == ["prefs.js"]
    (tmp_path / "fichier").write_text("x")
    for bad, message in (("", "vide"), (str(tmp_path / "fichier" / "sous"), "Impossible d'écrire")):
        with pytest.raises(LabError, match=message):
            thunderbird.make_profile(bad, config=cfg)
    (tmp_path / "fichier").write_text("x")
    with pytest.raises(LabError, match="n'est pas un dossier"):
        thunderbird.make_profile(tmp_path / "fichier", config=cfg)
    assert values["mailnews.auto_config.fetchFromISP.sslOnly"] is True  # the address never sent in clear
    assert values["mailnews.auto_config.guess.enabled"] is False
    cli = subprocess.run([sys.executable, "-m", "labmail.cli", "thunderbird", "--profil", str(tmp_path / "cli")],
                         capture_output=True, text=True, timeout=60, env={**os.environ})
    assert cli.returncode == 0 and f"--profile {tmp_path / 'cli'} --no-remote" in cli.stdout, cli.stdout + cli.stderr



@pytest.fixture(scope="module")
def thunderbird_run(tmp_path_factory):
    """One run of scripts/real_thunderbird.py in a network namespace with only loopback (results.json, screenshot)."""
    _need("thunderbird", "xvfb-run", "certutil", "unshare")
    out = tmp_path_factory.mktemp("thunderbird")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "real_thunderbird.py"), str(out)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "unshare" in done.stderr and not os.environ.get("CI"):
        pytest.skip(f"no network namespace for this user: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    log = results["log_text"].encode("utf-8")
    marks = results["marks"]
    results["log_untrusted"] = log[marks["untrusted"]:marks["before"]].decode("utf-8", "replace")
    results["log_before"] = log[marks["before"]:marks["first"]].decode("utf-8", "replace")
    results["log_first"] = log[marks["first"]:marks["second"]].decode("utf-8", "replace")
    results["log_second"] = log[marks["second"]:].decode("utf-8", "replace")
    results["out"] = out
    return results


def test_thunderbird_without_the_lab_ca_refuses_the_server(thunderbird_run):
    """TLS is really verified: without the lab's CA, Thunderbird's discovery finds nothing over HTTPS, and the
    course's values (IMAP 993 SSL/TLS) end on its "Add Security Exception" dialog, cancelled: no login."""
    untrusted = thunderbird_run["untrusted"]
    assert untrusted["found"] == {"error": "no configuration found"}
    assert untrusted["certDialogs"] == [f"{HOST}:993"] and untrusted["verified"] != "ok" and untrusted["key"] is None
    assert "Login: user=" not in thunderbird_run["log_untrusted"] and "autoconfig:" not in thunderbird_run["log_untrusted"]


def test_thunderbird_before_step_13_finds_nothing_and_the_course_values_typed_by_hand_log_in(thunderbird_run):
    """The profile maps names, not the DNS: the lab answers autoconfig.<domain> and autodiscover.<domain> only once
    the zone leads them to the school server, so the real Thunderbird sees the "before" of step 13."""
    before = thunderbird_run["before"]
    assert before["found"] == {"error": "no configuration found"} and before["certDialogs"] == []
    assert before["verified"] == "ok"  # IMAP 993 SSL/TLS at mailcow.labmail.cloud, as step 6 types it
    log = thunderbird_run["log_before"]
    assert "autoconfig: GET" not in log and "autodiscover: POST" not in log  # the names led nowhere
    assert "https: autoconfig.jean-emile.labmail.cloud is not in the DNS" in thunderbird_run["log_untrusted"] + log
    assert "imap-login: Login: user=<tintin@jean-emile.labmail.cloud>, method=PLAIN" in log


def test_thunderbird_finds_the_lab_by_its_own_autoconfig_and_logs_in_over_imap_tls(thunderbird_run):
    setup = thunderbird_run["setup"]
    found = setup["found"]
    assert found["subSource"] == "xml-from-isp-https"  # https://autoconfig.<domain>/mail/config-v1.1.xml, first choice
    assert found["incoming"] == {"type": "imap", "hostname": HOST, "port": 993, "socketType": 3,  # 3: SSL/TLS
                                 "username": "tintin@jean-emile.labmail.cloud"}
    assert {k: found["outgoing"][k] for k in ("hostname", "port", "socketType")} == {"hostname": HOST, "port": 465,
                                                                                       "socketType": 3}
    assert setup["verified"] == "ok" and setup["certDialogs"] == []
    log = thunderbird_run["log_first"]
    assert ("autoconfig: GET https://autoconfig.jean-emile.labmail.cloud/mail/config-v1.1.xml "
            "(emailaddress=tintin@jean-emile.labmail.cloud)") in log
    # Exchange Autodiscover runs alongside (its answer unused: autoconfig has the priority) — as
    # labmail.autodiscover.thunderbird replays it, same URLs
    assert "autodiscover: POST https://autodiscover.jean-emile.labmail.cloud/autodiscover/autodiscover.xml" in log
    imap_port = thunderbird_run["ports"]["203.0.113.10:993"]
    assert f"imap-login: Login: user=<tintin@jean-emile.labmail.cloud>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, " \
           f"lport={imap_port}, TLS" in log
    assert [m for m in thunderbird_run["inbox"] if m["subject"] == "Réunion de service"] == [
        {"subject": "Réunion de service", "author": "Milou <milou@jean-emile.labmail.cloud>"}]


def test_thunderbird_sends_over_465_and_milou_receives(thunderbird_run):
    assert thunderbird_run["send"] == "ok" and thunderbird_run["milou_received"] is True
    assert "smtps/smtpd: client=127.0.0.1, sasl_method=PLAIN, sasl_username=tintin@jean-emile.labmail.cloud, TLS" \
        in thunderbird_run["log_first"]


def test_thunderbird_restarted_logs_in_by_itself_with_the_password_it_stored(thunderbird_run):
    """The profile alone (the account in prefs.js, the password in logins.json encrypted by NSS's SDR): at the next
    start Thunderbird logs in and fetches what arrived in between; the password is nowhere in clear."""
    assert "Compte rendu" in [m["subject"] for m in thunderbird_run["inbox_after_restart"]]
    assert "imap-login: Login: user=<tintin@jean-emile.labmail.cloud>" in thunderbird_run["log_second"]
    assert {e["hostname"] for e in thunderbird_run["logins"]} == {f"imap://{HOST}", f"smtp://{HOST}"}
    assert all(e["encrypted"] for e in thunderbird_run["logins"])  # an NSS SDR blob: DER, not the password
    assert thunderbird_run["password_in_clear_in_profile"] is False
    assert thunderbird_run["profile"]["ca_trusted"] is True


def test_thunderbird_shows_the_lab_message(thunderbird_run):
    """The window of the screenshot: tintin's inbox, Milou's message selected and displayed."""
    shown = thunderbird_run["shown"]
    assert shown["selected"] == "Réunion de service" and "tintin@jean-emile.labmail.cloud" in shown["title"]
    assert "Réunion demain à 10 h." in (shown["body"] or "")
    png = (thunderbird_run["out"] / "thunderbird.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width >= 800 and height >= 600 and len(png) > 20_000  # a drawn window, not a blank screen
