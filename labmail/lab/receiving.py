"""What a receiving server of the lab does with a message once DATA is in: the MSA's fix-ups and DKIM signature,
the MX's judgement (:mod:`labmail.judge`), the stamped headers, delivery or refusal, and the record of how it saw the
message. Data travels as an :class:`Arrival`, not as long positional lists.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._files import atomic_write_text
from .._rfc5322 import raw_fields
from .outbound import _domain

if TYPE_CHECKING:  # pragma: no cover
    from .smtp import BaseHandler, Host, MailServices

log = logging.getLogger("labmail.lab.smtp")


@dataclass(frozen=True)
class Arrival:
    """One message arriving on a listener: who handled it, the SMTP session and envelope, the queue id, the client's
    (simulated) address and the TLS details."""

    handler: "BaseHandler"
    server: object  # the aiosmtpd SMTP protocol object of the connection
    session: object
    envelope: object
    qid: str
    ip: str
    tls: tuple | None

    @property
    def data(self) -> bytes:
        return self.envelope.original_content or self.envelope.content


def _client_port(server, session) -> int | None:
    """The client's TCP port: from the PROXY line of an internal relay, else from the socket."""
    proxy = getattr(server, "labmail_proxy", None)
    if proxy is not None and getattr(proxy, "src_port", None):
        return int(proxy.src_port)
    peer = getattr(session, "peer", None)
    return int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else None


def received_header(helo: str, ip: str, rdns: str | None, by: str, proto: str, qid: str, rcpt: str | None,
                    tls: tuple | None, auth_user: str | None) -> bytes:
    lines = [f"Received: from {helo or 'unknown'} ({rdns or 'unknown'} [{ip}])"]
    if tls:
        lines.append(f"\t(using {tls[1]} with cipher {tls[0]} ({tls[2]}/{tls[2]} bits))")
    if auth_user:
        lines.append(f"\t(Authenticated sender: {auth_user})")
    lines.append(f"\tby {by} (Postfix) with {proto} id {qid}")
    if rcpt:
        lines.append(f"\tfor <{rcpt}>; {email.utils.format_datetime(email.utils.localtime())}")
    else:
        lines[-1] += f"; {email.utils.format_datetime(email.utils.localtime())}"
    return ("\r\n".join(lines) + "\r\n").encode()


def _proto(session, tls: bool) -> str:
    esmtp = "ESMTP" if session.extended_smtp else "SMTP"
    return esmtp + ("S" if tls else "") + ("A" if session.authenticated else "")


_AR_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


def strip_claimed_results(data: bytes, authserv_id: str) -> bytes:
    """``data`` without the Authentication-Results fields that claim ``authserv_id`` — this server's own name — as
    RFC 8601 §5 requires of a receiving MTA: a sender wrote "mx.gmail.test; dkim=pass; dmarc=pass" itself and it
    was delivered under the real one, for a mail client's add-on (or a student reading the source) to believe."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or b"authentication-results" not in head.lower():
        return data
    wanted = authserv_id.lower().encode("ascii", "replace")
    kept = []
    for field in raw_fields(head):
        name = _AR_NAME.match(field)
        if name is not None:
            claimed = re.sub(rb"\([^()]*\)", b" ", field[name.end():]).split(b";", 1)[0].strip().lower()
            if claimed == wanted:
                log.info("Authentication-Results claiming %s removed from an incoming message (RFC 8601 §5)", authserv_id)
                continue
        kept.append(field)
    return b"\r\n".join(kept) + sep + body


class Receiving:
    """The receiving side of the lab's mail servers (runs in executor threads)."""

    def __init__(self, services: "MailServices") -> None:
        self.services = services
        self._keys: dict[str, tuple[tuple[int, int, int], bytes]] = {}  # path → ((inode, mtime, size), PEM)

    def _private_key(self, path) -> bytes | None:
        """The PEM of a DKIM key of the lab, read once and again only when the file changes (a new key is written
        to a new file renamed over the old one: another inode): one stat per signature instead of reading it."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._keys.get(str(path))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, "rb") as handle:
                pem = handle.read()
        except FileNotFoundError:
            return None
        if len(self._keys) > 4096:  # a class's domains, several keys each: more means something to forget
            self._keys.clear()
        self._keys[str(path)] = (stamp, pem)
        return pem

    def ptr_name(self, ip: str) -> str | None:
        import ipaddress

        try:
            name = ipaddress.ip_address(ip).reverse_pointer
        except ValueError:
            return None
        answer = self.services.resolver().query(name, "PTR")
        return answer.values[0].rstrip(".") if answer.records else None

    def client_name(self, server, ip: str) -> str | None:
        """The client's name by PTR, looked up once per connection (as Postfix's smtpd does when a client
        connects), not once per message. Kept on the protocol object ``server``, like every per-connection datum
        here (aiosmtpd starts a new Session after STARTTLS)."""
        cached = getattr(server, "labmail_ptr", None)
        if cached is None or cached[0] != ip:
            cached = (ip, self.ptr_name(ip))
            server.labmail_ptr = cached
        return cached[1]

    def msa_fixups(self, data: bytes, mail_from: str) -> bytes:
        """RFC 6409 §8: the MSA may add a missing Message-ID and Date."""
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        extra = b""
        if b"\nmessage-id:" not in b"\n" + head:
            extra += f"Message-ID: <{secrets.token_hex(8)}@{self.services.hosts['school'].name}>\r\n".encode()
        if b"\ndate:" not in b"\n" + head:
            extra += f"Date: {email.utils.format_datetime(email.utils.localtime())}\r\n".encode()
        return extra + data

    def dkim_sign(self, data: bytes, mail_from: str) -> bytes:
        """Sign with the envelope domain's key, selector ``dkim``, relaxed/relaxed (as Mailcow's rspamd)."""
        from ..dkim import sign

        from ..errors import LabmailError

        domain = _domain(mail_from) if mail_from else ""
        pem = self._private_key(self.services.lab.layout.dkim_private(domain)) if domain else None
        if pem is None:
            return data
        try:
            return sign(data, domain, "dkim", pem, trusted_key=True)  # made by the lab (generate_key)
        except LabmailError as exc:  # no From header (RFC 6376 §5.4 requires it signed): sent unsigned, as rspamd does
            log.info("not DKIM-signed (%s): %s", domain, exc.message("en"))
            return data
        except Exception as exc:  # noqa: BLE001 - dkimpy cannot read the header (a line that is no field: the telnet
            # exercise): sent unsigned, as rspamd does — the client got "500 … (MessageFormatError)" for it
            log.info("not DKIM-signed (%s): %s: %s", domain, type(exc).__name__, str(exc)[:120])
            return data

    def base_record(self, arrival: "Arrival", rdns: str | None) -> dict:
        handler, server, session, envelope = arrival.handler, arrival.server, arrival.session, arrival.envelope
        qid, ip, tls = arrival.qid, arrival.ip, arrival.tls
        return {
            "queue_id": qid, "received_at": time.time(), "server": handler.host.name, "listener": handler.listener,
            "client": {"ip": ip, "port": _client_port(server, session), "ptr": rdns, "helo": session.host_name},
            "tls": list(tls) if tls else None,
            "authenticated_as": session.auth_data if session.authenticated else None,
            "mail_from": envelope.mail_from, "rcpt_to": list(envelope.rcpt_tos), "dialogue": handler.dialogue(server).lines(),
        }

    def receive(self, arrival: "Arrival", data: bytes) -> str:
        """An MX receiving mail: run the checks, apply the host's policy, deliver; returns the SMTP reply.
        (One PTR lookup per message: the judge's, whose answer also names the client in the Received header.)"""
        from .. import judge

        session, envelope, qid, ip, tls = arrival.session, arrival.envelope, arrival.qid, arrival.ip, arrival.tls
        host = arrival.handler.host
        checks = judge.judge(data, ip=ip, mail_from=envelope.mail_from, helo=session.host_name or "", resolver=self.services.resolver())
        rdns = checks.ptr_names[0] if checks.ptr_names else None
        policy = self.services.policies[host.role]
        verdict = policy.decide(checks)
        record = self.base_record(arrival, rdns)
        record["checks"] = checks.to_record()
        record["verdict"] = verdict.to_record()
        if verdict.folder is None:
            log.info("%s: %s rejected mail from %s: %s", qid, host.name, ip, verdict.reply)
            self._save_rejection(host, record)
            return verdict.reply
        stamped = policy.stamp(host, checks, ip, envelope.mail_from, session.host_name or "")
        data = strip_claimed_results(data, policy.authserv_id if host.role != "school" else host.name)
        header = received_header(session.host_name, ip, rdns, host.name, _proto(session, bool(tls)), qid,
                                 envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None, tls, None)
        message = stamped + header + data
        # The same transaction sent again by the lab's own queue (retrying after a crash between this 250 and its
        # bookkeeping) is recognised by its envelope and bytes, and stored once: exactly-once delivery. Only on the
        # internal relay listeners, where the lab's queue speaks: a client on port 25 sending the same bytes twice
        # (the netcat exercise, done again) gets two messages, as from Postfix — they were silently dropped.
        internal = arrival.handler.listener == "relay"
        for rcpt in envelope.rcpt_tos:
            key = (hashlib.sha256(b"\0".join([envelope.mail_from.encode(), rcpt.lower().encode(), data])).hexdigest()
                   if internal else None)
            self.services.store.deliver(rcpt.lower(), message, folder=verdict.folder, record=dict(record, rcpt=rcpt), dedupe=key)
        log.info("%s: %s delivered from %s to %s in %s", qid, host.name, ip, ",".join(envelope.rcpt_tos), verdict.folder)
        return f"250 2.0.0 OK {qid}"

    def _save_rejection(self, host: Host, record: dict) -> None:
        path = self.services.lab.layout.rejected_dir / f"{record['queue_id']}.json"
        atomic_write_text(path, json.dumps(record, indent=1, default=str) + "\n")
