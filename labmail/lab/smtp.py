"""The lab's SMTP world: the school's server (MSA and MX, like Mailcow's Postfix + rspamd) and the providers.

Every host of the world has public listeners (what real clients such as swaks or Thunderbird use) and,
for the receiving MTAs, an internal *relay* listener that accepts the PROXY protocol (v1) so that the
receiver sees the sending MTA's simulated address (203.0.113.10 for the school, 192.0.2.66 for the
spoofer…). PROXY is accepted nowhere else.

Receiving servers judge mail with labmail's engine (SPF for MAIL FROM and HELO, every DKIM signature,
DMARC, iprev), stamp ``Authentication-Results`` and ``Received-SPF`` in their provider's style, then
deliver to Inbox or Junk, or reject at SMTP time, following the provider's published rules
(:mod:`labmail.judge`). Each delivered message has a record of how the server saw it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import logging
import re
import secrets
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from ..errors import LabmailError
from ..resolver import Outcome, Resolver, _check_type
from ..state import PROVIDERS
from .guard import AccountLocked, client_of
from .limits import LISTEN_BACKLOG, SMTP_REFUSAL, guarded
from .mailstore import MAX_MESSAGE_SIZE
from .outbound import _domain
from .receiving import Arrival, _proto, received_header

log = logging.getLogger("labmail.lab.smtp")
logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns "Session.login_data is deprecated" on every AUTH

MAX_SIZE = MAX_MESSAGE_SIZE
_BARE_LF = re.compile(rb"(?<!\r)\n")
#: recipients a message may have (Postfix's smtpd_recipient_limit)
MAX_RECIPIENTS = 1000
#: seconds during which a disk found with room for mail is not measured again (BaseHandler.storage_refusal)
SPACE_RECHECK = 1.0


def queue_id() -> str:
    return secrets.token_hex(5).upper()


@dataclass
class Host:
    """A mail host of the world: its name, simulated address, the domains it receives for."""

    name: str
    ip: str
    role: str  # "school", "gmail", "outlook", "spoofer"
    domains: set[str] = field(default_factory=set)


# ---------------------------------------------------------------------------
# Received header, Postfix style
# ---------------------------------------------------------------------------
def _tls_info(server: SMTP) -> tuple | None:
    transport = server.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    cipher = ssl_object.cipher()
    return cipher if cipher else None


# ---------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------
_BARE_EOL = re.compile(rb"(?<!\r)\n|\r(?!\n)")


#: RFC 3463 enhanced status codes for aiosmtpd's own refusals that have none (as Postfix words them).
_ENHANCED = {"500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4", "530": "5.7.0",
             "534": "5.7.9", "535": "5.7.8", "550": "5.0.0", "552": "5.3.4", "553": "5.1.3", "554": "5.0.0",
             "555": "5.5.4", "421": "4.3.0", "450": "4.0.0", "451": "4.3.0", "452": "4.3.1", "454": "4.7.0",
             "455": "4.5.4"}
_HAS_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")
#: What no host name or address may hold: control characters, and bytes that were not UTF-8 (aiosmtpd keeps them as
#: lone surrogates). Postfix refuses them the same way; passed on, they break every later step.
_BAD_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
#: aiosmtpd's reply to an unknown command quotes it: a password typed at the wrong prompt would reach the log. The
#: log keeps the command only when it is a known verb (a PROXY header, HTTP or POP3 sent to SMTP tell a story).
_QUOTED_COMMAND = re.compile(r'command "([^"]*)" not recognized')
_KNOWN_VERBS = {"PROXY", "XCLIENT", "XFORWARD", "BDAT", "ETRN", "TURN", "ATRN", "VERB", "XEXCH50", "GET", "POST",
                "HEAD", "PUT", "OPTIONS", "CONNECT", "USER", "PASS", "CAPA", "STLS", "LOGIN", "AUTHENTICATE", "SELECT"}
#: On 465 TLS is implicit (the listener is TLS from the first byte), which aiosmtpd cannot tell: its warning that
#: AUTH is required without STARTTLS is a false alarm there.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS", category=UserWarning)


class _LabSMTP(SMTP):
    """aiosmtpd's server, logging every refusal it sends (5xx, and 4xx but 421 at shutdown or timeout) with the
    client — what a mail log shows for an open-relay probe, AUTH before TLS, a line too long, a PROXY header on a
    public port… Replies never contain credentials. Every refusal carries an RFC 3463 enhanced status code, and a
    message far over the size limit is cut short: ``552 5.3.4`` and the connection closed, instead of reading
    megabytes more to the end (a client that did not announce SIZE)."""

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, bytes):  # an AUTH challenge ("334 …"), pushed as bytes by aiosmtpd
            return await super().push(status)
        status = status.encode("utf-8", "backslashreplace").decode("utf-8")  # a reply quoting bytes that were not UTF-8
        code, _, text = status.partition(" ")
        if code in _ENHANCED and not _HAS_ENHANCED.match(text):
            status = f"{code} {_ENHANCED[code]} {text}"
        if status[:1] in ("4", "5") and not status.startswith("421"):
            peer = self.session.peer if self.session else None
            log.warning("refused %s on %s: %s", peer[0] if isinstance(peer, tuple) else peer,
                        getattr(self.event_handler, "listener", "?"),
                        _QUOTED_COMMAND.sub(lambda m: m.group() if m.group(1) in _KNOWN_VERBS
                                            else 'command "…" not recognized', status)[:160])
        await super().push(status)

    # MAIL FROM:<a@b> and RCPT TO:<a@b>: aiosmtpd parses every address with email's full RFC 5322 parser (and defines
    # a class on each call) — 12 % of the lab's CPU when relaying. The plain form (a dot-atom local part, a host
    # name) is read by one expression; anything else goes to aiosmtpd's parser (tests/test_mail.py compares them).
    _PLAIN_ADDRESS = re.compile(r"<((?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
                                r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*))>"
                                r"(?=$|[ \t])")

    def _getaddr(self, arg: str):
        match = self._PLAIN_ADDRESS.match(arg) if arg else None
        rest = arg[match.end():].lstrip(" \t") if match is not None else ""
        if match is None or rest.startswith("("):  # a comment after the address: email's parser reads it
            return super()._getaddr(arg)
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def _clean(self, arg: str | None, refusal: str, command):
        """Run ``command`` unless ``arg`` holds bytes that were not UTF-8 or control characters (then ``refusal``)."""
        if arg and _BAD_CHARS.search(arg):
            return await self.push(refusal)
        return await command(arg)

    _BAD_HOST = "501 5.5.2 Error: invalid characters in the host name (RFC 5321 4.1.1.1)"

    async def smtp_STARTTLS(self, arg: str):  # noqa: N802 - aiosmtpd's name
        """STARTTLS inside TLS: refused as Postfix does (RFC 3207 §4.2) — aiosmtpd answered 220, tried a handshake
        inside the first one, dropped the connection and logged two tracebacks (a classmate could fill the log)."""
        if getattr(self, "_tls_protocol", None) is not None:
            return await self.push("554 5.5.1 Error: TLS already active")
        return await super().smtp_STARTTLS(arg)

    _AUTH_PARAMETER = re.compile(r"[ \t]+AUTH=\S*", re.IGNORECASE)

    async def smtp_EHLO(self, hostname: str):  # noqa: N802 - aiosmtpd's name
        return await self._clean(hostname, self._BAD_HOST, super().smtp_EHLO)

    async def smtp_HELO(self, hostname: str):  # noqa: N802 - aiosmtpd's name
        return await self._clean(hostname, self._BAD_HOST, super().smtp_HELO)

    async def smtp_MAIL(self, arg: str):  # noqa: N802 - aiosmtpd's name
        """MAIL FROM, with the AUTH= parameter of RFC 4954 §5 taken (and not used: the session's login decides) where
        AUTH is offered — authenticated Exim and sendmail add it, and got 555."""
        if arg and self._auth_offered() and "AUTH=" in arg.upper():
            arg = self._AUTH_PARAMETER.sub("", arg)
        return await self._clean(arg, "501 5.1.7 Bad sender address syntax", super().smtp_MAIL)

    def _auth_offered(self) -> bool:
        return bool(getattr(self, "_auth_required", False) or getattr(self, "_authenticator", None))

    async def smtp_RCPT(self, arg: str):  # noqa: N802 - aiosmtpd's name
        return await self._clean(arg, "501 5.1.3 Bad recipient address syntax", super().smtp_RCPT)

    # AUTH checks a password hash (scrypt, ~50 ms of CPU): aiosmtpd calls the authenticator on the event loop, where
    # a class logging in at once would stall every session. The check runs in the lab's small pool of password
    # threads instead (see MailServices.auth_executor), and the loop serves everyone meanwhile.
    async def auth_PLAIN(self, _, args):  # noqa: N802 - aiosmtpd's name
        """aiosmtpd's, but an authorization identity other than the login is refused (RFC 4616 §2: the server MUST
        check that the login may act as it; nobody may here, as with Dovecot) — it was ignored."""
        if len(args) == 1:
            raw = await self.challenge_auth("")
            if raw is MISSING:
                return AuthResult(success=False)
        else:
            try:
                raw = base64.b64decode(args[1].encode(), validate=True)
            except ValueError:
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        try:
            authzid, login, password = raw.split(b"\x00")
        except ValueError:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        if authzid and authzid != login:
            await self.push("535 5.7.8 Error: authentication failed: authorization identity refused")
            return AuthResult(success=False, handled=True)
        return await self._off_loop(self._authenticate("PLAIN", LoginPassword(login, password)))

    async def auth_LOGIN(self, _, args):  # noqa: N802 - aiosmtpd's name
        return await self._off_loop(await super().auth_LOGIN(_, args))

    @staticmethod
    async def _off_loop(result):
        return await result if asyncio.isfuture(result) else result

    def _authenticate(self, mechanism: str, auth_data):
        pool = getattr(self.event_handler, "password_pool", None)
        if pool is None:
            return super()._authenticate(mechanism, auth_data)
        return asyncio.get_running_loop().run_in_executor(pool, super()._authenticate, mechanism, auth_data)

    async def challenge_auth(self, *args, **kwargs):
        try:
            return await super().challenge_auth(*args, **kwargs)
        except (ValueError, asyncio.LimitOverrunError):  # a line longer than the reader's limit
            await self.push("500 5.5.6 Authentication exchange line is too long")
            return MISSING

    async def smtp_DATA(self, arg):  # noqa: N802 - aiosmtpd's name
        self._labmail_data_bytes = 0
        try:
            return await super().smtp_DATA(arg)
        finally:
            self._labmail_data_bytes = None

    def data_received(self, data: bytes) -> None:
        received = getattr(self, "_labmail_data_bytes", None)
        if received is not None and self.data_size_limit:
            received += len(data)
            self._labmail_data_bytes = received
            if received > self.data_size_limit + 1_048_576 and self.transport is not None:
                peer = self.session.peer if self.session else None
                log.warning("refused %s on %s: 552 5.3.4 message over %d bytes, connection closed after %d bytes",
                            peer[0] if isinstance(peer, tuple) else peer, getattr(self.event_handler, "listener", "?"),
                            self.data_size_limit, received)
                self.transport.write(b"552 5.3.4 Message size exceeds fixed limit\r\n")
                self.transport.close()
                return
        super().data_received(data)


class _Dialogue(list):
    """A session's SMTP dialogue as a message's record keeps it: at most 200 lines of 1,000 characters — a client
    repeating EHLO 20,000 times before one message made each record of that connection 10 MiB (found by review;
    Postfix drops such a client after 100 junk commands). What is left out is counted in a last line."""

    LINES, WIDTH = 200, 1000

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def append(self, line: str) -> None:  # type: ignore[override]
        if len(self) >= self.LINES:
            self.dropped += 1
            return
        super().append(line if len(line) <= self.WIDTH else line[:self.WIDTH] + f"… [{len(line) - self.WIDTH} more]")

    def __delitem__(self, index) -> None:  # a new transaction: what it drops is forgotten, the count too
        super().__delitem__(index)
        self.dropped = 0

    def lines(self) -> list[str]:
        return list(self) + ([f"… {self.dropped} more lines not kept"] if self.dropped else [])


class BaseHandler:
    """What every receiving server of the lab does: record the dialogue, Received header, delivery."""

    def __init__(self, services: "MailServices", host: Host, listener: str) -> None:
        self.services = services
        self.host = host
        self.listener = listener  # "mx", "relay", "submission", "smtps"

    @property
    def password_pool(self):
        """Where AUTH's password check runs (not on the event loop). Not named auth_…: aiosmtpd would advertise
        a handler attribute of that name as an AUTH mechanism."""
        return self.services.auth_executor

    # Per-connection data lives on the SMTP protocol object: aiosmtpd starts a new Session after STARTTLS.
    def client_ip(self, server: SMTP) -> str:
        """The simulated client address: PROXY data on relay listeners, the socket's peer elsewhere."""
        proxy = getattr(server, "labmail_proxy", None)
        if proxy is not None and proxy.src_addr is not None:
            return str(proxy.src_addr)
        peer = server.session.peer
        return peer[0] if isinstance(peer, tuple) else str(peer)

    @staticmethod
    def address_refusal(envelope, address: str, *, recipient: bool) -> str | None:
        """RFC 6531 §3.4: a UTF-8 address only in a transaction declared SMTPUTF8 (Postfix's 553 5.6.7); an empty
        recipient is no address."""
        if recipient and address in ("", "<>"):
            return "501 5.1.3 Bad recipient address syntax"
        if address and not address.isascii() and not getattr(envelope, "smtp_utf8", False):
            return "553 5.6.7 Must declare SMTPUTF8 to send unicode address"
        return None

    def storage_refusal(self) -> str | None:
        """Postfix's guard (``queue_minfree``): no new mail while the lab's disk has less free space than 1.5 times
        the largest message — a class cannot fill the machine, and what was accepted can still be written. Enough
        space found is believed for :data:`SPACE_RECHECK` seconds (this runs on the loop, at every MAIL FROM: two
        ``statfs`` a message were two moments the loop let go of Python's lock under load); too little is looked
        at again every time, so mail is taken again as soon as space is freed."""
        if time.monotonic() < self.services.space_ok_until:
            return None
        for folder in (self.services.lab.layout.queue_dir, self.services.store.root):  # where a message is written
            try:
                if shutil.disk_usage(folder).free < MAX_SIZE * 3 // 2:
                    log.warning("less than %d MiB free in %s: mail refused (452 4.3.1)", MAX_SIZE * 3 // 2 >> 20, folder)
                    return "452 4.3.1 Insufficient system storage"
            except OSError:
                pass
        self.services.space_ok_until = time.monotonic() + SPACE_RECHECK
        return None

    def recipient_refusal(self, envelope, address: str) -> str | None:
        """Postfix's ``smtpd_recipient_limit`` (1,000 a message: ``452 4.5.3``); a recipient given twice is taken
        once (Postfix's cleanup does the same): 1,200 RCPT of one classmate's address gave 1,200 copies, past any
        quota. ``"duplicate"`` when the address is already in the envelope (answered 250, not added)."""
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Error: too many recipients"
        if any(r.lower() == address.lower() for r in envelope.rcpt_tos):
            return "duplicate"
        return None

    def quota_refusal(self, envelope, address: str) -> str | None:
        """A local mailbox at its quota (Mailcow's, 3 GiB by default) refuses more mail at RCPT, as Dovecot's
        quota-status service has Postfix do; the size announced in MAIL FROM (SIZE=) counts."""
        declared = next((int(o[5:]) for o in envelope.mail_options if o.upper().startswith("SIZE=") and o[5:].isdigit()), 0)
        if not self.services.store.over_quota(address, declared):
            return None
        log.warning("mailbox %s is over quota: mail refused", address.lower())
        return self.over_quota_reply(address)

    def over_quota_reply(self, address: str) -> str:
        return f"552 5.2.2 <{address}>: Recipient address rejected: Mailbox is full"

    def dialogue(self, server: SMTP) -> list[str]:
        if not hasattr(server, "labmail_dialogue"):
            server.labmail_dialogue = _Dialogue()  # type: ignore[attr-defined]
        return server.labmail_dialogue  # type: ignore[attr-defined]

    def new_transaction(self, server: SMTP) -> None:
        """A MAIL command starts a transaction: a message's record keeps the session's opening (connection, EHLO,
        STARTTLS, AUTH) and its own transaction, not those of earlier messages on the same connection."""
        dialogue = self.dialogue(server)
        opening = getattr(server, "labmail_opening", None)
        if opening is None:  # the opening keeps at most half of what a record holds: the transaction has the rest
            server.labmail_opening = opening = min(len(dialogue), _Dialogue.LINES // 2)  # type: ignore[attr-defined]
        del dialogue[opening:]

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        if not (proxy_data and proxy_data.valid):
            return False
        server.labmail_proxy = proxy_data
        return True

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.dialogue(server).append(f"C: EHLO {hostname}")
        self.dialogue(server).append(f"S: 250 {self.host.name}")
        # RFC 2920, as Postfix and Gmail announce it: a client may send MAIL, RCPT… and DATA without waiting for each
        # reply (aiosmtpd reads commands in order from its buffer and answers each in turn)
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_HELO(self, server, session, envelope, hostname):
        session.host_name = hostname
        self.dialogue(server).append(f"C: HELO {hostname}")
        return f"250 {self.host.name}"

    temp_failure = "451 4.3.0 Error: queue file write error"

    async def handle_DATA(self, server, session, envelope):
        """Store or judge the message in a worker thread (checks query the DNS served by this very loop)."""
        if self.listener == "mx" and _BARE_EOL.search(envelope.original_content or b""):
            # SMTP smuggling (CVE-2023-51764 and kin): a bare LF or CR in DATA may hide a second message behind a
            # non-standard end of data for another server; the public MX refuses it, like Postfix with
            # smtpd_forbid_bare_newline = reject (submission and the internal relay keep aiosmtpd's CRLF.CRLF rule).
            log.warning("message refused from %s: bare <LF>/<CR> in DATA (SMTP smuggling?)", self.client_ip(server))
            self.dialogue(server).append("C: DATA")
            return "550 5.5.2 Error: bare <LF> or <CR> received (lines must end with CRLF, RFC 5321 section 2.3.8)"
        qid = queue_id()
        tls = _tls_info(server)
        ip = self.client_ip(server)
        self.dialogue(server).append("C: DATA")
        loop = asyncio.get_running_loop()
        arrival = Arrival(self, server, session, envelope, qid, ip, tls)
        try:
            reply = await loop.run_in_executor(self.services.executor, self.process, arrival)
        except OSError as exc:  # disk full…: nothing half-stored, the client retries
            log.error("could not store message %s: %s", qid, exc)
            return self.temp_failure
        self.dialogue(server).append("S: " + reply)
        return reply

    def process(self, arrival: Arrival) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class SchoolHandler(BaseHandler):
    """mailcow.labmail.cloud: MX for the students' domains (25), MSA (587 STARTTLS, 465 TLS)."""

    @property
    def submission(self) -> bool:
        return self.listener in ("submission", "smtps")

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login = auth_data.login.decode("utf-8", "replace")
        self.dialogue(server).append(f"C: AUTH {mechanism} {login} ********")
        try:
            client = client_of(session.peer if isinstance(session.peer, tuple) else None,
                               server.transport.get_extra_info("sockname") if server.transport else None)
            account = self.services.store.authenticate(login, auth_data.password.decode("utf-8", "replace"), "SMTP", client)
        except AccountLocked as exc:
            reply = f"454 4.7.0 {exc.text.en}"
            self.dialogue(server).append("S: " + reply)
            return AuthResult(success=False, handled=False, message=reply)
        if account is None:
            log.warning("AUTH failed for %s from %s", login, self.client_ip(server))
            self.dialogue(server).append("S: 535 5.7.8 Error: authentication failed")
            return AuthResult(success=False, handled=False, message="535 5.7.8 Error: authentication failed")
        self.dialogue(server).append("S: 235 2.7.0 Authentication successful")
        log.info("%s/smtpd: client=%s, sasl_method=%s, sasl_username=%s, %s", self.listener, self.client_ip(server),
                 mechanism, account.address, "TLS" if _tls_info(server) else "cleartext")
        return AuthResult(success=True, auth_data=account.address)

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.new_transaction(server)
        self.dialogue(server).append(f"C: MAIL FROM:<{address}>")
        refusal = self.address_refusal(envelope, address, recipient=False)
        refusal = refusal or self.storage_refusal()
        if refusal:
            self.dialogue(server).append("S: " + refusal)
            return refusal
        if self.submission:
            user = session.auth_data
            # the null sender (<>: a read receipt, an auto-reply, RFC 5321 §4.5.5) is anyone's, as with Postfix's
            # reject_sender_login_mismatch; it was refused as "<<>>: not owned by user"
            if address and address != "<>" and address.lower() != str(user).lower():
                reply = f"553 5.7.1 <{address}>: Sender address rejected: not owned by user {user}"
                self.dialogue(server).append("S: " + reply)
                log.warning("sender %s refused for user %s", address, user)
                return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.dialogue(server).append("S: 250 2.1.0 Ok")
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.dialogue(server).append(f"C: RCPT TO:<{address}>")
        refusal = self.address_refusal(envelope, address, recipient=True) or self.recipient_refusal(envelope, address)
        if refusal == "duplicate":
            self.dialogue(server).append("S: 250 2.1.5 Ok")
            return "250 2.1.5 Ok"
        if refusal:
            self.dialogue(server).append("S: " + refusal)
            return refusal
        domain = _domain(address)
        if domain in self.host.domains:
            if address.lower() not in self.services.store.accounts:
                reply = f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
                self.dialogue(server).append("S: " + reply)
                return reply
            full = self.quota_refusal(envelope, address)
            if full:
                self.dialogue(server).append("S: " + full)
                return full
        elif not self.submission:
            reply = f"554 5.7.1 <{address}>: Relay access denied"
            self.dialogue(server).append("S: " + reply)
            log.warning("relay refused to %s from %s", address, self.client_ip(server))
            return reply
        envelope.rcpt_tos.append(address)
        self.dialogue(server).append("S: 250 2.1.5 Ok")
        return "250 2.1.5 Ok"

    def process(self, arrival: Arrival) -> str:
        session, envelope, qid, tls, ip, data = arrival.session, arrival.envelope, arrival.qid, arrival.tls, arrival.ip, arrival.data
        user = session.auth_data if session.authenticated else None
        receiving = self.services.receiving
        if self.submission:
            rdns = receiving.client_name(arrival.server, ip)
            local = [r for r in envelope.rcpt_tos if _domain(r) in self.host.domains]
            remote = [r for r in envelope.rcpt_tos if _domain(r) not in self.host.domains]
            # a bare LF ends a line, as Postfix's smtpd reads it: made CRLF before the header is completed and signed
            # (RFC 6376 §5.3) — it was signed, stored and relayed as sent
            data = receiving.msa_fixups(_BARE_LF.sub(b"\r\n", data), envelope.mail_from)
            header = received_header(session.host_name, ip, rdns, self.host.name, _proto(session, bool(tls)), qid,
                                     envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None, tls, user)
            signed = receiving.dkim_sign(header + data, envelope.mail_from)
            record = receiving.base_record(arrival, rdns)
            full = []
            for rcpt in local:
                if self.services.store.over_quota(rcpt, len(signed)):  # full since RCPT: Dovecot's LMTP says 552
                    full.append(rcpt)
                    continue
                self.services.store.deliver(rcpt.lower(), signed, record=dict(record, rcpt=rcpt,
                                            verdict={"folder": "INBOX", "reason": "local delivery of authenticated mail"}))
            if full:
                self.services.outbound.bounce(envelope.mail_from, full, "552 5.2.2 Mailbox is full", signed)
            if remote:
                self.services.outbound.enqueue(qid, envelope.mail_from, remote, signed)
            log.info("%s: from=<%s> user=%s to=%s accepted", qid, envelope.mail_from, user, ",".join(envelope.rcpt_tos))
            return f"250 2.0.0 Ok: queued as {qid}"
        return receiving.receive(arrival, data)


class ProviderHandler(BaseHandler):
    """The MX of gmail.test / outlook.test: accept for their mailboxes, judge, deliver or reject."""

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.new_transaction(server)
        self.dialogue(server).append(f"C: MAIL FROM:<{address}>")
        refusal = self.address_refusal(envelope, address, recipient=False) or self.storage_refusal()
        if refusal:
            self.dialogue(server).append("S: " + refusal)
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self.dialogue(server).append("S: 250 2.1.0 OK")
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.dialogue(server).append(f"C: RCPT TO:<{address}>")
        refusal = self.address_refusal(envelope, address, recipient=True) or self.recipient_refusal(envelope, address)
        if refusal == "duplicate":
            self.dialogue(server).append("S: 250 2.1.5 OK")
            return "250 2.1.5 OK"
        if refusal:
            reply = refusal
        elif _domain(address) not in self.host.domains:
            reply = "550 5.7.1 Relaying denied."
        elif address.lower() not in self.services.store.accounts:
            reply = "550 5.1.1 The email account that you tried to reach does not exist."
        elif full := self.quota_refusal(envelope, address):
            reply = full
        else:
            envelope.rcpt_tos.append(address)
            reply = "250 2.1.5 OK"
        self.dialogue(server).append("S: " + reply)
        return reply

    temp_failure = "451 4.3.0 Temporary local problem, please try again later"

    def over_quota_reply(self, address: str) -> str:
        return "452 4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to the help center."

    def process(self, arrival: Arrival) -> str:
        return self.services.receiving.receive(arrival, arrival.data)


# ---------------------------------------------------------------------------
# The services
# ---------------------------------------------------------------------------
class MailServices:
    """The lab's mail services, started in one place: SMTP listeners (public and internal relay), IMAP and POP3,
    their TLS, and the parts that do the work — :class:`~labmail.lab.receiving.Receiving` (what a server does with
    a message), :class:`~labmail.lab.outbound.Outbound` (queue, relay, bounces, spoofer) and
    :class:`~labmail.lab.dmarcreports.ReportSender` (DMARC aggregate reports)."""

    def __init__(self, lab, ca, store, resolver_address: tuple[str, int], executor) -> None:
        from .. import judge

        self.lab = lab
        self.ca = ca
        self.store = store
        self.executor = executor
        self.space_ok_until = 0.0  # monotonic time until which the disk is believed to have room (storage_refusal)
        # Password hashing (AUTH, new mailboxes): a pool of its own, as wide as the machine, so that a class logging
        # in or creating mailboxes at once neither blocks the event loop nor takes the mail workers.
        from concurrent.futures import ThreadPoolExecutor

        self.auth_executor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                                thread_name_prefix="labmail-auth")
        self.resolver_address = resolver_address
        self.listen = lab.listen  # where real clients connect (loopback, or the class lab's address)
        self._dns = None  # the lab's own resolver engine, asked in-process (see use_local_dns)
        self._answers: dict = {}
        self._answers_generation = None
        spec = lab.spec
        hosts = spec.hosts()
        school_domains = {spec.student_zone(s).rstrip(".") for s in spec.students} | {spec.parent_domain}
        self.hosts = {
            "school": Host(spec.mail_host, hosts[spec.mail_host][0], "school", school_domains),
            **{name: Host(p.mx_host, hosts[p.mx_host][0], name, {p.domain}) for name, p in PROVIDERS.items()},
        }
        self.spoofer = Host("mx.arnaque.test", hosts["mx.arnaque.test"][0], "spoofer", {"arnaque.test"})
        self.imap_hosts = {name: (p.imap_host, hosts[p.imap_host][0]) for name, p in PROVIDERS.items()}
        self.policies = judge.POLICIES
        self.ports: dict[str, int] = {}
        self.relays: dict[str, Path] = {}  # internal relay listeners: Unix sockets (see relay_path)
        self.servers: list = []
        self.web_context = None
        self.pop3 = None
        self.imap = None
        from .dmarcreports import ReportSender
        from .outbound import Outbound
        from .receiving import Receiving

        self.receiving = Receiving(self)
        self.outbound = Outbound(self)  # recovers the queue left by a crash, before any listener
        self.reports = ReportSender(self)

    # -- listeners --------------------------------------------------------------
    def _factory(self, handler, *, tls_context=None, require_starttls=False, auth=False, proxy=False, implicit=False):
        kwargs = dict(hostname=handler.host.name, ident="Postfix" if handler.host.role == "school" else "ESMTP",
                      data_size_limit=MAX_SIZE, decode_data=False, timeout=60, enable_SMTPUTF8=True)
        if tls_context is not None and not implicit:
            kwargs.update(tls_context=tls_context, require_starttls=require_starttls)
        if auth:
            kwargs.update(authenticator=handler.authenticator, auth_required=True, auth_require_tls=not implicit)
        else:
            kwargs.update(auth_exclude_mechanism=["PLAIN", "LOGIN"])
        if proxy:
            kwargs.update(proxy_protocol_timeout=5)
        return lambda: _LabSMTP(handler, **kwargs)

    def relay_path(self, key: str) -> Path:
        """The Unix socket of an internal relay listener (PROXY protocol accepted there, and only there), in a folder
        only the lab's user may enter: another local user cannot claim a simulated address (e.g. the school
        server's) by speaking PROXY to it, as a TCP port on loopback would let them."""
        folder = self.lab.layout.relay_dir
        if len(str(folder / "outlook-relay.sock")) >= 100:  # AF_UNIX paths are short: a private folder in /tmp
            import hashlib
            import tempfile

            digest = hashlib.sha256(str(self.lab.state_dir.resolve()).encode()).hexdigest()[:16]
            folder = Path(tempfile.gettempdir()) / f"labmail-{os.getuid()}-{digest}-relay"
        folder.mkdir(mode=0o700, exist_ok=True)
        if folder.stat().st_uid != os.getuid():
            raise OSError(f"{folder} belongs to another user: refusing to put the lab's relay sockets there")
        os.chmod(folder, 0o700)
        return folder / f"{key.replace(':', '-')}.sock"

    def cert_names(self, host: Host) -> tuple[str, ...]:
        """The host's name and simulated address, plus where it really listens (real clients connect there)."""
        return tuple(dict.fromkeys((host.name, host.ip, "localhost", "127.0.0.1", self.listen)))

    def warm_up(self) -> None:
        """What the first message would otherwise pay (run in the background once every service answers): the
        judge's modules and the Public Suffix List (~0.2 s to parse), the DKIM signing keys (checked once)."""
        from .. import dkim, dmarc, judge, spf  # noqa: F401

        try:
            dmarc._psl()  # RFC 7489's organizational domains (no DNS)
        except Exception:  # noqa: BLE001 - a warm-up never fails the lab; the first message reports any problem
            log.debug("warm-up: the Public Suffix List could not be loaded", exc_info=True)
        for domain in sorted(self.hosts["school"].domains):
            key = self.lab.layout.dkim_private(domain)
            if key.exists():
                try:
                    dkim._signing_key(key.read_bytes(), True)  # the lab's own key (see Receiving.dkim_sign)
                except (OSError, LabmailError):
                    pass  # a broken key is reported when a message is signed with it

    def prepare_tls(self) -> None:
        """Issue every host's certificate now (a few ms each, better spent outside the event loop)."""
        for host in self.hosts.values():
            self.ca.server_context(*self.cert_names(host))

    async def start(self, previous: dict[str, int]) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        plan = []
        for key, host in self.hosts.items():
            context = self.ca.server_context(*self.cert_names(host))
            if key == "school":
                plan += [
                    (f"{key}:25", SchoolHandler(self, host, "mx"), dict(tls_context=context)),
                    (f"{key}:587", SchoolHandler(self, host, "submission"), dict(tls_context=context, require_starttls=True, auth=True)),
                    (f"{key}:465", SchoolHandler(self, host, "smtps"), dict(tls_context=context, auth=True, implicit=True)),
                    (f"{key}:relay", SchoolHandler(self, host, "relay"), dict(tls_context=context, proxy=True)),
                ]
            else:
                plan += [
                    (f"{key}:25", ProviderHandler(self, host, "mx"), dict(tls_context=context)),
                    (f"{key}:relay", ProviderHandler(self, host, "relay"), dict(tls_context=context, proxy=True)),
                ]
        for key, handler, options in plan:
            factory = self._factory(handler, **options)
            ssl_ctx = options.get("tls_context") if options.get("implicit") else None
            if options.get("proxy"):  # the internal hop: a socket only the lab's own user can reach
                path = self.relay_path(key)
                path.unlink(missing_ok=True)
                server = await loop.create_unix_server(factory, str(path))
                os.chmod(path, 0o600)
                self.relays[key] = path
                self.servers.append(server)
                continue
            port = int(previous.get(key) or 0)
            factory = guarded(factory, None if ssl_ctx is not None else SMTP_REFUSAL)  # within the connection budget
            options = {"ssl": ssl_ctx, "backlog": LISTEN_BACKLOG}
            if ssl_ctx is not None:
                options["ssl_handshake_timeout"] = 20
            try:
                server = await loop.create_server(factory, self.listen, port, **options)
            except OSError:
                server = await loop.create_server(factory, self.listen, 0, **options)
            self.ports[key] = server.sockets[0].getsockname()[1]
            self.servers.append(server)
        from .pop3 import POP3Server

        school = self.hosts["school"]
        self.pop3 = POP3Server(self.store, school.domains, school.name, self.ca.server_context(*self.cert_names(school)),
                               self.executor, listen=self.listen)
        self.ports["school:995"], self.ports["school:110"] = await self.pop3.start(
            int(previous.get("school:995") or 0), int(previous.get("school:110") or 0))
        from .imap import IMAPServer

        names = self.cert_names(school)
        self.imap = IMAPServer(self.store, school.domains, school.name, self.ca.leaf_pem(*names), listen=self.listen)
        self.ports["school:993"], self.ports["school:143"] = await loop.run_in_executor(
            self.executor, self.imap.start, int(previous.get("school:993") or 0), int(previous.get("school:143") or 0))
        self.provider_imap = {}
        for key, (name, ip) in self.imap_hosts.items():  # the students read their provider mailboxes over IMAP
            server = IMAPServer(self.store, self.hosts[key].domains, name,
                                self.ca.leaf_pem(*dict.fromkeys((name, ip, "localhost", "127.0.0.1", self.listen))),
                                listen=self.listen)
            self.ports[f"{key}:993"], self.ports[f"{key}:143"] = await loop.run_in_executor(
                self.executor, server.start, int(previous.get(f"{key}:993") or 0), int(previous.get(f"{key}:143") or 0))
            self.provider_imap[key] = server
        servers = [self.imap, *self.provider_imap.values()]
        self.store.on_deliver = lambda address, folder: [s.delivered(address, folder) for s in servers]
        self.outbound.start(loop)
        return dict(self.ports)

    def add_school_domain(self, domain: str) -> None:
        """A new student: the school's server now receives for the domain (and serves its autoconfig names)."""
        self.hosts["school"].domains.add(domain)
        if self.web_context is not None:
            from .web import web_names

            self.ca.configure(self.web_context, web_names(self))

    def endpoints(self) -> dict[str, int]:
        """Simulated "ip:port" → local port, for clients (labmail.mail, swaks, curl)."""
        out = {}
        for key, host in self.hosts.items():
            for port in ("25", "587", "465", "443", "995", "110", "993", "143"):
                if f"{key}:{port}" in self.ports:
                    ip = self.imap_hosts[key][1] if key in self.imap_hosts and port in ("993", "143") else host.ip
                    out[f"{ip}:{port}"] = self.ports[f"{key}:{port}"]
        return out

    async def stop(self) -> None:
        self.outbound.stop()
        if self.pop3 is not None:
            self.pop3.close()
        if self.imap is not None:
            self.imap.stop()
        for server in getattr(self, "provider_imap", {}).values():
            server.stop()
        for server in self.servers:
            server.close()
        self.auth_executor.shutdown(wait=False, cancel_futures=True)

    # -- helpers used by handlers (run in executor threads) ----------------------
    def use_local_dns(self, engine) -> None:
        """Ask the lab's resolver engine in this process rather than over UDP to its own port (as a mail server asks
        the caching resolver on its host): same answers, same cache — emptied when a zone changes — without two
        sockets and a datagram per lookup. The engine is asked in the calling thread: it reads zones under their
        lock, so a zone is never read while an UPDATE changes it."""
        self._dns = engine

    def _exchange(self, query):
        """One question to the lab's own DNS engine, asked in the calling thread (a mail worker, or the loop): the
        engine is thread-safe (zones read under their lock), so no hop through the event loop."""
        import dns.message

        replies = self._dns.handle(query.to_wire(), tcp=True, peer=("127.0.0.1", 0))  # TCP semantics: never truncated
        if not replies:
            raise dns.exception.Timeout()
        return dns.message.from_wire(replies[0])

    def answers(self) -> dict:
        """The lab's answer cache for its own lookups: (name, type) → LookupResult, emptied whenever a zone changes
        (the engine's generation), so a student's UPDATE is seen by the next message, as without a cache."""
        generation = self._dns.zones.generation if self._dns is not None else None
        if generation != self._answers_generation or len(self._answers) > 20_000:
            self._answers, self._answers_generation = {}, generation
        return self._answers

    def resolver(self):
        if self._dns is not None:
            return _LabResolver(self)
        return Resolver([self.resolver_address], timeout=2.0)

    # -- the parts (each in its module) and the names the lab process and the tests use --------------------------
    def mx_hosts(self, domain: str) -> list[str] | None:
        return self.outbound.mx_hosts(domain)

    def send(self, source: Host, mail_from: str, rcpts: list[str], data: bytes, domain: str) -> tuple[str, str]:
        return self.outbound.send(source, mail_from, rcpts, data, domain)

    def spoof(self, mail_from: str, header_from: str, rcpt: str, subject: str, body: str) -> tuple[str, str]:
        return self.outbound.spoof(mail_from, header_from, rcpt, subject, body)

    def dmarc_reports(self, fmt: str = "7489", *, only: str | None = None) -> list[dict]:
        return self.reports.send_all(fmt, only=only)



def _in_zones(name: str, zones) -> bool:
    try:
        qname = dns.name.from_text(name + ".")
    except dns.exception.DNSException:
        return False
    return any(qname.is_subdomain(zone) for zone in zones)


class _LabResolver(Resolver):
    """The lab's resolver engine asked in-process, behind the lab's answer cache (see MailServices.answers): a
    message's SPF, DKIM, DMARC, iprev and DNSBL lookups mostly find their answer already decoded."""

    def __init__(self, services: "MailServices") -> None:
        super().__init__([services.resolver_address], exchange=services._exchange, timeout=2.0)
        self._services = services

    def query(self, name, rdtype):
        try:
            key = (str(name).rstrip(".").lower(), int(_check_type(rdtype)))
        except LabmailError:  # a bad type: the base class says so
            return super().query(name, rdtype)
        forwards = self._services._dns.forwards if self._services._dns is not None else {}
        if forwards and _in_zones(key[0], forwards):
            return super().query(name, rdtype)  # a zone served elsewhere (lab_forward): its owner changes it, no cache
        cache = self._services.answers()
        hit = cache.get(key)
        if hit is not None:
            self.count += 1
            return hit
        result = super().query(name, rdtype)
        if result.outcome in (Outcome.ANSWER, Outcome.NXDOMAIN, Outcome.NODATA):
            cache[key] = result
        return result
