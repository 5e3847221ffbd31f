"""Mail clients for the course: SMTP submission with a readable transcript (IMAP and POP3 come next).

>>> r = submit("tintin@jean.labmail.cloud", "milou@jean.labmail.cloud", "Bonjour", "Salut Milou !",
...            password=getpass())                       # doctest: +SKIP
>>> print(r.transcript)                                    # doctest: +SKIP
C: EHLO …
S: 250-mailcow.labmail.cloud …
C: AUTH PLAIN ********
"""

from __future__ import annotations

import email.policy
import email.utils
import json
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from .config import Config
from .errors import APIError, MailError, UsageError
from .i18n import tr
from .state import Layout
from .world import World, current

__all__ = ["stored_password", "submit", "SubmitResult", "make_message", "MailcowAPI", "pop3", "POP3Message", "imap",
           "imap_connect", "IMAPMessage", "probe", "Probe"]


def _text(value: bytes | str) -> str:
    """An SMTP reply text, whether smtplib gives it as bytes or str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _field(pattern: str, meta: str) -> str:
    """A field of an IMAP FETCH response (UID, FLAGS, RFC822.SIZE); a server that leaves it out is an error."""
    import re as _re

    match = _re.search(pattern, meta)
    if match is None:
        raise MailError(f"Réponse IMAP inattendue ({meta[:80]}) : il manque {pattern}.",
                        f"Unexpected IMAP answer ({meta[:80]}): {pattern} is missing.")
    return match.group(1)


def remember_password(address: str, password: str, *, config=None) -> None:
    """Keep the password of a mailbox the student created (the mailbox form does it), like a mail client's password
    store: in ``<state>/course-passwords.json`` (0600), so later notebooks log in without it ever being in a cell."""
    import json as _json

    from ._files import atomic_write_text
    from .config import load

    cfg = config or load()
    path = Layout(cfg.state_dir).course_passwords
    try:
        known = _json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known[address.lower()] = password
    atomic_write_text(path, _json.dumps(known) + "\n", mode=0o600)


def stored_password(address: str, password: str | None = None, world: World | None = None) -> str:
    """The password to log in as ``address``: ``password`` if given, else the one the lab generated and keeps
    for that account — the course's mailboxes (``<state>/course-passwords.json``) and the student's provider
    mailboxes (``<state>/keys/provider-passwords.json``), both 0600. So a notebook never holds a password.
    """
    if password is not None:
        return password
    from .config import live_credentials

    world = world or current()
    state = world.config.state_dir
    files = [Layout(state).course_passwords]
    if world.config.world == "local":
        files.append(Layout(state).provider_passwords)
    else:  # live: the class's credentials file (never a cell)
        known = {str(k).lower(): v for k, v in (live_credentials(world.config).get("passwords") or {}).items()}
        if address.lower() in known:
            return known[address.lower()]
    for path in files:
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if address.lower() in known:
            return known[address.lower()]
    raise MailError(f"Aucun mot de passe connu pour {address} : la boîte a-t-elle été créée (étape 5, ou l'exercice "
                       "plus haut) ? Pour une boîte dont vous avez choisi le mot de passe, passez password=getpass() (tapé, "
                       "jamais écrit dans une cellule).", f"No known password for {address}: was the mailbox created "
                       "(step 5, or the exercise above)? For a mailbox whose password you chose, pass "
                       "password=getpass() (typed, never written in a cell).")


@dataclass(frozen=True)
class SubmitResult:
    """What happened during a submission: the dialogue (passwords hidden), the server's last reply, refusals."""

    accepted: bool
    reply: str
    transcript: str = field(repr=False)
    refused: dict = field(default_factory=dict)
    queue_id: str | None = None

    def __str__(self) -> str:
        return self.transcript

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(self.transcript)


class _RecordingSMTP(smtplib.SMTP):
    """smtplib client that keeps the dialogue (secrets hidden) and checks TLS against the server's *name*."""

    def __init__(self, server_name: str, **kwargs) -> None:
        self.server_name = server_name
        self.lines: list[str] = []
        self._secret_next = False
        super().__init__(**kwargs)

    def connect(self, host="localhost", port=0, source_address=None):  # noqa: D102
        reply = super().connect(host, port, source_address)
        self._host = self.server_name  # STARTTLS checks the certificate against this name
        return reply

    def send(self, s):  # noqa: D102 - smtplib hook
        text = s.decode("utf-8", "replace") if isinstance(s, bytes) else s
        if text.upper().startswith("AUTH "):
            parts = text.split()
            shown = " ".join(parts[:2] + ["********"] * (len(parts) > 2))
            self.lines.append("C: " + shown)
            self._secret_next = parts[1].upper() == "LOGIN"
        elif self._secret_next:
            self.lines.append("C: ********")
        elif not text.startswith(("From:", "Received:")) and len(text) < 1000:
            self.lines.append("C: " + text.rstrip("\r\n"))
        else:
            self.lines.append(f"C: <message, {len(s)} octets>")
        return super().send(s)

    def getreply(self):  # noqa: D102 - smtplib hook
        code, message = super().getreply()
        text = message.decode("utf-8", "replace")
        for i, line in enumerate(text.splitlines() or [""]):
            sep = "-" if i < len(text.splitlines()) - 1 else " "
            self.lines.append(f"S: {code}{sep}{line}")
        if self._secret_next and code != 334:
            self._secret_next = False
        return code, message


class _RecordingSMTPSSL(_RecordingSMTP):
    """The same over implicit TLS (port 465, RFC 8314)."""

    def __init__(self, server_name: str, context: ssl.SSLContext, **kwargs) -> None:
        self.context = context
        super().__init__(server_name, **kwargs)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.server_name)


#: Lines end with CRLF on the wire (RFC 5321 §2.3.8): servers refuse bare LF, an SMTP-smuggling vector.
_SMTP_POLICY = email.policy.SMTP


def make_message(sender: str, to: str | list[str], subject: str, body: str, *, sender_name: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((sender_name, sender)) if sender_name else sender
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2] or None)
    msg.set_content(body)
    return msg


def submit(sender: str, to: str | list[str], subject: str = "", body: str = "", *, password: str | None = None,
           login: str | None = None, port: int = 587, host: str | None = None, message: EmailMessage | bytes | None = None,
           world: World | None = None, timeout: float = 30.0, helo: str = "poste-etudiant") -> SubmitResult:
    """Send a message as a mail client does: to the MSA (587 with STARTTLS, or 465 with TLS), with AUTH.

    The password is used for the AUTH command and appears nowhere else (the transcript shows ``********``).
    Without ``password``, the lab's stored one for the account is used (see :func:`stored_password`).
    Refusals are results, not exceptions: ``accepted`` is False and ``reply`` says why (e.g. ``553 5.7.1``).
    """
    world = world or current()
    secret = stored_password(login or sender, password, world)
    recipients = [to] if isinstance(to, str) else list(to)
    server_name = host or world.config.mail_host
    address = world.connect_address(server_name, port)
    if message is None:
        data = make_message(sender, recipients, subject, body).as_bytes(policy=_SMTP_POLICY)
    elif isinstance(message, EmailMessage):
        data = message.as_bytes(policy=_SMTP_POLICY)
    else:
        data = message
    context = world.tls_context()
    client: _RecordingSMTP
    try:
        if port == 465:
            client = _RecordingSMTPSSL(server_name, context, local_hostname=helo, timeout=timeout)
        else:
            client = _RecordingSMTP(server_name, local_hostname=helo, timeout=timeout)
        client.connect(*address)
        client.ehlo()
        if port != 465 and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(
            f"Impossible de joindre {server_name}:{port} ({exc}). Le lab est-il démarré ? (labmail.lab.ensure())",
            f"Cannot reach {server_name}:{port} ({exc}). Is the lab running? (labmail.lab.ensure())") from None
    try:
        try:
            client.login(login or sender, secret)
        except smtplib.SMTPAuthenticationError as exc:
            return SubmitResult(False, f"{exc.smtp_code} {_text(exc.smtp_error)}", "\n".join(client.lines))
        except smtplib.SMTPNotSupportedError:
            return SubmitResult(False, tr("le serveur ne propose pas AUTH ici (TLS manquant ?)", "the server offers no AUTH here (TLS missing?)"),
                                "\n".join(client.lines))
        try:
            utf8 = not all(a.isascii() for a in [sender, *recipients]) and client.has_extn("smtputf8")
            refused = client.sendmail(sender, recipients, data, mail_options=["SMTPUTF8"] if utf8 else [])
        except smtplib.SMTPSenderRefused as exc:
            return SubmitResult(False, f"{exc.smtp_code} {_text(exc.smtp_error)}", "\n".join(client.lines))
        except smtplib.SMTPRecipientsRefused as exc:
            rejected = {r: f"{c} {_text(m)}" for r, (c, m) in exc.recipients.items()}
            return SubmitResult(False, next(iter(rejected.values())), "\n".join(client.lines), rejected)
        except smtplib.SMTPDataError as exc:
            return SubmitResult(False, f"{exc.smtp_code} {_text(exc.smtp_error)}", "\n".join(client.lines))
        last = next((line[2:] for line in reversed(client.lines) if line.startswith("S: 250")), "")
        queue = last.rsplit(" ", 1)[-1] if "queued as" in last else None
        return SubmitResult(True, last, "\n".join(client.lines),
                            {r: f"{c} {m.decode(errors='replace')}" for r, (c, m) in refused.items()}, queue)
    finally:
        try:
            client.quit()
        except (smtplib.SMTPException, OSError):
            client.close()


class MailcowAPI:
    """A client of Mailcow's REST API (``/api/v1``, header ``X-API-Key``) — the lab's or a real Mailcow.

    >>> api = MailcowAPI(key=labmail.lab.api_key())                 # doctest: +SKIP
    >>> api.add_mailbox("tintin", "jean.labmail.cloud", getpass())  # doctest: +SKIP
    [{'type': 'success', 'log': [...], 'msg': ['mailbox_added', 'tintin@jean.labmail.cloud']}]

    Mailcow answers HTTP 200 even when a write fails: check each item's ``type`` (``success``, ``danger``,
    ``error``), or use :meth:`raise_for` to turn a failure into an exception.
    """

    def __init__(self, key: str, *, host: str | None = None, world: World | None = None, timeout: float = 15.0) -> None:
        self.world = world or current()
        self.host = host or self.world.config.mail_host
        self._key = key
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"MailcowAPI(host={self.host!r})"  # never the key

    def _call(self, method: str, path: str, payload=None):
        import urllib.error
        import urllib.request

        address = self.world.connect_address(self.host, 443)
        url = f"https://{address[0]}:{address[1]}/api/v1/{path}"
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "X-API-Key": self._key, "Content-Type": "application/json", "Host": self.host, "Accept": "application/json"})
        context = self.world.tls_context()
        if address[0] != self.host:  # the lab's port map: we connect to 127.0.0.1, whose name the certificate also carries
            context.check_hostname = False
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise APIError("Clé d'API refusée (401) : vérifiez la clé (labmail.lab.api_key()).",
                                   "API key refused (401): check the key (labmail.lab.api_key()).") from None
            raise APIError(f"L'API a répondu {exc.code}.", f"The API answered {exc.code}.") from None
        except (OSError, ValueError) as exc:
            raise APIError(f"API injoignable ({exc}).", f"API unreachable ({exc}).") from None

    def get_domain(self, domain: str = "all"):
        return self._call("GET", f"get/domain/{domain}")

    def get_mailbox(self, address: str = "all", domain: str | None = None):
        return self._call("GET", f"get/mailbox/all/{domain}" if address == "all" and domain else f"get/mailbox/{address}")

    def add_mailbox(self, local_part: str, domain: str, password: str, *, name: str = "", quota_mib: int = 3072):
        return self._call("POST", "add/mailbox", {"local_part": local_part, "domain": domain, "name": name,
                                                   "password": password, "password2": password, "quota": quota_mib,
                                                   "active": True, "force_pw_update": False, "tls_enforce_in": False,
                                                   "tls_enforce_out": False, "authsource": "mailcow", "tags": []})
        # the JSON types of Mailcow's API description (booleans; Mailcow reads them with intval()) — checked against
        # the description in tests/test_mailcow_openapi.py

    def delete_mailbox(self, *addresses: str):
        return self._call("POST", "delete/mailbox", list(addresses))

    def get_dkim(self, domain: str):
        return self._call("GET", f"get/dkim/{domain}")

    # -- the instructor's class set-up (Mailcow's admin key) -------------------------------------------------------
    def add_domain(self, domain: str, *, description: str = "", mailboxes: int = 10, quota_mib: int = 10240):
        """Create ``domain`` (Mailcow makes its DKIM key; ``dkim_selector``/``key_size`` ask for ``dkim``, 2048 bits)."""
        return self._call("POST", "add/domain", {
            "domain": domain, "description": description, "aliases": 400, "mailboxes": mailboxes, "defquota": 3072,
            "maxquota": quota_mib, "quota": quota_mib, "active": True, "backupmx": False, "relay_all_recipients": False,
            "rl_value": 10, "rl_frame": "s", "restart_sogo": 1, "tags": [], "dkim_selector": "dkim", "key_size": 2048})

    def add_dkim(self, domain: str, *, selector: str = "dkim", key_size: int = 2048):
        return self._call("POST", "add/dkim", {"domains": domain, "dkim_selector": selector, "key_size": key_size})

    def delete_dkim(self, *domains: str):
        return self._call("POST", "delete/dkim", list(domains))

    def add_domain_admin(self, username: str, password: str, domains: str):
        return self._call("POST", "add/domain-admin", {"username": username, "password": password,
                                                        "password2": password, "domains": domains, "active": 1})

    def get_domain_admins(self):
        return self._call("GET", "get/domain-admin/all")

    @classmethod
    def at(cls, host: str, key: str, *, cafile: str | None = None, timeout: float = 15.0) -> MailcowAPI:
        """A client of the real Mailcow at ``host`` (the system's certificate authorities, or ``cafile``), whatever
        the configured world — for the instructor's ``labmail provision-live --mailcow``."""
        config = Config(world="live", mail_host=host)
        return cls(key, host=host, world=World("live", config, ("127.0.0.1", 53), (), ca_file=cafile), timeout=timeout)

    @staticmethod
    def raise_for(result) -> None:
        """Raise LabmailError if a write answer (a list of {type, msg}) is not a success."""
        items = result if isinstance(result, list) else [result]
        bad = [i for i in items if isinstance(i, dict) and i.get("type") != "success"]
        if bad:
            msg = " ".join(str(m) for m in bad[0].get("msg", []))
            raise APIError(f"Mailcow a refusé : {msg}", f"Mailcow refused: {msg}")


@dataclass(frozen=True)
class POP3Message:
    """A message as POP3 lists it: number, unique id (UIDL), size, and the raw bytes if fetched."""

    number: int
    uid: str
    size: int
    data: bytes | None = field(default=None, repr=False)


def _endpoint(world: World, host: str | None, port: int):
    """(server name, where to connect, TLS context) for a reading client; the certificate is checked against the
    name, except when the world maps it to a loopback address (the lab's certificates carry 127.0.0.1 too)."""
    server_name = host or world.config.mail_host
    where = world.connect_address(server_name, port)
    context = world.tls_context()
    if where[0] != server_name:
        context.check_hostname = False
    return server_name, where, context


def pop3(address: str, *, password: str | None = None, fetch: bool = True, delete: bool = False, port: int = 995,
         host: str | None = None, world: World | None = None, timeout: float = 30.0) -> list[POP3Message]:
    """Read a mailbox as a POP3 client: list (UIDL), optionally fetch (RETR) and delete (DELE, then QUIT).

    ``delete=True`` is a client with "leave messages on server" off: the messages leave the server.
    """
    import poplib

    world = world or current()
    secret = stored_password(address, password, world)
    server_name, address_port, context = _endpoint(world, host, port)
    client: poplib.POP3
    try:
        if port == 995:
            client = poplib.POP3_SSL(address_port[0], address_port[1], timeout=timeout, context=context)
        else:
            client = poplib.POP3(address_port[0], address_port[1], timeout=timeout)
            client.stls(context=context)
    except (OSError, poplib.error_proto) as exc:
        raise MailError(f"POP3 injoignable sur {server_name}:{port} ({exc}).", f"POP3 unreachable at {server_name}:{port} ({exc}).") from None
    try:
        try:
            client.user(address)
            client.pass_(secret)
        except poplib.error_proto as exc:
            raise MailError(f"Connexion POP3 refusée : {exc.args[0].decode(errors='replace')}",
                               f"POP3 login refused: {exc.args[0].decode(errors='replace')}") from None
        sizes = {int(n): int(s) for n, s in (line.split() for line in (x.decode() for x in client.list()[1]))}
        uids = {int(n): u for n, u in (line.split() for line in (x.decode() for x in client.uidl()[1]))}
        out = []
        for number in sorted(sizes):
            data = b"\r\n".join(client.retr(number)[1]) + b"\r\n" if fetch else None
            out.append(POP3Message(number, uids[number], sizes[number], data))
            if delete:
                client.dele(number)
        client.quit()
        return out
    finally:
        try:
            client.close()
        except OSError:
            pass


@dataclass(frozen=True)
class IMAPMessage:
    """A message as an IMAP client sees it: UID, flags, a few headers, and the raw bytes if fetched."""

    uid: int
    flags: tuple[str, ...]
    subject: str
    sender: str
    size: int
    data: bytes | None = field(default=None, repr=False)


def imap_connect(address: str, *, password: str | None = None, port: int = 993, host: str | None = None, world: World | None = None,
                 timeout: float = 30.0, starttls: bool | None = None):
    """A logged-in ``imaplib`` session (993 with TLS, or 143 with STARTTLS), for step-by-step work. On another port,
    ``starttls`` says which (by default: STARTTLS unless the port is 993).

    Use it as a context manager: ``with imap_connect(addr, password=pw) as m: m.select("INBOX")``.
    """
    import imaplib

    world = world or current()
    secret = stored_password(address, password, world)
    server_name, where, context = _endpoint(world, host, port)
    client: imaplib.IMAP4 | None = None
    try:
        if not (starttls if starttls is not None else port != 993):
            client = imaplib.IMAP4_SSL(where[0], where[1], ssl_context=context, timeout=timeout)
        else:
            client = imaplib.IMAP4(where[0], where[1], timeout=timeout)
            client.starttls(ssl_context=context)
        client.login(address, secret)
    except imaplib.IMAP4.error as exc:
        if client is not None:
            client.shutdown()
        raise MailError(f"Connexion IMAP refusée : {exc}", f"IMAP login refused: {exc}") from None
    except OSError as exc:
        raise MailError(f"IMAP injoignable sur {server_name}:{port} ({exc}).", f"IMAP unreachable at {server_name}:{port} ({exc}).") from None
    return client


def _header_text(value: str | None) -> str:
    """A header as a reader shows it: RFC 2047 encoded words decoded, raw UTF-8 (RFC 6532) kept as it is."""
    from email.header import decode_header, make_header

    if not value:
        return ""
    if not value.isascii():
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):  # a malformed encoded word: the header as written
        return value


def imap(address: str, *, password: str | None = None, folder: str = "INBOX", fetch: bool = False, **kwargs) -> list[IMAPMessage]:
    """List a folder over IMAP (without marking anything as read): UID, flags, subject, sender, size."""
    import imaplib

    from .headers import read_message

    client = imap_connect(address, password=password, **kwargs)
    try:
        typ, _ = client.select(f'"{folder}"', readonly=True)
        if typ != "OK":
            raise MailError(f"Dossier IMAP « {folder} » introuvable.", f"IMAP folder \"{folder}\" not found.")
        typ, data = client.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])"
                               if not fetch else "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        out = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, payload = item[0].decode(), item[1]
            uid = int(_field(r"UID (\d+)", meta))
            flags = tuple(_field(r"FLAGS \(([^)]*)\)", meta).split())
            size = int(_field(r"RFC822\.SIZE (\d+)", meta))
            headers = read_message(payload)
            out.append(IMAPMessage(uid, flags, _header_text(headers.get("Subject")), _header_text(headers.get("From")),
                                   size, payload if fetch else None))
        return out
    except (imaplib.IMAP4.error, OSError) as exc:  # the server dropped or refused the session
        raise MailError(f"La session IMAP avec {address} a été interrompue ({exc}) : réessayez ; si cela se "
                           "reproduit, regardez le journal du lab (labmail lab status).",
                           f"The IMAP session of {address} was interrupted ({exc}): try again; if it happens again, "
                           "look at the lab's log (labmail lab status).") from None
    finally:
        try:
            client.logout()
        except Exception:
            pass


#: Where pasted message sources are kept: beside the notebook, so that they travel with it (nbgrader submits the
#: assignment's folder, and autograde re-executes the notebook there).
PASTE_FOLDER = "messages-colles"
_PASTE_LIMIT = 10 * 1024 * 1024


def save_pasted(source: str | bytes, *, folder: str = "INBOX", address: str | None = None,
                directory: str | Path | None = None) -> Path:
    """Keep the source of a message received in a real mailbox, pasted by the student (Gmail: ⋮ > « Afficher
    l'original » ; Outlook : … > Afficher > « Afficher la source du message »), for :func:`find` and the checks.

    ``folder`` is where it was found: ``"INBOX"`` or ``"Junk"`` (the spam folder). The source must be the whole
    message as received — with the receiver's ``Received`` and ``Authentication-Results`` — else a clear error;
    line ends become CRLF; 8-bit text is kept (UTF-8). Returns the file written (``messages-colles/…eml``)."""
    import secrets
    import time

    from ._files import atomic_write_bytes, atomic_write_text
    from .headers import read_message

    if folder not in ("INBOX", "Junk"):
        raise UsageError(f"Dossier « {folder} » : « INBOX » (boîte de réception) ou « Junk » (spam).",
                         f"Folder \"{folder}\": \"INBOX\" (inbox) or \"Junk\" (spam).")
    data = source.encode("utf-8", "surrogateescape") if isinstance(source, str) else bytes(source)
    if len(data) > _PASTE_LIMIT:
        raise UsageError(f"Source de {len(data) // 1024 // 1024} Mio : au plus 10 Mio (retirez les pièces jointes du "
                         "message avant de le copier).", f"A {len(data) // 1024 // 1024} MiB source: 10 MiB at most "
                         "(remove the attachments before copying).")
    data = data.lstrip(b"\r\n \t").replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    headers = read_message(data)
    if not headers.get_all("Received") or not headers.get_all("Authentication-Results"):
        raise UsageError("Ce n'est pas la source complète d'un message reçu (il manque Received ou "
                         "Authentication-Results) : dans Gmail, ⋮ > « Afficher l'original » > « Copier dans le "
                         "presse-papiers » ; dans Outlook, … > Afficher > « Afficher la source du message » ; collez tout.",
                         "This is not the whole source of a received message (Received or Authentication-Results is "
                         "missing): in Gmail, ⋮ > \"Show original\" > \"Copy to clipboard\"; in Outlook, … > View > "
                         "\"View message source\"; paste all of it.")
    base = Path(directory) if directory is not None else Path.cwd() / PASTE_FOLDER
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{secrets.token_hex(2)}"
    path = base / f"{stamp}.eml"
    atomic_write_text(base / f"{stamp}.json", json.dumps({"folder": folder, "address": address, "saved": time.time()}) + "\n",
                      mode=0o644)
    atomic_write_bytes(path, data, mode=0o644)
    return path


def pasted(directory: str | Path | None = None) -> list[tuple[str, str | None, bytes]]:
    """The pasted messages kept beside the notebook: ``[(folder, address, source), …]``, oldest first."""
    base = Path(directory) if directory is not None else Path.cwd() / PASTE_FOLDER
    out: list[tuple[str, str | None, bytes]] = []
    for path in sorted(base.glob("*.eml")):
        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        meta = meta if isinstance(meta, dict) else {}
        try:
            data = path.read_bytes()
        except OSError:
            continue
        folder = "Junk" if meta.get("folder") == "Junk" else "INBOX"
        address = str(meta["address"]) if isinstance(meta.get("address"), str) else None
        out.append((folder, address, data))
    return out


def _special_folders(client) -> dict[str, str]:
    """{"INBOX": name, "Junk": name} of an IMAP account: the spam folder is the one LIST marks ``\\Junk``
    (RFC 6154 SPECIAL-USE: Gmail's ``[Gmail]/Spam``, Microsoft 365's ``Junk Email`` / ``Courrier indésirable``),
    or else the one whose name says so."""
    import re

    typ, data = client.list('""', '"*"')
    folders: dict[str, str] = {"INBOX": "INBOX"}
    if typ != "OK":
        return folders
    named = []
    for line in data:
        if not isinstance(line, bytes):
            continue
        match = re.match(rb'\((?P<attrs>[^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (?P<name>.+)$', line)
        if match is None:
            continue
        name = match["name"].decode("utf-8", "replace").strip()
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\") if name.startswith('"') else name
        if b"\\junk" in match["attrs"].lower():
            folders["Junk"] = name
        elif re.search(r"junk|spam|ind&AOk-sirable|ind\u00e9sirable", name, re.I):
            named.append(name)
    if "Junk" not in folders and named:
        folders["Junk"] = named[0]
    return folders


def imap_search(address: str, subject: str, *, password: str | None = None, host: str | None = None, port: int = 993,
                since: float | None = None, world: World | None = None, timeout: float = 30.0,
                newest: int = 10) -> list[tuple[str, bytes]]:
    """Find the messages whose Subject is ``subject`` in the inbox and the spam folder of any IMAP account (a real
    Gmail or Microsoft 365 mailbox too): ``[(folder, source), …]`` with folder ``"INBOX"`` or ``"Junk"``, oldest
    first. The server searches (``UID SEARCH SUBJECT``, ``SINCE`` the day of ``since``), only the ``newest`` matches
    of each folder are fetched (``BODY.PEEK[]``: nothing is marked as read), and the Subject must then be exactly
    ``subject``. TLS from the first byte (RFC 8314), whatever the port. For Gmail, the password is an *app password*
    (Google account > Security), typed with ``getpass()``.
    """
    import imaplib
    import time as _time

    from .headers import read_message

    client = imap_connect(address, password=password, port=port, host=host, world=world, timeout=timeout, starttls=False)
    found: list[tuple[str, bytes]] = []
    try:
        for label, folder in _special_folders(client).items():
            typ, _ = client.select('"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"', readonly=True)
            if typ != "OK":
                continue
            criteria: list[str] = []
            if since is not None:
                criteria += ["SINCE", _time.strftime("%d-%b-%Y", _time.gmtime(since - 86400))]  # a day early: zones
            if subject.isascii():
                typ, data = client.uid("SEARCH", *criteria, "SUBJECT", '"' + subject.replace("\\", "\\\\").replace('"', '\\"') + '"')
            else:  # RFC 3501 §6.4.4: a non-ASCII key is sent as a literal, with its charset
                client.literal = subject.encode("utf-8")
                typ, data = client.uid("SEARCH", "CHARSET", "UTF-8", *criteria, "SUBJECT")
            uids = data[0].split()[-newest:] if typ == "OK" and data and data[0] else []
            for uid in uids:
                typ, fetched = client.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
                for item in fetched or []:
                    if isinstance(item, tuple) and _header_text(read_message(item[1]).get("Subject")) == subject:
                        found.append((label, item[1]))
        return found
    except (imaplib.IMAP4.error, OSError) as exc:
        raise MailError(f"La session IMAP avec {address} a été interrompue ({exc}) : réessayez.",
                        f"The IMAP session of {address} was interrupted ({exc}): try again.") from None
    finally:
        try:
            client.logout()
        except Exception:
            pass


@dataclass(frozen=True)
class Probe:
    """What a mail client finds on connecting to ``host:port``, before logging in: which protocol answers, and how
    the connection is secured — ``"SSL/TLS"`` (TLS from the first byte, "implicit TLS", RFC 8314), ``"STARTTLS"``
    (a clear connection the client upgrades; RFC 3207, 2595, 9051) or ``"aucune"``."""

    host: str
    port: int
    protocol: str | None  # "SMTP", "IMAP", "POP3" or None (nothing recognisable)
    security: str  # "SSL/TLS", "STARTTLS", "aucune"
    greeting: str
    capabilities: tuple[str, ...]
    auth_in_clear: tuple[str, ...] = ()  # login methods offered before TLS (should be none)
    tls_version: str | None = None

    @property
    def explanation(self) -> str:
        """One sentence on what this means for a user's password."""
        if self.protocol is None:
            return tr("aucun service de messagerie ne répond ici (ni SMTP, ni IMAP, ni POP3)",
                      "no mail service answers here (neither SMTP, IMAP nor POP3)")
        if self.security == "SSL/TLS":
            return tr(f"TLS dès la connexion ({self.tls_version}) : tout, mot de passe compris, est chiffré (RFC 8314 "
                      "recommande ce mode aux clients).", f"TLS from the start ({self.tls_version}): everything, the "
                      "password included, is encrypted (RFC 8314 recommends this mode to clients).")
        if self.security == "STARTTLS":
            clear = (tr(f" ⚠ mais {', '.join(self.auth_in_clear)} proposé avant TLS", f" ⚠ but {', '.join(self.auth_in_clear)}"
                        " offered before TLS") if self.auth_in_clear else
                     tr(" ; aucune authentification n'est proposée avant", "; no login is offered before it"))
            if self.protocol == "SMTP" and self.port == 25:
                return tr("connexion en clair, STARTTLS proposé (opportuniste, entre serveurs) ; pas d'authentification "
                          "sur ce port", "clear connection, STARTTLS offered (opportunistic, between servers); no login "
                          "on this port")
            return tr("connexion en clair, puis passage en TLS (STARTTLS) à la demande du client", "clear connection, "
                      "then upgraded to TLS (STARTTLS) at the client's request") + clear
        return tr("aucun chiffrement proposé : le mot de passe circulerait en clair", "no encryption offered: the "
                  "password would travel in clear")

    def to_dict(self) -> dict:
        return {"port": self.port, "protocole": self.protocol, "sécurité": self.security,
                "AUTH avant TLS": ", ".join(self.auth_in_clear) or "—", "explication": self.explanation}

    def __str__(self) -> str:
        return f"{self.host}:{self.port} — {self.protocol or '?'}, {self.security} : {self.explanation}"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))


def _lines(stream, until) -> list[str]:
    """Read CRLF lines from a file-like socket until ``until(line)`` is true (or the server closes)."""
    out: list[str] = []
    while len(out) < 200:
        raw = stream.readline(4096)
        if not raw:
            break
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        out.append(line)
        if until(line):
            break
    return out


def _converse(stream, send) -> tuple[str | None, str, list[str]]:
    """Read the greeting, recognise the protocol, ask for its capabilities; (protocol, greeting, capabilities)."""
    greeting = _lines(stream, lambda line: not line.startswith("220-"))
    first = greeting[0] if greeting else ""
    if first.startswith("220"):
        send(b"EHLO poste-etudiant\r\n")
        caps = [line[4:] for line in _lines(stream, lambda line: not line.startswith("250-")) if line.startswith("250")][1:]
        send(b"QUIT\r\n")
        return "SMTP", first, caps
    if first.startswith("* OK"):
        send(b"p1 CAPABILITY\r\n")
        caps = [word for line in _lines(stream, lambda line: line.startswith("p1 ")) if line.startswith("* CAPABILITY")
                for word in line.split()[2:]]
        send(b"p2 LOGOUT\r\n")
        return "IMAP", first, caps
    if first.startswith("+OK"):
        send(b"CAPA\r\n")
        lines = _lines(stream, lambda line: line == "." or line.startswith("-ERR"))
        caps = [line for line in lines[1:] if line != "."] if lines and lines[0].startswith("+OK") else []
        send(b"QUIT\r\n")
        return "POP3", first, caps
    return None, first, []


def _auth_offered(protocol: str | None, caps: list[str]) -> list[str]:
    upper = [c.upper() for c in caps]
    if protocol == "SMTP":
        return [m for c in upper if c.startswith("AUTH") for m in c.replace("=", " ").split()[1:]]
    if protocol == "IMAP":
        found = [c.split("=", 1)[1] for c in upper if c.startswith("AUTH=")]
        return found + ([] if "LOGINDISABLED" in upper else ["LOGIN"])
    if protocol == "POP3":
        sasl = [m for c in upper if c.startswith("SASL") for m in c.split()[1:]]
        return sasl + (["USER/PASS"] if "USER" in upper else [])
    return []


def probe(port: int, host: str | None = None, *, world: World | None = None, timeout: float = 10.0) -> Probe:
    """Connect to ``host:port`` (default: the school's mail server) as a client would, without logging in: is it
    TLS from the first byte, or a clear connection that offers STARTTLS? Which protocol answers, and does it offer
    to log in before TLS? The answer of the real server — the way to fill in a client's security settings.

    >>> probe(993)                  # doctest: +SKIP
    mailcow.labmail.cloud:993 — IMAP, SSL/TLS : TLS dès la connexion (TLSv1.3) …
    >>> probe(587).security         # doctest: +SKIP
    'STARTTLS'
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise UsageError(f"Port {port!r} impossible : un nombre de 1 à 65535, par exemple 993.",
                           f"Port {port!r} is not possible: a number from 1 to 65535, for example 993.")
    world = world or current()
    server_name, where, context = _endpoint(world, host, port)

    def connect() -> socket.socket:
        try:
            return socket.create_connection(where, timeout=timeout)
        except OSError as exc:
            raise MailError(f"Rien ne répond sur {server_name}:{port} ({exc}).",
                               f"Nothing answers at {server_name}:{port} ({exc}).") from None

    raw = connect()
    try:
        wrapped = context.wrap_socket(raw, server_hostname=server_name)
    except (ssl.SSLError, OSError):  # the server spoke first, in clear: not implicit TLS
        raw.close()
        wrapped = None
    def talk(sock) -> tuple[str | None, str, list[str]]:
        try:
            with sock.makefile("rb") as stream:
                return _converse(stream, sock.sendall)
        except OSError:  # silent (a web server waits for the client), or closed: not a mail service
            return None, "", []

    if wrapped is not None:
        with wrapped:
            protocol, greeting, caps = talk(wrapped)
            return Probe(server_name, port, protocol, "SSL/TLS", greeting, tuple(caps), (), wrapped.version())
    with connect() as plain:
        protocol, greeting, caps = talk(plain)
    upper = {c.upper().split()[0] for c in caps if c.split()}
    security = "STARTTLS" if upper & {"STARTTLS", "STLS"} else "aucune"
    return Probe(server_name, port, protocol, security, greeting, tuple(caps), tuple(_auth_offered(protocol, caps)))
