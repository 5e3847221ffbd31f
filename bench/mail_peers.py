"""The mail-side peer of the benchmark table: the school's mail server as a school really runs it, from Debian's
packages, as private instances on loopback (bench/peer_stack.py starts and stops them):

* submission on 587 — Postfix with STARTTLS required and SASL AUTH through Dovecot (BLF-CRYPT, auth cache on),
  DKIM signing by OpenDKIM (2048-bit RSA, relaxed/relaxed, authenticated mail only);
* relay over SMTP with STARTTLS to the provider's MX on 25 — a second Postfix whose rspamd milter checks SPF, DKIM
  and DMARC against a private BIND and writes Authentication-Results (rspamd is the filter Mailcow ships);
* delivery by Dovecot LMTP into a Maildir, read over IMAPS (993).

That is the work the lab does for a student's message to their Gmail-like mailbox (bench/mail_bench.py): TLS, AUTH,
signing, relay, SPF/DKIM/DMARC, delivery, IMAPS. The same client code measures both sides: a fresh SMTP session
(STARTTLS + AUTH) per message for the latency, one IMAPS session polling SELECT + SEARCH; 20 authenticated sessions
× 50 messages for the load, counted in the recipient's Maildir. Needs root and the Debian packages postfix,
dovecot-imapd, dovecot-lmtpd, opendkim, rspamd, bind9 (``scripts/system-deps.sh bench``); without them it says so.

Run: ``.venv/bin/python bench/mail_peers.py``.
"""

from __future__ import annotations

import imaplib
import os
import secrets
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

NEEDED = {"/usr/sbin/postfix": "postfix", "/usr/sbin/dovecot": "dovecot-imapd", "/usr/lib/dovecot/lmtp": "dovecot-lmtpd",
          "/usr/sbin/opendkim": "opendkim", "/usr/bin/rspamd": "rspamd", "/usr/sbin/named": "bind9"}


def available() -> str | None:
    """None if the peer can run here, else why not."""
    missing = [pkg for path, pkg in NEEDED.items() if not os.access(path, os.X_OK)]
    if missing:
        return f"school stack not installed ({', '.join(sorted(set(missing)))})"
    if os.geteuid() != 0:
        return "school stack: needs root"
    return None


def name() -> str:
    def version(cmd: list[str], pick) -> str:
        try:
            return pick(subprocess.run(cmd, capture_output=True, text=True).stdout)
        except (OSError, IndexError):
            return "?"

    postfix = version(["postconf", "-d", "-h", "mail_version"], str.strip)
    dovecot = version(["dovecot", "--version"], lambda out: out.split()[0])
    rspamd = version(["rspamd", "--version"], lambda out: out.split()[-1])
    return f"Postfix {postfix} + OpenDKIM + rspamd {rspamd} + Dovecot {dovecot}"


def pss_mib(pids) -> float:
    """Proportional set size of these processes, MiB (shared pages divided among their users)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total / 1024


def concurrently(function, count: int) -> None:
    """Run ``function(n)`` for n in range(count), each in a thread of its own, and wait for all (the load's clients)."""
    threads = [threading.Thread(target=function, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def latency(stack, conf: dict, count: int = 30) -> tuple[list[float], str]:
    """Submit (fresh STARTTLS + AUTH session each) → visible over IMAPS with its Authentication-Results."""
    ports, ctx = conf["ports"], stack.tls_context(conf)
    imap = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=ctx)
    imap.login(stack.RCPT, conf["users"][stack.RCPT])
    out, verdict = [], ""
    try:
        for i in range(count):
            subject = f"latence {i} {secrets.token_hex(4)}"
            started = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", ports["submission"], local_hostname="client.school.peer", timeout=10) as smtp:
                smtp.starttls(context=ctx)
                smtp.login(stack.SENDER, conf["users"][stack.SENDER])
                smtp.sendmail(stack.SENDER, [stack.RCPT], f"From: {stack.SENDER}\r\nTo: {stack.RCPT}\r\n"
                              f"Subject: {subject}\r\n\r\nBonjour\r\n")
            deadline = time.monotonic() + 15
            while True:
                imap.select("INBOX", readonly=True)
                _typ, data = imap.search(None, "SUBJECT", f'"{subject}"')
                if data and data[0]:
                    head = imap.fetch(data[0].split()[-1], "(BODY.PEEK[HEADER.FIELDS (AUTHENTICATION-RESULTS)])")[1][0][1]
                    verdict = verdict or head.decode(errors="replace")
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("message not delivered by the school stack within 15 s")
                time.sleep(0.002)
            out.append(time.perf_counter() - started)
    finally:
        imap.logout()
    return out, verdict


def load(stack, conf: dict, clients: int = 20, per_client: int = 50) -> tuple[float, int, int]:
    """``clients`` authenticated sessions × ``per_client`` messages; seconds until all are in the Maildir, how many
    arrived, how many distinct."""
    ports, ctx = conf["ports"], stack.tls_context(conf)
    maildir = Path(conf["work"]) / "mail" / stack.PROVIDER / stack.RCPT.split("@")[0] / "Maildir"
    run_id, errors = secrets.token_hex(3), []

    def files() -> int:
        return sum(len(os.listdir(maildir / part)) for part in ("new", "cur") if (maildir / part).is_dir())

    before = files()

    def client(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", ports["submission"], local_hostname="client.school.peer", timeout=60) as smtp:
                smtp.starttls(context=ctx)
                smtp.login(stack.SENDER, conf["users"][stack.SENDER])
                for i in range(per_client):
                    smtp.sendmail(stack.SENDER, [stack.RCPT], f"From: {stack.SENDER}\r\nTo: {stack.RCPT}\r\n"
                                  f"Subject: charge {run_id}-{n}-{i}\r\n\r\nx\r\n")
        except Exception as exc:  # reported below
            errors.append(f"{n}: {exc}")

    t0 = time.perf_counter()
    concurrently(client, clients)
    while files() - before < clients * per_client and time.perf_counter() - t0 < 300:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    subjects = []
    for part in ("new", "cur"):
        for entry in os.scandir(maildir / part):
            with open(entry.path, "rb") as fh:
                for line in fh.read(4096).decode(errors="replace").splitlines():
                    if line.startswith(f"Subject: charge {run_id}-"):
                        subjects.append(line)
    if errors:
        print("school stack errors:", errors[:5])
    return elapsed, len(subjects), len(set(subjects))


def measure(restarts: int = 3) -> dict | None:
    """Every row of the school stack, or None if it cannot run here."""
    if available():
        return None
    import peer_stack as stack

    result: dict = {"name": name()}
    work = Path(tempfile.mkdtemp(prefix="school-stack-"))
    try:
        conf = stack.configure(work)
        result["cold_start_s"] = stack.start(work, conf)  # first start: rspamd compiles its suffix list (cached after)
        starts, stops = [], []
        for _ in range(restarts):
            t0 = time.perf_counter()
            stack.stop(work, conf)
            stops.append(time.perf_counter() - t0)
            starts.append(stack.start(work, conf))
        result["start_s"], result["stop_s"] = statistics.median(starts), statistics.median(stops)
        pids = list(stack._our_processes(work))
        result["pss_idle_mib"] = pss_mib(pids)
        latencies, verdict = latency(stack, conf)
        result["latency_ms"] = statistics.median(latencies) * 1000
        result["latency_p95_ms"] = sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000
        result["verdict"] = " ".join(verdict.split())
        result["load_s"], result["load_total"], result["load_distinct"] = load(stack, conf)
        result["pss_loaded_mib"] = pss_mib(stack._our_processes(work))
    finally:
        try:
            stack.stop(work, conf)
        except Exception:  # noqa: BLE001 - a failed start: stop what was started, keep the logs for the report
            stack.print_logs(work)
        shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    reason = available()
    if reason:
        print(reason)
        return 0
    r = measure()
    assert r is not None
    print(f"{r['name']}")
    print(f"  first start {r['cold_start_s']:.2f} s; start on existing state → 587, 25, 993 answer   median "
          f"{r['start_s']:.2f} s; stop {r['stop_s']:.2f} s")
    print(f"  submit → visible over IMAPS with its verdict   median {r['latency_ms']:.0f} ms (p95 {r['latency_p95_ms']:.0f} ms)")
    print(f"  {r['verdict'][:200]}")
    print(f"  1,000 messages, 20 clients   {r['load_s']:.1f} s ({1000 / r['load_s']:.0f} msg/s), delivered "
          f"{r['load_total']}, distinct {r['load_distinct']}")
    print(f"  PSS idle {r['pss_idle_mib']:.0f} MiB, after the load {r['pss_loaded_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
