"""Mail-system benchmark of the lab (issue 4), in one run:

* lab process start until every service answers (DNS, SMTP 25/587/465, IMAP 993, POP3 995, HTTPS 443);
  target ≤ 1.5 s;
* submit (587, STARTTLS, AUTH) → visible over IMAP at the provider with its Authentication-Results;
  median target ≤ 100 ms;
* 1,000 messages from 20 concurrent clients (one authenticated session each): all delivered exactly once.

Run: ``.venv/bin/python bench/mail_bench.py``.
"""

from __future__ import annotations

import imaplib
import json
import os
import secrets
import signal
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from labmail import config, lab, mail  # noqa: E402
from labmail.lab.mailstore import MailStore  # noqa: E402
from labmail.lab.server import Lab  # noqa: E402
from labmail.world import current  # noqa: E402


def _tls(ca: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    return context


def _all_answer(state: Path) -> bool:
    try:
        run = json.loads((state / "run.json").read_text())
    except (OSError, ValueError):
        return False
    ports, ends, ca = run["ports"], run["endpoints"], run.get("ca")
    if not ca or "203.0.113.10:993" not in ends:
        return False
    try:
        dns.query.udp(dns.message.make_query("labmail.cloud", "SOA"), "127.0.0.1", port=ports["resolver"], timeout=0.2)
        for key in ("203.0.113.10:25", "203.0.113.10:587"):
            with smtplib.SMTP("127.0.0.1", ends[key], timeout=1) as s:
                s.noop()
        with smtplib.SMTP_SSL("127.0.0.1", ends["203.0.113.10:465"], timeout=1, context=_tls(ca)) as s:
            s.noop()
        imaplib.IMAP4_SSL("127.0.0.1", ends["203.0.113.10:993"], ssl_context=_tls(ca), timeout=1).logout()
        with socket.create_connection(("127.0.0.1", ends["203.0.113.10:995"]), timeout=1) as raw:
            with _tls(ca).wrap_socket(raw) as pop:
                assert pop.recv(100).startswith(b"+OK")
        urllib.request.urlopen(f"https://127.0.0.1:{ends['203.0.113.10:443']}/mail/config-v1.1.xml", context=_tls(ca),
                               timeout=1).read()
    except Exception:
        return False
    return True


def bench_start(state: Path, runs: int = 3) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "labmail.lab", "serve", "--state", str(state)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while not _all_answer(state):
            if proc.poll() is not None:
                raise RuntimeError("lab exited")
            time.sleep(0.01)
        times.append(time.perf_counter() - t0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        (state / "run.json").unlink(missing_ok=True)
    return times


def bench_latency(cfg, password: str, rounds: int = 30) -> list[float]:
    address = "bench@gmail.test"
    provider_pw = lab.provider_password(address, cfg)
    box = mail.imap_connect(address, password=provider_pw, host="imap.gmail.test")
    latencies = []
    try:
        for i in range(rounds):
            subject = f"latence {i} {secrets.token_hex(4)}"
            t0 = time.perf_counter()
            result = mail.submit("tintin@bench.labmail.cloud", address, subject, "x", password=password)
            assert result.accepted, result.reply
            while True:
                found = False
                for folder in ("INBOX", "Junk"):
                    box.select(folder, readonly=True)
                    typ, data = box.search(None, "SUBJECT", f'"{subject}"')
                    if data and data[0]:
                        number = data[0].split()[-1]
                        head = box.fetch(number, "(BODY.PEEK[HEADER.FIELDS (AUTHENTICATION-RESULTS)])")[1][0][1]
                        assert b"mx.gmail.test" in head
                        found = True
                        break
                if found:
                    break
                if time.perf_counter() - t0 > 10:
                    raise RuntimeError("message not delivered within 10 s")
                time.sleep(0.002)
            latencies.append(time.perf_counter() - t0)
    finally:
        box.logout()
    return latencies


def bench_load(cfg, passwords: dict, clients: int = 20, per_client: int = 50,
               rcpt: str = "milou@bench.labmail.cloud") -> tuple[float, int, int]:
    """``clients`` sessions (STARTTLS, AUTH on 587) each sending ``per_client`` messages to ``rcpt``; the time until
    every message is in ``rcpt``'s mailbox (for a provider address: signed, relayed, judged — SPF, DKIM, DMARC,
    iprev — and delivered), and how many arrived, how many distinct."""
    world = current(cfg)
    host, port = world.connect_address("mailcow.labmail.cloud", 587)
    ca = world.ca_file
    errors: list[str] = []
    run_id = secrets.token_hex(3)
    local, _, domain = rcpt.partition("@")
    folder = cfg.state_dir / "mail" / domain / local / "Maildir"
    before_count = sum(len(os.listdir(folder / sub / part)) for sub in (".", ".Junk") for part in ("new", "cur")
                       if (folder / sub / part).is_dir())

    def client(n: int) -> None:
        try:
            with smtplib.SMTP(host, port, timeout=60) as s:
                s._host = "mailcow.labmail.cloud"
                s.starttls(context=ssl.create_default_context(cafile=ca))
                s.login("tintin@bench.labmail.cloud", passwords["tintin@bench.labmail.cloud"])
                for i in range(per_client):
                    body = f"From: tintin@bench.labmail.cloud\r\nTo: {rcpt}\r\nSubject: charge {run_id}-{n}-{i}\r\n\r\nx\r\n"
                    s.sendmail("tintin@bench.labmail.cloud", [rcpt], body.encode())
        except Exception as exc:  # counted below: every error is reported
            errors.append(f"{n}: {exc}")

    from mail_peers import concurrently

    t0 = time.perf_counter()
    concurrently(client, clients)
    store = MailStore(cfg.state_dir / "mail")
    expected, before = clients * per_client, before_count
    local, _, domain = rcpt.partition("@")
    maildir = cfg.state_dir / "mail" / domain / local / "Maildir"

    def files() -> int:  # cheap while waiting (no reading): files in INBOX and Junk
        return sum(len(os.listdir(maildir / sub / part)) for sub in (".", ".Junk") for part in ("new", "cur"))

    while files() - before < expected and time.perf_counter() - t0 < 120:  # relayed mail lands after the 250
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    subjects = [line for folder in ("INBOX", "Junk") for _k, data in store.messages(rcpt, folder)
                for line in data.decode(errors="replace").splitlines() if line.startswith(f"Subject: charge {run_id}-")]
    if errors:
        print("errors:", errors[:5])
    return elapsed, len(subjects), len(set(subjects))


def _lab_pss(state: Path) -> float:
    from mail_peers import pss_mib

    run = json.loads((state / "run.json").read_text())
    return pss_mib([run["pid"]])


def _stop_time(cfg) -> float:
    t0 = time.perf_counter()
    lab.stop(cfg)
    return time.perf_counter() - t0


def main() -> int:
    from _report import record
    from mail_peers import available, measure

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        prepared = Lab(state)
        prepared.open("labmail.cloud", "mailcow.labmail.cloud")
        prepared.provision(["bench"])
        starts = bench_start(state)  # every start finds the state of the one before: a restart, like the peer's
        print(f"lab start → every service answers   median {statistics.median(starts):.2f} s "
              f"(min {min(starts):.2f}, max {max(starts):.2f})   target ≤ 0.5 s")
        os.environ["LABMAIL_STATE_DIR"] = str(state)
        os.environ["LABMAIL_CONFIG"] = str(Path(tmp) / "config.toml")
        cfg = config.Config(prenom="bench", state_dir=state)
        lab.start(cfg)
        try:
            passwords = {a: secrets.token_urlsafe(12) for a in ("tintin@bench.labmail.cloud", "milou@bench.labmail.cloud")}
            for address, password in passwords.items():
                lab.add_mailbox(address, password, config=cfg)
            lab.provider_password("bench@gmail.test", cfg)
            time.sleep(1.0)  # the warm-up after start is over
            pss_idle = _lab_pss(state)
            latencies = bench_latency(cfg, passwords["tintin@bench.labmail.cloud"])
            lat_median = statistics.median(latencies) * 1000
            lat_p95 = sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000
            print(f"submit → visible over IMAP at Gmail with AR   median {lat_median:.0f} ms (p95 {lat_p95:.0f} ms, "
                  f"{len(latencies)} messages)   target ≤ 25 ms")
            elapsed, total, unique = bench_load(cfg, passwords, rcpt="bench@gmail.test")
            print(f"1,000 messages to Gmail (signed, relayed, SPF/DKIM/DMARC), 20 clients   {elapsed:.1f} s "
                  f"({1000 / elapsed:.0f} msg/s), delivered {total}, distinct {unique}   target ≥ 300 msg/s, exactly once")
            local_elapsed, local_total, local_unique = bench_load(cfg, passwords)
            print(f"1,000 messages school → school (signed, delivered), 20 clients   {local_elapsed:.1f} s "
                  f"({1000 / local_elapsed:.0f} msg/s), delivered {local_total}, distinct {local_unique}")
            pss_loaded = _lab_pss(state)
            print(f"lab process PSS   idle {pss_idle:.0f} MiB, after the loads {pss_loaded:.0f} MiB")
        finally:
            stop_s = _stop_time(cfg)
        print(f"lab stop   {stop_s:.2f} s   target ≤ 0.3 s")

    peer = measure()  # the school stack from Debian's packages, same machine, same run (None if not installed)
    peer_name = peer["name"] if peer else available()
    if peer:
        print(f"{peer['name']}: start on existing state {peer['start_s']:.2f} s (first start {peer['cold_start_s']:.1f} s), "
              f"stop {peer['stop_s']:.2f} s; submit → IMAPS {peer['latency_ms']:.0f} ms (p95 {peer['latency_p95_ms']:.0f}); "
              f"1,000 messages {peer['load_s']:.1f} s ({1000 / peer['load_s']:.0f} msg/s, {peer['load_distinct']} distinct); "
              f"PSS {peer['pss_idle_mib']:.0f} → {peer['pss_loaded_mib']:.0f} MiB")
        print(f"  {peer['verdict'][:160]}")

    def get(key, digits=2):
        return round(peer[key], digits) if peer else None

    record("mail: start on existing state → every service answers", round(statistics.median(starts), 2), "s",
           target="≤ 0.5 s", higher_is_better=False, peer=peer_name, peer_value=get("start_s"),
           note="warm: the peer's first start takes longer (rspamd compiles its lists)")
    record("mail: stop", round(stop_s, 2), "s", target="≤ 0.3 s", higher_is_better=False, peer=peer_name,
           peer_value=get("stop_s"))
    record("submit (587, TLS, AUTH) → visible over IMAPS with SPF/DKIM/DMARC verdict, median", round(lat_median), "ms",
           target="≤ 25 ms, ≤ 3× the peer", higher_is_better=False, peer=peer_name, peer_value=get("latency_ms", 0))
    record("same, p95", round(lat_p95), "ms", higher_is_better=False, peer=peer_name, peer_value=get("latency_p95_ms", 0))
    record("1,000 messages / 20 clients, signed + relayed + checked, exactly once", round(1000 / elapsed), "msg/s",
           target="≥ 300 msg/s, ≥ 0.5× the peer", peer=peer_name,
           peer_value=round(1000 / peer["load_s"]) if peer else None,
           note=f"{unique}/{total} distinct" + (f"; peer {peer['load_distinct']}/{peer['load_total']}" if peer else ""))
    record("1,000 messages / 20 clients, school → school (signed, delivered)", round(1000 / local_elapsed), "msg/s",
           note=f"{local_unique}/{local_total} distinct")
    record("memory (PSS) idle", round(pss_idle), "MiB", higher_is_better=False, peer=peer_name,
           peer_value=get("pss_idle_mib", 0))
    record("memory (PSS) after the loads", round(pss_loaded), "MiB", higher_is_better=False, peer=peer_name,
           peer_value=get("pss_loaded_mib", 0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
