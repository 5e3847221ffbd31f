"""The mail-side peers of the benchmark table: Debian's Postfix and Dovecot, started privately on loopback ports.

Measured the way mail_bench.py measures the lab: (1) start until SMTP and IMAP both greet; (2) a message submitted
over SMTP until an IMAP session sees it (median of 30). The peer's path is lighter than the lab's: plain SMTP from
mynetworks (no STARTTLS, no AUTH, no DKIM signing, no SPF/DKIM/DMARC checks at a receiving provider) and plain IMAP
— the ratio flatters the peer. Needs root (Postfix's master) and the Debian packages postfix and dovecot-imapd;
without them it says so and records nothing.

Run: ``.venv/bin/python bench/mail_peers.py``.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


POSTFIX, DOVECOT = "/usr/sbin/postfix", "/usr/sbin/dovecot"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def available() -> str | None:
    """None if the peers can run here, else why not."""
    if not (os.access(POSTFIX, os.X_OK) and os.access(DOVECOT, os.X_OK)):
        return "Postfix + Dovecot: not installed"
    if os.geteuid() != 0:
        return "Postfix + Dovecot: need root"
    return None


def configure(work: Path, smtp_port: int, imap_port: int) -> None:
    conf = work / "postfix"
    conf.mkdir()
    for sub in ("spool", "data", "vmail"):
        (work / sub).mkdir()
    shutil.chown(work / "data", "postfix", "postfix")
    (work / "vmail").chmod(0o777)
    (work / "vmailbox").write_text("milou@peer.test peer.test/milou/\n")
    (conf / "main.cf").write_text(f"""compatibility_level = 3.6
queue_directory = {work}/spool
data_directory = {work}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.peer.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = peer.test
virtual_mailbox_base = {work}/vmail
virtual_mailbox_maps = texthash:{work}/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_minimum_uid = 100
smtpd_banner = $myhostname ESMTP
""")
    master = Path("/etc/postfix/master.cf").read_text()
    master = master.replace("smtp      inet  n       -       y       -       -       smtpd",
                            f"127.0.0.1:{smtp_port}      inet  n       -       n       -       -       smtpd")
    master += "postlog   unix-dgram n  -       n       -       1       postlogd\n" if "postlogd" not in master else ""
    (conf / "master.cf").write_text(master.replace("       y       ", "       n       "))
    (work / "users").write_text("milou@peer.test:{PLAIN}mot-de-passe-du-banc\n")
    (work / "dovecot.conf").write_text(f"""base_dir = {work}/dovecot-run
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
log_path = {work}/dovecot.log
mail_location = maildir:{work}/vmail/%d/%n
first_valid_uid = 100
service imap-login {{
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
passdb {{
  driver = passwd-file
  args = {work}/users
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={work}/vmail/%d/%n
}}
""")


def _greets(port: int, prefix: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            return sock.recv(100).startswith(prefix)
    except OSError:
        return False


def start(work: Path, smtp_port: int, imap_port: int) -> float:
    started = time.perf_counter()
    subprocess.run([POSTFIX, "-c", str(work / "postfix"), "start"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # daemons keep inherited pipes open: never capture
    subprocess.run([DOVECOT, "-c", str(work / "dovecot.conf")], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (_greets(smtp_port, b"220") and _greets(imap_port, b"* OK")):
        if time.monotonic() > deadline:
            raise RuntimeError("Postfix/Dovecot did not start (see " + str(work / "dovecot.log") + ")")
        time.sleep(0.01)
    return time.perf_counter() - started


def stop(work: Path) -> None:
    subprocess.run([POSTFIX, "-c", str(work / "postfix"), "stop"], capture_output=True)
    subprocess.run([DOVECOT, "-c", str(work / "dovecot.conf"), "stop"], capture_output=True)


def latency(smtp_port: int, imap_port: int, count: int = 30) -> list[float]:
    imap = imaplib.IMAP4("127.0.0.1", imap_port)
    imap.login("milou@peer.test", "mot-de-passe-du-banc")
    out = []
    try:
        for i in range(count):
            subject = f"peer-{i}-{time.time_ns()}"
            started = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
                smtp.sendmail("tintin@peer.test", ["milou@peer.test"],
                              f"Subject: {subject}\r\nFrom: tintin@peer.test\r\nTo: milou@peer.test\r\n\r\nBonjour\r\n")
            deadline = time.monotonic() + 15
            while True:
                imap.select("INBOX", readonly=True)
                _typ, data = imap.search(None, "SUBJECT", f'"{subject}"')
                if data and data[0]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("message not delivered by Postfix")
                time.sleep(0.001)
            out.append(time.perf_counter() - started)
    finally:
        imap.logout()
    return out


def measure() -> tuple[str, float, float] | None:
    """(name, median start seconds over 3 runs, median SMTP → IMAP milliseconds over 30) — None if not available."""
    if available():
        return None
    starts, latencies = [], []
    for run in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            work.chmod(0o755)
            smtp_port, imap_port = _free_port(), _free_port()
            configure(work, smtp_port, imap_port)
            try:
                starts.append(start(work, smtp_port, imap_port))
                if run == 0:
                    latencies = latency(smtp_port, imap_port)
            finally:
                stop(work)
                time.sleep(0.5)
    name = f"Postfix {_version('postfix')} + Dovecot {_version('dovecot')}"
    return name, statistics.median(starts), statistics.median(latencies) * 1000


def main() -> int:
    result = measure()
    if result is None:
        print(available())
        return 0
    name, start_s, latency_ms = result
    print(f"{name}: start → SMTP and IMAP greet   median {start_s:.2f} s (3 runs); SMTP → visible over IMAP   "
          f"median {latency_ms:.0f} ms (30 messages)")
    return 0


def _version(name: str) -> str:
    try:
        if name == "postfix":
            return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True).stdout.strip()
        return subprocess.run([DOVECOT, "--version"], capture_output=True, text=True).stdout.split()[0]
    except (OSError, IndexError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
