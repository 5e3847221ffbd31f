"""Faults: the lab killed mid-traffic loses nothing and duplicates nothing; a client that vanishes mid-DATA and a
full disk leave no partial message; DNS faults give RFC results quickly, never a hang."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from labs import private_lab, use_lab

from labmail import lab, mail
from labmail.dns import ZonePanel
from labmail.lab.mailstore import MailStore
from labmail.world import current

DOMAIN = "jean-emile.labmail.cloud"
TINTIN, MILOU, GMAIL = f"tintin@{DOMAIN}", f"milou@{DOMAIN}", "jean-emile@gmail.test"
HOST = "mailcow.labmail.cloud"


@pytest.fixture(scope="module")
def fault_lab(tmp_path_factory, world_template):
    with private_lab(tmp_path_factory, world_template, "faultlab", addresses=(TINTIN, MILOU)) as running:
        yield running


@pytest.fixture
def env(fault_lab, monkeypatch):
    use_lab(monkeypatch, fault_lab[0])
    return fault_lab


def subjects(store: MailStore, address: str, folders=("INBOX", "Junk")) -> list[str]:
    return [str(message_from_bytes(data)["Subject"]) for f in folders for _k, data in store.messages(address, f)]


def test_sigkill_during_traffic_loses_and_duplicates_nothing(env):
    cfg, passwords = env
    store = MailStore(cfg.state_dir / "mail")
    accepted: list[str] = []
    published: list[str] = []
    stop = threading.Event()

    def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            subject = f"kill-{n}-{i}"
            i += 1
            try:
                result = mail.submit(TINTIN, [MILOU, GMAIL], subject, "x", password=passwords[TINTIN], timeout=5)
            except Exception:  # noqa: BLE001 - the lab is being killed: any error means "no 250"
                continue
            if result.accepted:
                accepted.append(subject)

    def updater() -> None:
        panel = ZonePanel()
        i = 0
        while not stop.is_set():
            value = f"kill-{i}"
            i += 1
            try:
                panel.add("kill", "TXT", value)
            except Exception:  # noqa: BLE001
                continue
            published.append(value)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)] + [threading.Thread(target=updater)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    pid = lab.status(cfg).pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(accepted) >= 5 and len(published) >= 5, (len(accepted), len(published))
    print(f"accepted before the kill: {len(accepted)} messages, {len(published)} DNS updates")

    lab.start(cfg)  # the restart finds the queue, the zones and the mailboxes as the kill left them
    deadline = time.monotonic() + 60
    while any((cfg.state_dir / "queue").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any((cfg.state_dir / "queue").glob("*.json")), "the queue did not drain after the restart"
    assert not any((cfg.state_dir / "queue").glob("*.eml")), "a queued message without its envelope"

    local, remote = subjects(store, MILOU, ("INBOX",)), subjects(store, GMAIL)
    for subject in accepted:  # every 250 delivered, exactly once, at both recipients
        assert local.count(subject) == 1, (subject, local.count(subject))
        assert remote.count(subject) == 1, (subject, remote.count(subject))
    assert len(set(local)) == len(local) and len(set(remote)) == len(remote)  # nothing twice, 250 or not

    zone = {r.value for r in ZonePanel().list() if r.name.startswith("kill.")}
    assert set(published) <= zone, "an acknowledged DNS update was lost"
    json.loads((cfg.state_dir / "mail" / "accounts.json").read_text())  # the state folder is readable
    ZonePanel().delete("kill", "TXT")


def test_a_client_that_vanishes_mid_data_leaves_no_message(env):
    cfg, _pw = env
    store = MailStore(cfg.state_dir / "mail")
    before = store.counts(MILOU)
    host, port = current().connect_address(HOST, 25)
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.recv(1024)
        for line in (b"EHLO mx.example\r\n", b"MAIL FROM:<a@example.org>\r\n", f"RCPT TO:<{MILOU}>\r\n".encode(),
                     b"DATA\r\n"):
            sock.sendall(line)
            sock.recv(1024)
        sock.sendall(b"Subject: coupe\r\n\r\nla moitie d'un message")  # then the client disappears
    time.sleep(1.0)
    assert store.counts(MILOU) == before
    assert "coupe" not in subjects(store, MILOU)


def _mount_full_tmpfs(path: Path, options: str = "size=64m,nr_inodes=3") -> None:
    """A tmpfs on ``path`` that cannot take one more file: by default with room (more than the lab's free-space
    guard asks) but no inode left — the write itself fails, as when a disk fills between MAIL and DATA."""
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the disk-full test (mount a tmpfs as root): {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip()}): run as root")
    with open(path / "filler", "wb") as handle:
        try:
            handle.write(b"\0" * 200_000)
        except OSError:
            pass


def test_a_disk_almost_full_refuses_new_mail_before_any_of_it_is_written(env):
    """Postfix's free-space guard: below 1.5 times the largest message (25 MiB) free where mail is written, MAIL FROM
    gets 452 4.3.1 — the client keeps its message and retries; nothing is half-written. Room found is believed for
    a second (SPACE_RECHECK: the guard runs on the loop at every MAIL FROM), so the disk fills, then a second goes."""
    from labmail.lab.smtp import SPACE_RECHECK

    cfg, passwords = env
    queue = cfg.state_dir / "queue"
    _mount_full_tmpfs(queue, "size=20m")
    time.sleep(SPACE_RECHECK)
    try:
        result = mail.submit(TINTIN, GMAIL, "presque plein", "x", password=passwords[TINTIN])
        assert not result.accepted and result.reply.startswith("452 4.3.1"), result.reply
        assert sorted(p.name for p in queue.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", str(queue)], check=True)
    assert mail.submit(TINTIN, GMAIL, "de la place", "x", password=passwords[TINTIN]).accepted
    log = lab.status(cfg).log_path.read_text(encoding="utf-8", errors="replace")
    assert "mail refused (452 4.3.1)" in log


def test_a_full_disk_gives_a_temporary_failure_and_no_partial_message(env):
    cfg, passwords = env
    queue = cfg.state_dir / "queue"
    _mount_full_tmpfs(queue)
    try:
        result = mail.submit(TINTIN, GMAIL, "disque plein", "x", password=passwords[TINTIN])
        assert not result.accepted and result.reply.startswith("451 4.3.0"), result.reply
        assert sorted(p.name for p in queue.iterdir()) == ["filler"], "a partial message was left in the queue"
    finally:
        subprocess.run(["umount", str(queue)], check=True)
    store = MailStore(cfg.state_dir / "mail")
    result = mail.submit(TINTIN, GMAIL, "disque libre", "x", password=passwords[TINTIN])
    assert result.accepted  # the client's retry, once there is room, goes through
    deadline = time.monotonic() + 15
    while "disque libre" not in subjects(store, GMAIL) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert subjects(store, GMAIL).count("disque libre") == 1 and "disque plein" not in subjects(store, GMAIL)
    log = lab.status(cfg).log_path.read_text(encoding="utf-8", errors="replace")
    assert "could not store message" in log and "No space left on device" in log


# -- DNS faults: bounded waits, RFC results ------------------------------------------------------------------------------
def test_an_unreachable_dns_gives_temperror_quickly_not_a_hang():
    from labmail import spf
    from labmail.dns import Resolver

    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    blackhole.bind(("127.0.0.1", 0))
    try:
        resolver = Resolver([blackhole.getsockname()], timeout=1.0)
        started = time.monotonic()
        result = spf.evaluate("192.0.2.1", "a@example.org", "mx.example.org", resolver=resolver)
        elapsed = time.monotonic() - started
    finally:
        blackhole.close()
    assert result.result.value == "temperror" and elapsed < 10, (result.result, elapsed)
    assert "DNS" in str(result.reason)


def test_a_crash_between_the_two_queue_writes_leaves_nothing_behind(tmp_path, world_template):
    """Killed after the body and before the envelope (no 250 was sent): the restart removes the orphan."""
    from labs import private_lab

    class _Factory:
        def mktemp(self, name):
            path = tmp_path / name
            path.mkdir()
            return path

    state = None
    with private_lab(_Factory(), world_template, "orphan") as (cfg, _pw):
        state = cfg.state_dir
    (state / "queue" / "ABC123.eml").write_bytes(b"Subject: jamais acquitte\r\n\r\nx\r\n")
    (state / "queue" / ".DEF456.json.x1y2.tmp").write_text("{")
    (state / "queue" / "KEEP01.eml").write_bytes(b"Subject: acquitte\r\n\r\nx\r\n")
    (state / "queue" / "KEEP01.json").write_text('{"mail_from": "", "rcpts": [], "attempts": 9, "next": 1e12, '
                                                 '"created": 0, "errors": []}')
    lab.start(cfg)
    try:
        names = sorted(p.name for p in (state / "queue").iterdir())
    finally:
        lab.stop(cfg)
    assert names == ["KEEP01.eml", "KEEP01.json"]
    assert "left by a crash removed" in lab.status(cfg).log_path.read_text()
