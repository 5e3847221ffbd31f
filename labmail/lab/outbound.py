"""The school server's queue and outbound delivery: a message is written to the queue before the 250 reply, retried
with backoff, delivered to the recipient domain's MX (by preference, A fallback, null MX) through the receivers'
PROXY relay sockets, and returned to its sender with a delivery status notification (RFC 3464) when it cannot be
delivered. Also the spoofer's host, which sends forged mail the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import secrets
import smtplib
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .._files import atomic_write_files, atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from .smtp import Host, MailServices

log = logging.getLogger("labmail.lab.smtp")


_FAILURE_CODE = re.compile(r"\b([45]\.\d{1,3}\.\d{1,3})\b")


def _status(text: str) -> str:
    """The DSN Status of a failure: the enhanced code the server gave (RFC 3463), else 5.0.0."""
    found = _FAILURE_CODE.search(text)
    return found.group(1) if found else "5.0.0"


def _mail_options(client: smtplib.SMTP, mail_from: str, rcpts: list[str], data: bytes) -> list[str]:
    """MAIL FROM's parameters, as Postfix's SMTP client sets them: ``BODY=8BITMIME`` for a message with 8-bit
    bytes (RFC 6152 §3), ``SMTPUTF8`` for UTF-8 addresses (RFC 6531) — when the MX announces them."""
    options = []
    if not data.isascii() and client.has_extn("8bitmime"):
        options.append("BODY=8BITMIME")
    if not all(a.isascii() for a in [mail_from, *rcpts]) and client.has_extn("smtputf8"):
        options.append("SMTPUTF8")
    return options


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


class Outbound:
    """Queue, relay, bounces and the spoofer (methods run in executor threads; the worker on the event loop).

    Like Postfix's queue manager, several deliveries run at once (``concurrency``, sized to the executor), the
    schedule of what is due lives in memory (rebuilt from the queue folder at start), and an open connection to a
    receiving MX is kept a couple of seconds for the next message to that MX (Postfix's connection cache,
    ``smtp_connection_cache_time_limit = 2s``) instead of a TCP/PROXY and STARTTLS handshake per message.
    """

    CACHE_SECONDS = 2.0

    #: at most this many bytes of just-queued messages kept in memory for their first delivery attempt (a burst
    #: beyond it is read back from the queue folder, as after a restart)
    FRESH_BYTES = 32 << 20

    def __init__(self, services: "MailServices") -> None:
        self.services = services
        self.queue_dir = services.lab.layout.queue_dir
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()
        self._schedule: dict[str, float] = {}  # qid → when it is due (time.time()), in arrival order
        self._idle: dict[tuple, list[tuple[float, smtplib.SMTP]]] = {}  # (source, relay, MX) → open sessions
        self._fresh: dict[str, tuple[bytes, dict]] = {}  # qid → (message, envelope) just queued, until its first try
        self._fresh_bytes = 0
        workers = getattr(services.executor, "_max_workers", 4)
        self.concurrency = max(2, workers // 2)
        # Relays wait on the receiving MX, whose own work runs in the lab's executor: they get threads of their own,
        # so that a burst of outgoing mail never holds every worker while the MXs it waits for need one.
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="labmail-relay")
        self._recover_queue()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._worker = loop.create_task(self._queue_worker())

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            idle, self._idle = self._idle, {}
        for sessions in idle.values():
            for _t, client in sessions:
                client.close()  # no QUIT: this runs on the loop that serves the other end, a reply would never come

    def enqueue(self, qid: str, mail_from: str, rcpts: list[str], data: bytes) -> None:
        """Write the message to the queue *before* the 250 reply: an accepted message survives a crash.

        The message, then its envelope (the sign it is whole: :meth:`_recover_queue`), one fsync of the folder for
        both; none of them is left if a write fails (disk full…). The first delivery attempt takes both from memory
        (:attr:`_fresh`, within :data:`FRESH_BYTES`) rather than reading back what was just written."""
        meta = {"mail_from": mail_from, "rcpts": rcpts, "attempts": 0, "next": 0.0, "created": time.time(), "errors": []}
        atomic_write_files([(self.queue_dir / f"{qid}.eml", data),
                            (self.queue_dir / f"{qid}.json", (json.dumps(meta) + "\n").encode())])
        with self._lock:
            if self._fresh_bytes + len(data) <= self.FRESH_BYTES:
                self._fresh[qid] = (data, meta)
                self._fresh_bytes += len(data)
        self._first_attempt(qid)

    def _first_attempt(self, qid: str) -> None:
        """A message just queued goes to the relay threads at once, from the thread that queued it: not through
        the event loop (two wake-ups of the loop and a pass over the schedule per message, which under a burst is
        as long as the queue). It enters the schedule only if that attempt leaves it for later (or the lab stops
        first: the queue folder keeps it, :meth:`_recover_queue` schedules it at the next start)."""
        try:
            self.executor.submit(self._attempt, qid)
        except RuntimeError:  # the lab is stopping
            pass

    def _attempt(self, qid: str) -> None:
        try:
            self._deliver_queued(qid)
        except Exception:
            log.exception("queue %s", qid)
            with self._lock:  # retried by the queue worker, like any message left for later
                self._schedule.setdefault(qid, time.time() + 1)

    def _recover_queue(self) -> None:
        """At start, before any listener: a crash may have left a message body without its envelope (killed between
        the two writes of :meth:`enqueue`, so never acknowledged) or a temporary file of an atomic write. Remove them:
        what got a 250 has both files and stays queued (and is scheduled again)."""
        leftovers = [p for p in self.queue_dir.glob("*.eml") if not p.with_suffix(".json").exists()]
        leftovers += list(self.queue_dir.glob(".*.tmp"))
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.warning("queue: %d file(s) of unacknowledged messages left by a crash removed", len(leftovers))
        for meta_path in sorted(self.queue_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                self._schedule[meta_path.stem] = float(json.loads(meta_path.read_text(encoding="utf-8")).get("next", 0))
            except (OSError, ValueError, AttributeError):
                self._schedule[meta_path.stem] = 0.0  # unreadable envelope: _deliver_queued decides

    def _loop_wakeup(self) -> None:
        loop = self._worker.get_loop() if self._worker is not None else None
        if loop is not None:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def _queue_worker(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.concurrency)
        running: set[str] = set()

        async def deliver(qid: str) -> None:
            try:
                await loop.run_in_executor(self.executor, self._deliver_queued, qid)
            except Exception:
                log.exception("queue %s", qid)
            finally:
                running.discard(qid)
                slots.release()

        while True:
            self._wakeup.clear()
            now = time.time()
            with self._lock:
                due = [qid for qid, when in self._schedule.items() if when <= now and qid not in running]
            for qid in due:
                await slots.acquire()
                running.add(qid)
                loop.create_task(deliver(qid))
            if self._idle:
                await loop.run_in_executor(self.executor, self._sweep)
            with self._lock:
                upcoming = [when for qid, when in self._schedule.items() if qid not in running]
            wait = min([max(0.0, when - time.time()) for when in upcoming] + [1.0])
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    def _deliver_queued(self, qid: str) -> None:
        data_path, meta_path = self.queue_dir / f"{qid}.eml", self.queue_dir / f"{qid}.json"
        with self._lock:
            fresh = self._fresh.pop(qid, None)
            if fresh is not None:
                self._fresh_bytes -= len(fresh[0])
        try:
            if fresh is not None:  # the queue folder stays the truth: a message removed meanwhile (a course reset) goes
                meta_path.stat()
                data, meta = fresh
            else:
                data, meta = data_path.read_bytes(), json.loads(meta_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            meta_path.unlink(missing_ok=True)
            data_path.unlink(missing_ok=True)
            with self._lock:
                self._schedule.pop(qid, None)
            return
        remaining: list[str] = []
        bounces: dict[str, str] = {}
        by_domain: dict[str, list[str]] = {}
        for rcpt in meta["rcpts"]:
            by_domain.setdefault(_domain(rcpt), []).append(rcpt)
        for domain, rcpts in by_domain.items():
            try:
                outcomes = self.send_each(self.services.hosts["school"], meta["mail_from"], rcpts, data, domain)
            except Exception as exc:  # a bug must not keep a message in the queue for ever: retried, then returned
                log.exception("queue %s: delivery to %s failed", qid, domain)
                outcomes = {rcpt: ("temp", f"internal error: {type(exc).__name__}") for rcpt in rcpts}
            for rcpt, (status, text) in outcomes.items():  # each recipient its own outcome, as Postfix's queue
                if status == "ok":
                    continue
                if status == "temp" and meta["attempts"] < 5:
                    remaining.append(rcpt)
                    meta["errors"].append(text)
                else:
                    bounces[rcpt] = text
        if bounces:
            self.bounce_each(meta["mail_from"], bounces, data)
        if remaining:
            meta.update(rcpts=remaining, attempts=meta["attempts"] + 1, next=time.time() + 2 ** meta["attempts"])
            atomic_write_text(meta_path, json.dumps(meta) + "\n")
            with self._lock:
                self._schedule[qid] = meta["next"]
            try:
                self._loop_wakeup()  # the queue worker recomputes when to look again
            except RuntimeError:  # the loop is closed: the lab is stopping
                pass
        else:
            meta_path.unlink(missing_ok=True)
            data_path.unlink(missing_ok=True)
            with self._lock:
                self._schedule.pop(qid, None)

    def mx_hosts(self, domain: str) -> list[str] | None:
        """MX targets by preference; [] for a null MX (RFC 7505); A fallback when there is no MX (RFC 5321 §5.1)."""
        answer = self.services.resolver().query(domain, "MX")
        if answer.records:
            mxs = sorted((r.rdata.preference, r.rdata.exchange.to_text().rstrip(".")) for r in answer.records)
            if len(mxs) == 1 and mxs[0][1] == "":
                return []
            return [name for _p, name in mxs]
        if answer.outcome.value in ("NODATA", "NXDOMAIN"):
            return [domain] if self.services.resolver().query(domain, "A").records else None
        return None

    def send(self, source: Host, mail_from: str, rcpts: list[str], data: bytes, domain: str) -> tuple[str, str]:
        """Deliver to ``domain``'s MX as ``source`` (its simulated address through PROXY). → ("ok"|"temp"|"perm", text)
        for the whole transaction: "perm" if any recipient was refused (:meth:`send_each` says which)."""
        outcomes = self.send_each(source, mail_from, rcpts, data, domain)
        failed = [(status, text) for status, text in outcomes.values() if status != "ok"]
        if not failed:
            return next(iter(outcomes.values()))
        if len(failed) == len(outcomes) and all(status == failed[0][0] for status, _t in failed):
            return failed[0][0], "; ".join(dict.fromkeys(text for _s, text in failed))
        return "perm", "; ".join(dict.fromkeys(text for _s, text in failed))

    def send_each(self, source: Host, mail_from: str, rcpts: list[str], data: bytes,
                  domain: str) -> dict[str, tuple[str, str]]:
        """:meth:`send`, with each recipient's outcome: the MX may take some and refuse others (one unknown address
        among three) — a bounce names those it refused, with the MX's own words, and a 4xx for one is retried."""
        status, text, refused = self._send(source, mail_from, rcpts, data, domain)
        outcomes = {rcpt: (status, text) for rcpt in rcpts}
        for rcpt, (code, message) in refused.items():
            said = f"host {text} said: {code} {message.decode(errors='replace')}"
            outcomes[rcpt] = ("perm" if code >= 500 else "temp", said)
        return outcomes

    def _send(self, source: Host, mail_from: str, rcpts: list[str], data: bytes,
              domain: str) -> tuple[str, str, dict]:
        """(status, text — the MX's name when delivered —, {recipient: (code, message)} refused by an MX that took
        the others)."""
        targets = self.mx_hosts(domain)
        if targets is None:
            return "temp", f"Host or domain name not found. Name service error for name={domain} type=MX", {}
        if not targets:
            return "perm", f"Domain {domain} does not accept mail (null MX, RFC 7505)", {}
        last: tuple[str, str, dict] = ("temp", "no MX reachable", {})
        for target in targets:
            addrs = self.services.resolver().query(target, "A").values
            relay = next((self.services.relays.get(f"{k}:relay") for k, h in self.services.hosts.items() if h.ip in addrs), None)
            if relay is None:
                last = ("temp", f"connect to {target}[{addrs[0] if addrs else '?'}]:25: Connection timed out", {})
                continue
            key = (source.name, source.ip, str(relay), target)
            client = None
            try:
                client = self._checkout(key)
                reused = client is not None
                if client is None:
                    client = self._connect(source, addrs[0], relay, target)
                try:
                    refused = _sendmail(client, mail_from, rcpts, data, _mail_options(client, mail_from, rcpts, data),
                                        reset=reused)
                except _NoReply:  # a kept session the MX had closed meanwhile: nothing was taken, a new one
                    _close_quietly(client)
                    client = None
                    client = self._connect(source, addrs[0], relay, target)
                    refused = _sendmail(client, mail_from, rcpts, data, _mail_options(client, mail_from, rcpts, data),
                                        reset=False)
                self._checkin(key, client)
                client = None
                return "ok", target, refused  # taken for the others
            except smtplib.SMTPRecipientsRefused as exc:  # every recipient refused, each with its own reply
                return "perm", target, dict(exc.recipients)
            except smtplib.SMTPResponseException as exc:
                status = "perm" if exc.smtp_code >= 500 else "temp"
                return status, f"host {target} said: {exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", {}
            except (OSError, smtplib.SMTPException) as exc:
                last = ("temp", f"{target}: {exc}", {})
            except UnicodeError as exc:  # an address no SMTP server can take (not UTF-8): returned to the sender
                return "perm", f"invalid address for {target}: {exc.reason}", {}
            finally:
                if client is not None:  # a session that failed is not reused
                    _close_quietly(client)
        return last

    def _connect(self, source: "Host", ip: str, relay: Path, target: str) -> smtplib.SMTP:
        client = _ProxySMTP(source, ip, relay, target)
        try:
            client.ehlo(source.name)
            if client.has_extn("starttls"):
                client.starttls(context=self.services.ca.client_context())
                client.ehlo(source.name)
        except BaseException:
            _close_quietly(client)
            raise
        return client

    def _checkout(self, key: tuple) -> smtplib.SMTP | None:
        """An open session to that MX left by an earlier delivery (at most CACHE_SECONDS ago); the next transaction
        starts with RSET (:func:`_sendmail`). None if there is none."""
        while True:
            with self._lock:
                sessions = self._idle.get(key)
                if not sessions:
                    return None
                since, client = sessions.pop()
            if time.monotonic() - since <= self.CACHE_SECONDS:
                return client
            _close_quietly(client)

    def _sweep(self) -> None:
        """Close the cached sessions idle for more than CACHE_SECONDS (the receiver sees a QUIT)."""
        now, stale = time.monotonic(), []
        with self._lock:
            for key, sessions in list(self._idle.items()):
                stale += [c for t, c in sessions if now - t > self.CACHE_SECONDS]
                sessions[:] = [(t, c) for t, c in sessions if now - t <= self.CACHE_SECONDS]
                if not sessions:
                    del self._idle[key]
        for client in stale:
            _close_quietly(client)

    def _checkin(self, key: tuple, client: smtplib.SMTP) -> None:
        """Keep a session for the next message to that MX (closed by :meth:`_sweep` or :meth:`_checkout` once
        older than CACHE_SECONDS)."""
        with self._lock:
            self._idle.setdefault(key, []).append((time.monotonic(), client))

    def bounce(self, mail_from: str, rcpts: list[str], text: str, original: bytes) -> None:
        """A delivery status notification (RFC 3464) to the sender, when the sender is a local mailbox."""
        self.bounce_each(mail_from, {rcpt: text for rcpt in rcpts}, original)

    def bounce_each(self, mail_from: str, failures: dict[str, str], original: bytes) -> None:
        """One DSN (RFC 3464) for the recipients that could not be reached, each with its own reason and status
        (the enhanced code of the receiving server's reply, RFC 3463; 5.0.0 when it gave none), as Postfix writes
        them — only those: a bounce listing the recipients who did get the message told the sender they had not."""
        rcpts = list(failures)
        if not mail_from or mail_from.lower() not in self.services.store.accounts:
            log.warning("bounce for %s dropped (sender %r not local): %s", rcpts, mail_from, "; ".join(failures.values()))
            return
        host = self.services.hosts["school"].name
        boundary = secrets.token_hex(8)
        headers_part = original.split(b"\r\n\r\n", 1)[0]
        lines = "".join(f"{rcpt} : {text}\r\n" for rcpt, text in failures.items())
        body = (f"From: MAILER-DAEMON@{host} (Mail Delivery System)\r\nTo: {mail_from}\r\n"
                f"Subject: Undelivered Mail Returned to Sender\r\nDate: {email.utils.format_datetime(email.utils.localtime())}\r\n"
                f"Message-ID: <{secrets.token_hex(8)}@{host}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
                f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\"\r\n\r\n"
                f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                f"Ceci est le système de messagerie de {host}.\r\nVotre message n'a pas pu être remis à : {', '.join(rcpts)}\r\n"
                f"{lines}\r\nThis is the mail system at {host}. Your message could not be delivered to: "
                f"{', '.join(rcpts)}\r\n{lines}\r\n"
                f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; {host}\r\n\r\n"
                + "".join(f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: {_status(t)}\r\n"
                          f"Diagnostic-Code: smtp; {t}\r\n\r\n" for r, t in failures.items())
                + f"--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").encode("utf-8", "backslashreplace") + headers_part + f"\r\n\r\n--{boundary}--\r\n".encode()
        self.services.store.deliver(mail_from.lower(), body, record={"queue_id": "bounce",
                                                                     "reason": "; ".join(failures.values()), "rcpts": rcpts})

    def spoof(self, mail_from: str, header_from: str, rcpt: str, subject: str, body: str) -> tuple[str, str]:
        """Send a message from the spoofer's host (192.0.2.66) forging ``header_from``."""
        if any(c in value for value in (mail_from, header_from, rcpt, subject) for c in "\r\n\0"):
            from ..errors import LabError

            raise LabError("L'usurpateur : une adresse ou l'objet contient un saut de ligne — une seule ligne chacun.",
                           "The spoofer: an address or the subject holds a line break — one line each.")
        data = (f"From: {header_from}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
                f"Date: {email.utils.format_datetime(email.utils.localtime())}\r\n"
                f"Message-ID: <{secrets.token_hex(8)}@arnaque.test>\r\n\r\n{body}\r\n").encode()
        return self.send(self.services.spoofer, mail_from, [rcpt], data, _domain(rcpt))


def _close_quietly(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


class _NoReply(smtplib.SMTPServerDisconnected):
    """A kept session gave no reply at all to the first command of a transaction: the server had closed it."""


def _sendmail(client: smtplib.SMTP, mail_from: str, rcpts: list[str], data: bytes, options: list[str], *,
              reset: bool) -> dict:
    """``client.sendmail`` — same replies, same exceptions — with RFC 2920 pipelining when the server announces it,
    as Postfix's SMTP client does: [RSET,] MAIL, every RCPT and DATA in one write, their replies read in order, then
    the content; two round trips instead of four or five. ``reset``: the session carried an earlier transaction.
    Raises :class:`_NoReply` if not even the first reply came (a kept session the server had closed)."""
    if not client.has_extn("pipelining"):
        if reset:
            try:
                code = client.rset()[0]
            except (OSError, smtplib.SMTPException):
                raise _NoReply("no reply to RSET") from None
            if code != 250:
                raise _NoReply(f"RSET answered {code}")
        return client.sendmail(mail_from, rcpts, data, mail_options=options)
    esmtp = [f"SIZE={len(data)}"] if client.has_extn("size") else []
    esmtp += options
    if any(option.lower() == "smtputf8" for option in options):
        client.command_encoding = "utf-8"
    tail = "".join(" " + option for option in esmtp)
    commands = (["RSET"] if reset else []) + [f"MAIL FROM:{smtplib.quoteaddr(mail_from)}{tail}"]
    commands += [f"RCPT TO:{smtplib.quoteaddr(rcpt)}" for rcpt in rcpts] + ["DATA"]
    try:
        client.send("".join(command + "\r\n" for command in commands))
        first = client.getreply()
    except (OSError, smtplib.SMTPServerDisconnected):
        if reset:
            raise _NoReply("no reply to the first command") from None
        raise
    replies = [first] + [client.getreply() for _ in commands[1:]]
    if reset:
        replies = replies[1:]  # RSET's answer: a kept session that answers is a live one
    (mail_code, mail_text), rcpt_replies, (data_code, data_text) = replies[0], replies[1:-1], replies[-1]
    refused = {rcpt: reply for rcpt, reply in zip(rcpts, rcpt_replies) if reply[0] not in (250, 251)}
    if data_code == 354 and (mail_code != 250 or len(refused) == len(rcpts)):
        client.send(b".\r\n")  # RFC 2920 §3.1: a 354 after a refused envelope is ended with a lone dot
        client.getreply()
    if mail_code != 250:
        if mail_code == 421:
            client.close()
        raise smtplib.SMTPSenderRefused(mail_code, mail_text, mail_from)
    if len(refused) == len(rcpts):
        if any(code == 421 for code, _text in refused.values()):
            client.close()
        raise smtplib.SMTPRecipientsRefused(refused)
    if data_code != 354:
        raise smtplib.SMTPDataError(data_code, data_text)
    content = smtplib._quote_periods(data)  # noqa: SLF001 - smtplib's dot-stuffing (RFC 5321 §4.5.2), as sendmail's
    if not content.endswith(b"\r\n"):
        content += b"\r\n"
    client.send(content + b".\r\n")
    code, text = client.getreply()
    if code != 250:
        if code == 421:
            client.close()
        raise smtplib.SMTPDataError(code, text)
    return refused


class _ProxySMTP(smtplib.SMTP):
    """smtplib client to an internal relay socket that opens with a PROXY v1 line: the receiver sees ``source.ip``
    as the client."""

    def __init__(self, source: Host, dst_ip: str, path: Path, target: str) -> None:
        self._source, self._dst_ip, self._path = source, dst_ip, path
        super().__init__("localhost", 25, local_hostname=source.name, timeout=30)
        self._host = target  # STARTTLS checks the MX's certificate against its name

    def _get_socket(self, host, port, timeout):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        family = "TCP6" if ":" in self._source.ip else "TCP4"
        sock.sendall(f"PROXY {family} {self._source.ip} {self._dst_ip} {secrets.randbelow(20000) + 40000} 25\r\n".encode())
        return sock
