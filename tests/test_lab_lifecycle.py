"""The lab process: start, status, stop, reset, restart with state kept, crash safety, concurrency, CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import dns.zone
import pytest

from labmail import config, lab
from labmail.errors import LabError


@pytest.fixture
def own_lab(tmp_path, world_template, monkeypatch):
    """A private lab (its own process) started from a copy of the template world."""
    state = tmp_path / "state"
    shutil.copytree(world_template, state)
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(state))
    monkeypatch.setenv("LABMAIL_PRENOM", "jean-emile")
    cfg = config.load()
    yield cfg
    lab.stop(cfg)


def soa_serial(status, zone="jean-emile.labmail.cloud"):
    q = dns.message.make_query(zone, "SOA")
    r = dns.query.udp(q, status.host, port=status.dns_port, timeout=2)
    return r.answer[0][0].serial


def student_key(cfg, label="jean-emile"):
    entry = json.loads((cfg.state_dir / "keys" / "tsig.json").read_text())[f"{label}.labmail.cloud."]
    return dns.tsig.Key(entry["name"], base64.b64decode(entry["secret"]), entry["algorithm"])


def add_txt(status, key, name, value, zone="jean-emile.labmail.cloud"):
    u = dns.update.UpdateMessage(zone, keyring={key.name: key}, keyname=key.name)
    u.add(name, 300, "TXT", value)
    return dns.query.tcp(u, status.host, port=status.auth_port, timeout=5).rcode()


def test_start_status_stop(own_lab):
    assert not lab.status(own_lab).running
    status = lab.start(own_lab)
    assert status.running and status.dns_port and status.students == ("jean-emile", "milou")
    assert "jean-emile.labmail.cloud." in status.zones and "." in status.zones
    assert soa_serial(status) >= 1
    again = lab.start(own_lab)  # idempotent: the same process
    assert again.pid == status.pid
    assert "dig @127.0.0.1 -p" in str(status)
    assert len({status.dns_port, status.auth_port, status.registry_port}) == 3
    assert {"dns (résolveur / resolver)", "dns.labmail.cloud:53", "ns1.labmail.cloud:53",
            "mailcow.labmail.cloud:587 (submission, STARTTLS)", "gmail.test MX:25"} <= set(status.ports())
    assert status.ca_path is not None and status.ca_path.read_text().startswith("-----BEGIN CERTIFICATE-----")
    stopped = lab.stop(own_lab)
    assert not stopped.running
    assert not (own_lab.state_dir / "run.json").exists()
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("labmail.cloud", "SOA"), "127.0.0.1", port=status.dns_port, timeout=0.3)


def test_state_survives_restart_on_the_same_port(own_lab):
    status = lab.start(own_lab)
    assert add_txt(status, student_key(own_lab), "persist", "kept") == dns.rcode.NOERROR
    serial = soa_serial(status)
    lab.stop(own_lab)
    again = lab.start(own_lab)
    assert (again.dns_port, again.auth_port, again.registry_port) == (status.dns_port, status.auth_port,
                                                                      status.registry_port)  # dig commands keep working
    assert soa_serial(again) == serial
    r = dns.query.udp(dns.message.make_query("persist.jean-emile.labmail.cloud", "TXT"), again.host, port=again.dns_port)
    assert r.answer[0][0].strings == (b"kept",)


def test_a_lab_from_another_version_is_restarted(own_lab, monkeypatch):
    old = lab.start(own_lab)
    monkeypatch.setattr(lab, "PROTOCOL", lab.PROTOCOL + 1)  # this client is "newer" than the running lab
    seen = lab.status(own_lab)
    assert seen.running and not seen.compatible and "autre version" in str(seen)
    with pytest.raises(LabError, match="autre version"):
        lab.provision(own_lab)
    new = lab.start(own_lab)
    assert new.pid != old.pid


def test_reset_returns_to_the_course_start_and_keeps_ports_class_keys_and_ca(own_lab, tmp_path):
    """Reset undoes the course (records, mailboxes, mail) and keeps the rest: the ports (the README says the DNS port
    is chosen once), the class and its credentials, the keys, the lab CA — and no zone serial goes backwards."""
    from labmail import mail

    status = lab.start(own_lab)
    roster = tmp_path / "classe.csv"
    roster.write_text("prenom,nom,email\nZoë,Martin,\n", encoding="utf-8")
    credentials = lab.provision_class(roster, own_lab)
    kept = {path: path.read_bytes() for path in (credentials, own_lab.state_dir / "keys" / "tsig.json",
                                                  own_lab.state_dir / "keys" / "api-keys.json",
                                                  own_lab.state_dir / "keys" / "provider-passwords.json",
                                                  own_lab.state_dir / "tls" / "ca.pem")}
    key = student_key(own_lab)
    for i in range(3):
        assert add_txt(status, key, f"gone{i}", "soon") == dns.rcode.NOERROR
    before = soa_serial(status)
    lab.add_mailbox("tintin@jean-emile.labmail.cloud", "mot-de-passe-de-tintin", config=own_lab)
    gmail = "jean-emile@gmail.test"
    assert mail.submit("tintin@jean-emile.labmail.cloud", gmail, "avant le reset", "x",
                       password="mot-de-passe-de-tintin").accepted
    deadline = time.monotonic() + 10
    while not mail.imap(gmail, password=lab.provider_password(gmail), host="imap.gmail.test", folder="Junk") \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    endpoints = dict(status.endpoints)
    assert len(endpoints) > 10

    fresh = lab.reset(own_lab)

    assert fresh.running and set(fresh.students) >= {"jean-emile", "milou", "zoe"}  # the class is still there
    assert (fresh.dns_port, fresh.auth_port, fresh.registry_port) == (status.dns_port, status.auth_port, status.registry_port)
    assert dict(fresh.endpoints) == endpoints  # every mail service on the same local port
    assert all(path.read_bytes() == data for path, data in kept.items())
    r = dns.query.udp(dns.message.make_query("gone0.jean-emile.labmail.cloud", "TXT"), fresh.host, port=fresh.dns_port)
    assert r.rcode() == dns.rcode.NXDOMAIN
    assert soa_serial(fresh) > before  # never backwards
    assert add_txt(fresh, key, "again", "the same key works") == dns.rcode.NOERROR
    assert "tintin@jean-emile.labmail.cloud" not in json.loads((own_lab.state_dir / "mail" / "accounts.json").read_text())
    assert not (own_lab.state_dir / "course-passwords.json").exists()
    for folder in ("INBOX", "Junk"):  # the provider mailbox is empty, and its password unchanged
        assert mail.imap(gmail, password=lab.provider_password(gmail), host="imap.gmail.test", folder=folder) == []


def test_reset_refuses_a_folder_that_is_not_a_lab(tmp_path, monkeypatch):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(precious))
    with pytest.raises(LabError, match="world.json"):
        lab.reset()
    assert (precious / "thesis.txt").exists()


def test_ensure_provisions_a_new_student_in_a_running_lab(own_lab, monkeypatch):
    lab.start(own_lab)
    monkeypatch.setenv("LABMAIL_PRENOM", "Zoë")
    status = lab.ensure()
    assert "zoe" in status.students
    assert lab.student_key_file().name == "zoe.labmail.cloud.key"
    q = dns.message.make_query("zoe.labmail.cloud", "NS")
    r = dns.query.udp(q, status.host, port=status.dns_port)
    assert r.answer and r.rcode() == dns.rcode.NOERROR
    assert lab.ensure().pid == status.pid


def test_ensure_in_live_world_starts_nothing(monkeypatch):
    monkeypatch.setenv("LABMAIL_WORLD", "live")
    assert lab.ensure() is None
    with pytest.raises(LabError, match="live"):
        lab.start()


def test_only_one_lab_per_state_folder(own_lab):
    status = lab.start(own_lab)
    proc = subprocess.run([sys.executable, "-m", "labmail.lab", "serve", "--state", str(own_lab.state_dir)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 3
    assert lab.status(own_lab).pid == status.pid


def test_busy_configured_port_gives_a_clear_error(own_lab, monkeypatch):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        monkeypatch.setenv("LABMAIL_DNS_PORT", str(busy.getsockname()[1]))
        with pytest.raises(LabError, match="déjà pris"):
            lab.start(config.load())


def test_concurrent_updates_are_serialized(own_lab):
    status = lab.start(own_lab)
    key = student_key(own_lab)
    before = soa_serial(status)
    results = []

    def worker(i):
        for j in range(10):
            results.append(add_txt(status, key, f"c{i}-{j}", f"v{i}-{j}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [dns.rcode.NOERROR] * 80
    assert soa_serial(status) == before + 80
    zone = dns.zone.from_file(str(own_lab.state_dir / "zones" / "jean-emile.labmail.cloud.zone"),
                              origin="jean-emile.labmail.cloud.", relativize=False)
    assert sum(1 for name in zone.nodes if name.labels[0].startswith(b"c")) == 80


def test_sigkill_during_updates_loses_no_acknowledged_change(own_lab):
    """Kill -9 the lab in the middle of a burst of updates: every acknowledged change is on disk, no zone is torn."""
    status = lab.start(own_lab)
    key = student_key(own_lab)
    acked: list[str] = []
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            name = f"k{i}"
            try:
                if add_txt(status, key, name, "x" * 200) == dns.rcode.NOERROR:
                    acked.append(name)
            except Exception:
                return
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 10
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(status.pid, signal.SIGKILL)
    stop.set()
    thread.join(timeout=10)
    assert len(acked) >= 30
    for path in (own_lab.state_dir / "zones").glob("*.zone"):  # every zone file parses
        origin = "." if path.stem == "root" else path.stem + "."
        dns.zone.from_file(str(path), origin=origin, relativize=False)
    again = lab.start(own_lab)
    assert not list((own_lab.state_dir / "zones").glob(".*.tmp"))  # a write cut by the kill is cleaned at start
    for name in acked:
        r = dns.query.udp(dns.message.make_query(f"{name}.jean-emile.labmail.cloud", "TXT"), again.host,
                          port=again.dns_port, timeout=2)
        assert r.answer, f"acknowledged update {name} lost"


def test_cli_lab_commands(own_lab):
    env = dict(os.environ)
    run = lambda *args: subprocess.run([sys.executable, "-m", "labmail.cli", *args], capture_output=True, text=True,
                                       env=env, timeout=60)
    started = run("lab", "start")
    assert started.returncode == 0 and "Résolveur DNS du lab" in started.stdout and "nsupdate" in started.stdout
    status = run("--lang", "en", "lab", "status")
    assert status.returncode == 0 and "Lab DNS resolver" in status.stdout and "nsupdate -k" in status.stdout
    # the DKIM record as nsupdate takes it: strings of at most 255 bytes (one 400-byte string: BIND's "syntax error")
    dkim = next(line.strip() for line in status.stdout.splitlines() if "update add dkim._domainkey." in line)
    strings = re.findall(r'"([^"]*)"', dkim)
    assert len(strings) >= 2 and all(len(x) <= 255 for x in strings) and "".join(strings).startswith("v=DKIM1;")
    if shutil.which("nsupdate"):
        st = lab.status(own_lab)
        sent = subprocess.run(["nsupdate", "-k", str(lab.student_key_file(own_lab))], capture_output=True, text=True,
                              timeout=30, input=f"server {st.host} {st.auth_port}\nzone jean-emile.labmail.cloud\n"
                                                f"{dkim}\nsend\n")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        q = dns.message.make_query("dkim._domainkey.jean-emile.labmail.cloud", "TXT")
        txt = dns.query.udp(q, st.host, port=st.dns_port, timeout=2).answer[0][0]
        assert b"".join(txt.strings).decode() == "".join(strings)
    helped = run("lab", "start", "--help")
    assert helped.returncode == 0 and "démarrer le lab" in helped.stdout and "--class" in helped.stdout
    assert "usage: labmail lab start" in helped.stdout
    unnamed = subprocess.run(
        [sys.executable, "-m", "labmail.cli", "lab", "status"], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in env.items() if k != "LABMAIL_PRENOM"})
    assert "Aucun prénom configuré" in unnamed.stdout and "labmail config --prenom" in unnamed.stdout, unnamed.stdout
    looked = run("lookup", "jean-emile.labmail.cloud", "SOA", "--auth")
    assert looked.returncode == 0 and "answer" in looked.stdout
    stopped = run("lab", "stop")
    assert stopped.returncode == 0 and "arrêté" in stopped.stdout
    assert run("lab", "status").returncode == 1
    bad = run("config", "--prenom", "a..b")
    assert bad.returncode == 2 and "un seul mot" in bad.stderr and "Traceback" not in bad.stderr


def test_stop_right_after_relaying_is_a_clean_exit(tmp_path_factory, world_template, monkeypatch):
    """The relay keeps a session to the MX open for the next message (connection cache). Stopping the lab then must
    still be the lab's own clean exit (run file removed by the process), not the SIGTERM/SIGKILL fallback that a
    QUIT waiting for a reply from the stopping loop itself once forced."""
    from labs import private_lab, use_lab

    from labmail import mail
    from labmail.lab.mailstore import MailStore

    tintin = "tintin@jean-emile.labmail.cloud"
    with private_lab(tmp_path_factory, world_template, "stoplab", addresses=(tintin,)) as (cfg, passwords):
        use_lab(monkeypatch, cfg)
        store, address = MailStore(cfg.state_dir / "mail"), "jean-emile@gmail.test"
        before = store.counts(address)
        assert mail.submit(tintin, address, "avant l'arrêt", "x", password=passwords[tintin]).accepted
        assert store.wait_new(address, before) is not None
        from labmail.state import Layout

        run_file = Layout(cfg.state_dir).run_file
        assert run_file.exists()
        status = lab.stop(cfg, timeout=3.0)
        assert not status.running
        assert not run_file.exists(), "the lab did not exit by itself: it was killed"
