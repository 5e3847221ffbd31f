"""A whole class on one lab: N students working at once, as in the lab session (instructor's check before class).

Each simulated student, with their own credentials from ``class-credentials.csv`` (``labmail lab start --class``):
publishes MX and SPF with their TSIG key, creates tintin and milou with their API key, sends tintin → milou and
tintin → their Gmail-like mailbox (587, STARTTLS, AUTH), then reads milou over IMAP and over POP3 until the message
is there. Every operation is timed; every message is counted at its recipient (lost or duplicated = an error).

>>> result = simulate(cfg, workers=50)          # doctest: +SKIP
>>> result.errors, result.latency()             # doctest: +SKIP
"""

from __future__ import annotations

import base64
import csv
import secrets
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .state import Layout

__all__ = ["LoadResult", "simulate"]

OPERATIONS = ("dns", "mailboxes", "submit", "imap", "pop3", "provider")


@dataclass
class LoadResult:
    students: int
    seconds: float
    timings: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    def latency(self) -> dict[str, tuple[float, float, int]]:
        """Per operation: (p50 ms, p99 ms, count)."""
        out = {}
        for op in OPERATIONS:
            values = sorted(self.timings.get(op, []))
            if values:
                p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
                out[op] = (statistics.median(values) * 1000, p99 * 1000, len(values))
        return out

    def __str__(self) -> str:
        lines = [f"{self.students} students in {self.seconds:.1f} s — errors {len(self.errors)}, lost {len(self.lost)}, "
                 f"duplicated {len(self.duplicated)}"]
        lines += [f"  {op:<10} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({n})" for op, (p50, p99, n) in self.latency().items()]
        lines += [f"  error: {e}" for e in self.errors[:10]]
        return "\n".join(lines)


def _credentials(state_dir: Path) -> list[dict]:
    with Layout(state_dir).class_credentials.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def simulate(cfg, *, workers: int = 50, timeout: float = 60.0) -> LoadResult:
    """Run every student of the class provisioned in ``cfg``'s lab at once (``workers`` at a time)."""
    import dns.tsig

    from . import mail
    from .zonepanel import ZonePanel
    from .world import current
    from .lab.mailstore import MailStore

    world = current(cfg)
    students = _credentials(cfg.state_dir)
    result = LoadResult(len(students), 0.0, {op: [] for op in OPERATIONS})
    guard = threading.Lock()
    store = MailStore(Layout(cfg.state_dir).mail_dir)
    host = cfg.mail_host

    def timed(op: str, function):
        started = time.perf_counter()
        value = function()
        elapsed = time.perf_counter() - started
        with guard:
            result.timings[op].append(elapsed)
        return value

    def student(row: dict) -> None:
        domain = row["domaine"]
        tintin, milou, gmail = f"tintin@{domain}", f"milou@{domain}", row["gmail"]
        key = dns.tsig.Key(row["tsig_nom"], base64.b64decode(row["tsig_secret"]), "hmac-sha256")
        panel = ZonePanel(domain, world=world, key=key)
        timed("dns", lambda: (panel.replace("@", "MX", f"10 {host}."),
                              panel.replace("@", "TXT", "v=spf1 ip4:203.0.113.10 -all")))
        api = mail.MailcowAPI(key=row["cle_api"], world=world)
        passwords = {tintin: secrets.token_urlsafe(12), milou: secrets.token_urlsafe(12)}

        def mailboxes():
            for address, password in passwords.items():
                mail.MailcowAPI.raise_for(api.add_mailbox(address.split("@")[0], domain, password))

        timed("mailboxes", mailboxes)
        subject = f"charge {domain}"
        sent = timed("submit", lambda: mail.submit(tintin, [milou, gmail], subject, "Bonjour !",
                                                   password=passwords[tintin], world=world))
        if not sent.accepted:
            raise RuntimeError(f"{domain}: submission refused: {sent.reply}")
        deadline = time.monotonic() + timeout

        def until(op: str, read, address: str) -> None:
            while True:
                started = time.perf_counter()
                found = [m for m in read() if m == subject]
                elapsed = time.perf_counter() - started
                if found or time.monotonic() > deadline:
                    with guard:
                        result.timings[op].append(elapsed)
                    if not found:
                        with guard:
                            result.lost.append(f"{address}: {subject}")
                    return
                time.sleep(0.05)

        until("imap", lambda: [m.subject for m in mail.imap(milou, password=passwords[milou], world=world)], milou)
        until("pop3", lambda: [_subject(m.data) for m in mail.pop3(milou, password=passwords[milou], world=world)],
              milou)
        provider = row["mdp_gmail"]
        until("provider", lambda: [m.subject for f in ("INBOX", "Junk")
                                   for m in mail.imap(gmail, password=provider, host="imap.gmail.test", folder=f,
                                                      world=world)], gmail)
        for address, folders in ((milou, ("INBOX",)), (gmail, ("INBOX", "Junk"))):
            copies = sum(1 for f in folders for _k, data in store.messages(address, f) if _subject(data) == subject)
            if copies > 1:
                with guard:
                    result.duplicated.append(f"{address}: {subject} ×{copies}")

    def safe(row: dict) -> None:
        try:
            student(row)
        except Exception as exc:  # noqa: BLE001 - every failure is counted, with the student it hit
            with guard:
                result.errors.append(f"{row.get('domaine')}: {type(exc).__name__}: {exc}")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(safe, students))
    result.seconds = time.perf_counter() - started
    return result


def _subject(data: bytes | None) -> str:
    from email import message_from_bytes

    return str(message_from_bytes(data or b"").get("Subject", ""))
