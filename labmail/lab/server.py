"""The lab process: one background process per user, holding the whole local world.

Started by ``labmail lab start`` (or :func:`labmail.lab.ensure`) as
``python -m labmail.lab serve --state DIR``. It owns the state folder:

=====================  ==========================================================
``world.json``         parent domain, mail host, students, chosen ports
``zones/*.zone``       the DNS zones (BIND master files, atomic writes)
``keys/tsig.json``     TSIG keys and the zone each one may change (0600)
``keys/<zone>.key``    the student's key in BIND syntax, for ``nsupdate -k``
``keys/dkim/*.pem``    DKIM private keys (school domains and providers)
``run.json``           pid, ports and control socket of the running process
``lab.lock``           held (flock) by the running process: one lab per folder
``lab.log``            what the lab did (changes, refusals); never a secret
=====================  ==========================================================

Requests from the CLI and notebooks (status, provision a student, stop)
come over a Unix socket that only the user can open. This module must start
fast: it imports no pandas, matplotlib or ipywidgets.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import re
import os
import signal
import time
import sys
import tempfile
import threading
from pathlib import Path

import dns.name
import dns.rdata

from .. import __version__
from .._files import atomic_write_bytes, atomic_write_text
from ..errors import LabError
from ..state import PROTOCOL, Layout
from . import world as _world
from .dnsserver import DNSEngine, View, start_transports
from .zones import KeyStore, ZoneStore, bind_key_file

log = logging.getLogger("labmail.lab")

LISTEN_HOST = "127.0.0.1"


def control_socket_path(state_dir: Path) -> Path:
    """Where the control socket lives (in the state folder unless its path is too long for AF_UNIX)."""
    path = Path(state_dir) / "control.sock"
    if len(str(path)) < 100:
        return path
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"labmail-{os.getuid()}-{digest}.sock"


class Lab:
    """The state folder and what lives in it (zones, keys, world description)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.layout = Layout(self.state_dir)
        self.world_path = self.layout.world_file
        self.zones = ZoneStore(self.layout.zones_dir)
        self.keys = KeyStore(self.layout.tsig_file)
        self.world: dict = {}
        self.student_origins: set[dns.name.Name] = set()
        from .mailstore import MailStore

        self.store = MailStore(self.layout.mail_dir)
        self.on_student = None  # called with each new student's domain (the mail services listen to it)
        self.listen_changed = False  # a new address given at this start: world.json records it once the lab listens
        #: zones the lab's resolver asks another server for (``labmail lab start --forward``): a real school's DNS
        self.forwards: dict[dns.name.Name, tuple[str, int]] = {}
        self._prepare_lock = threading.RLock()

    def views(self) -> dict[str, View]:
        """The three DNS servers of the lab: students' resolver, registry (ns1), students' zones (dns)."""
        students = self.student_origins
        return {
            "resolver": View("resolver", None, authoritative=False),
            "registry": View("registry", lambda origin: origin not in students),
            "students": View("students", lambda origin: origin in students, accepts_changes=True),
        }

    def engine(self, role: str) -> DNSEngine:
        return DNSEngine(self.zones, self.keys, self.views()[role], forwards=self.forwards)

    @property
    def spec(self) -> _world.WorldSpec:
        return _world.WorldSpec(self.world["parent_domain"], self.world["mail_host"], tuple(self.world["students"]))

    def open(self, parent_domain: str, mail_host: str, listen: str | None = None) -> None:
        """Load the state folder, creating the step-0 world on first use. ``listen``: the address every service
        listens on (kept for the next starts; loopback by default)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        if self.world_path.exists():
            self.world = json.loads(self.world_path.read_text(encoding="utf-8"))
            self.zones.load()
            self.keys.load()
            if listen is not None and listen != self.listen:
                self.world["listen"] = listen  # written once the lab listens there (LabProcess.run)
                self.listen_changed = True
        else:
            self.world = {"parent_domain": parent_domain, "mail_host": mail_host, "students": [], "ports": {},
                          "created": _now(), "listen": listen or LISTEN_HOST}
            self._create_world()
        self.store.load()
        self.student_origins.update(dns.name.from_text(self.spec.student_zone(s)) for s in self.world["students"])

    @property
    def listen(self) -> str:
        """Where every service of the lab listens: loopback, or the class lab's address (``lab start --adresse``)."""
        return str(self.world.get("listen") or LISTEN_HOST)

    def save_world(self) -> None:
        atomic_write_text(self.world_path, json.dumps(self.world, indent=2) + "\n", mode=0o600)

    def _dkim_key(self, domain: str, selector: str) -> str:
        """Create (once) a 2048-bit DKIM key for ``domain``; return its record text."""
        from ..dkim import generate_key

        existing = self.layout.dkim_record(domain, selector)
        if existing.exists():
            return existing.read_text(encoding="utf-8").strip()

        key = generate_key(2048)
        atomic_write_bytes(self.layout.dkim_private(domain, selector), key.private_pem)
        atomic_write_text(self.layout.dkim_record(domain, selector), key.record + "\n", mode=0o644)
        return key.record

    def _create_world(self) -> None:
        spec = self.spec
        dkim = {
            f"{_world.GMAIL_SELECTOR}._domainkey.gmail.test": self._dkim_key("gmail.test", _world.GMAIL_SELECTOR),
            f"{_world.OUTLOOK_SELECTOR}._domainkey.outlook.test": self._dkim_key("outlook.test", _world.OUTLOOK_SELECTOR),
        }
        for origin, text in _world.build_zones(spec, _serial(), dkim).items():
            self.zones.add_zone_text(origin, text)
        self.keys.load()
        self.save_world()

    def prepare(self, labels: list[str]) -> None:
        """The slow part of provisioning (DKIM keys, password hashes, API keys): no zone is touched, so it may run
        in a worker thread while the DNS keeps answering. :meth:`provision` then finds it done."""
        from ..config import check_label
        from .apikeys import ensure_domain_key

        with self._prepare_lock:
            for label in labels:
                check_label(label)
                domain = self.spec.student_zone(label).rstrip(".")
                self._dkim_key(domain, _world.SCHOOL_SELECTOR)
                ensure_domain_key(self.state_dir, domain)
                self._provider_mailboxes(label)

    def provision(self, labels: list[str]) -> list[str]:
        """Give each new student (DNS label) a delegated zone, a TSIG key and a DKIM key; return the new ones.

        Idempotent: students already provisioned are left as they are.
        """
        from ..config import check_label

        new = []
        for label in labels:
            check_label(label)
            if label in self.world["students"]:
                continue
            spec = self.spec
            origin = spec.student_zone(label)
            domain = origin.rstrip(".")
            entry = self.keys.create(origin, [origin])
            atomic_write_text(self.layout.zone_key(domain), bind_key_file(entry), mode=0o600)
            self._dkim_key(domain, _world.SCHOOL_SELECTOR)
            from .apikeys import ensure_domain_key

            ensure_domain_key(self.state_dir, domain)  # the student's domain-admin API key (Mailcow's step 2)
            # one step for the DNS, which answers from other threads meanwhile: the zone, its delegation and the
            # server that serves it appear together (the registry answered for the new zone itself for a moment)
            with self.zones.lock:
                self.zones.add_zone_text(origin, _world.student_zone_text(spec, label, _serial()))
                self._delegate(origin)
                self.student_origins.add(dns.name.from_text(origin))
                self.zones.touch()
            self._provider_mailboxes(label)
            self.world["students"].append(label)
            self.save_world()
            if self.on_student is not None:
                self.on_student(domain)
            new.append(label)
            log.info("provisioned student zone %s", origin)
        return new

    def _provider_mailboxes(self, label: str) -> None:
        """The student's own mailboxes at the providers (``prenom@gmail.test``, ``prenom@outlook.test``).

        Their passwords are generated here and kept in ``keys/provider-passwords.json`` (0600), never logged.
        """
        import secrets

        path = self.layout.provider_passwords
        try:
            passwords = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            passwords = {}
        for domain in ("gmail.test", "outlook.test"):
            address = f"{label}@{domain}"
            if address in self.store.accounts:
                continue
            password = secrets.token_urlsafe(12)
            self.store.add_mailbox(address, password, name=label)
            passwords[address] = password
        atomic_write_text(path, json.dumps(passwords, indent=2) + "\n", mode=0o600)

    def reset_course(self) -> None:
        """Back to the start of the course (the lab stopped), keeping what is not course state: the ports, the class
        (students, TSIG, DKIM and API keys, provider mailboxes and their passwords, class-credentials.csv) and the lab
        CA. Each student zone holds its SOA and NS again, its serial moved forward — never back, or secondaries and
        caches would keep the old zone (RFC 1982); the mailboxes of the students' domains go, with their mail; the
        students' provider mailboxes are emptied; the queue, refusal records, report state and course passwords go."""
        import shutil

        spec = self.spec
        domains = set()
        for label in self.world["students"]:
            origin = spec.student_zone(label)
            domains.add(origin.rstrip("."))
            zone = self.zones.zones.get(dns.name.from_text(origin))
            soa = zone.get_rdataset(zone.origin, "SOA") if zone is not None else None
            old = soa[0].serial if soa else 0
            self.zones.add_zone_text(origin, _world.student_zone_text(spec, label, max(_serial(), old + 1)))
        for address, account in list(self.store.accounts.items()):
            if account.domain in domains:
                self.store.delete_mailbox(address)
            if account.domain in domains or account.domain in ("gmail.test", "outlook.test"):
                shutil.rmtree(self.store._base(address), ignore_errors=True)  # noqa: SLF001 - the store's own folder
        for domain in domains:
            shutil.rmtree(self.store.root / domain, ignore_errors=True)
        for folder in (self.layout.queue_dir, self.layout.rejected_dir):
            shutil.rmtree(folder, ignore_errors=True)
        for path in (self.layout.dmarc_reports_marker, self.layout.course_passwords):
            path.unlink(missing_ok=True)
        log.info("course reset: %d student zone(s) back to step 0", len(domains))

    def _delegate(self, origin: str) -> None:
        parent = dns.name.from_text(self.world["parent_domain"])
        zone = self.zones.zones[parent]
        child = dns.name.from_text(origin)
        with self.zones.lock:  # the DNS's UDP threads read the zone meanwhile
            with zone.writer() as txn:
                txn.replace(child, 3600, dns.rdata.from_text("IN", "NS", self.spec.student_ns_host + "."))
                txn.update_serial(name=parent)
            self.zones.committed(parent)


def _serial() -> int:
    return int(_dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d") + "01")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class LabProcess:
    """The running lab: DNS transports, control socket, lifecycle."""

    ROLES = ("resolver", "registry", "students")

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.engines = {role: lab.engine(role) for role in self.ROLES}
        self.stopping = asyncio.Event()
        self.ports: dict[str, int] = {}
        self.servers: list = []
        self.control_path = control_socket_path(lab.state_dir)
        self.started = _now()
        self.mail = None
        self.ca = None
        self.executor = None
        self.web_runner = None

    async def _bind(self, role: str, port: int, required: bool) -> None:
        try:
            servers, self.ports[role] = await start_transports(self.engines[role], self.lab.listen, port)
        except OSError as exc:
            if required or not port:
                raise LabError(
                    f"Le port DNS {port} est déjà pris ({exc}). Choisissez-en un autre (dns_port dans la configuration) "
                    "ou mettez dns_port = 0 pour un port automatique.",
                    f"DNS port {port} is already in use ({exc}). Choose another (dns_port in the configuration) "
                    "or set dns_port = 0 for an automatic port.",
                ) from None
            servers, self.ports[role] = await start_transports(self.engines[role], self.lab.listen, 0)
        self.servers += servers

    async def run(self, preferred_port: int) -> None:
        previous = self.lab.world.get("ports", {})
        for role in self.ROLES:
            wanted = preferred_port if (role == "resolver" and preferred_port) else int(previous.get(role) or 0)
            await self._bind(role, wanted, required=bool(role == "resolver" and preferred_port))
        await self._start_mail()
        if previous != self.ports or self.lab.listen_changed:
            self.lab.world["ports"] = dict(self.ports)
            self.lab.save_world()
        try:
            self.control_path.unlink()
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o077)
        try:
            control = await asyncio.start_unix_server(self._control_client, path=str(self.control_path))
        finally:
            os.umask(old_umask)
        self.servers.append(control)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        atomic_write_text(self.lab.layout.run_file, json.dumps(self.status(), indent=2) + "\n", mode=0o600)
        log.info("lab started: DNS resolver %s:%d, registry %d, students %d (UDP+TCP), pid %d", self.lab.listen,
                 self.ports["resolver"], self.ports["registry"], self.ports["students"], os.getpid())
        await self.stopping.wait()
        log.info("lab stopping")
        if self.mail is not None:
            await self.mail.stop()
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        for server in self.servers:
            server.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        for path in (self.lab.layout.run_file, self.control_path):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    async def _start_mail(self) -> None:
        """The SMTP services (after DNS, so that DNS answers from the first instant)."""
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="labmail-mail")
        loop = asyncio.get_running_loop()

        def prepare():  # the slow part (imports, certificates) off the loop: DNS keeps answering meanwhile
            from . import imap, web  # noqa: F401  (aiohttp's and Twisted's imports are slow: done here, off the loop)
            from .smtp import MailServices
            from .tls import LabCA

            ca = LabCA(self.lab.state_dir).load_or_create(self.lab.listen)
            mail = MailServices(self.lab, ca, self.lab.store, (self.lab.listen, self.ports["resolver"]), self.executor)
            mail.prepare_tls()
            return ca, mail

        self.ca, self.mail = await loop.run_in_executor(self.executor, prepare)
        self.mail.use_local_dns(self.engines["resolver"])
        self.lab.on_student = self.mail.add_school_domain
        previous = {k[5:]: v for k, v in self.lab.world.get("ports", {}).items() if k.startswith("mail:")}
        for key, port in (await self.mail.start(previous)).items():
            self.ports["mail:" + key] = port
        from .web import start_web

        self.web_runner, self.ports["mail:school:443"] = await start_web(self.mail, self.ca, int(previous.get("school:443") or 0))
        self.mail.ports["school:443"] = self.ports["mail:school:443"]
        # not awaited, and a moment later: the first clients (a start-up check, a notebook) are served first
        loop.call_later(0.5, self._warm_up)

    def _warm_up(self) -> None:
        if self.stopping.is_set() or self.executor is None or self.mail is None:
            return  # stopped within the first half second: nothing to prepare
        try:
            asyncio.get_running_loop().run_in_executor(self.executor, self.mail.warm_up)
        except RuntimeError:  # the executor is shutting down
            pass

    def status(self) -> dict:
        roles = _world.dns_server_roles(self.lab.spec)

        return {
            "pid": os.getpid(),
            "protocol": PROTOCOL,
            "version": __version__,
            "started": self.started,
            "host": self.lab.listen,
            "ports": dict(self.ports),
            "dns_servers": {addr: self.ports[role] for addr, role in roles.items()},
            "endpoints": self.mail.endpoints() if self.mail is not None else {},
            "ca": str(self.ca.ca_path) if self.ca is not None else None,
            "control": str(self.control_path),
            "parent_domain": self.lab.world["parent_domain"],
            "mail_host": self.lab.world["mail_host"],
            "students": list(self.lab.world["students"]),
            "zones": sorted(o.to_text() for o in self.lab.zones.zones),
        }

    async def _control_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            request = json.loads(line or b"{}")
            reply = await self._control(request)
        except LabError as exc:
            reply = {"ok": False, "error": {"fr": exc.text.fr, "en": exc.text.en}}
        except Exception as exc:  # bad JSON, bad field types…
            log.warning("bad control request: %s", exc)
            reply = {"ok": False, "error": {"fr": f"requête invalide : {exc}", "en": f"invalid request: {exc}"}}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def _control(self, request: dict) -> dict:
        op = request.get("op")
        loop = asyncio.get_running_loop()
        if op in ("ping", "status"):
            return {"ok": True, "status": self.status()}
        if op == "provision":
            from ..errors import LabmailError

            labels = [str(s) for s in request.get("students", [])]
            try:
                fresh = [label for label in labels if label not in self.lab.world["students"]]
                if fresh and self.executor is not None:
                    await loop.run_in_executor(self.executor, self.lab.prepare, fresh)  # keys and hashes off the loop
                new = self.lab.provision(labels)
            except LabmailError as exc:
                return {"ok": False, "error": {"fr": exc.text.fr, "en": exc.text.en}}
            return {"ok": True, "new": new, "status": self.status()}
        if op == "stop":
            loop.call_soon(self.stopping.set)
            return {"ok": True}
        if op == "add_mailbox":
            address = str(request.get("address", "")).lower()
            if address.rpartition("@")[2] not in self.mail.hosts["school"].domains:
                raise LabError(f"Le domaine de {address} n'est pas hébergé par {self.lab.world['mail_host']}.",
                               f"The domain of {address} is not hosted by {self.lab.world['mail_host']}.")
            pool = self.mail.auth_executor if self.mail is not None else self.executor
            account = await loop.run_in_executor(pool, lambda: self.lab.store.add_mailbox(
                address, str(request.get("password", "")), name=str(request.get("name", ""))))
            log.info("mailbox %s created", account.address)
            return {"ok": True, "mailbox": account.public()}
        if op == "spoof":
            status, text = await loop.run_in_executor(self.executor, lambda: self.mail.spoof(
                str(request["mail_from"]), str(request["header_from"]), str(request["rcpt"]),
                str(request.get("subject", "")), str(request.get("body", ""))))
            return {"ok": True, "status": status, "reply": text}
        if op == "dmarc_reports":
            fmt = str(request.get("format", "7489"))
            sent = await loop.run_in_executor(self.executor, lambda: self.mail.dmarc_reports(fmt))
            return {"ok": True, "reports": sent}
        return {"ok": False, "error": {"fr": f"opération inconnue {op!r}", "en": f"unknown operation {op!r}"}}


def _acquire_lock(state_dir: Path):
    state_dir.mkdir(parents=True, exist_ok=True)
    fh = open(Layout(state_dir).lock_file, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class _SafeRecords(logging.Filter):
    """A log line is one line, for reading: what a client sent (a login name, a query parameter, a host name) cannot
    start a forged line nor drive the teacher's terminal — control characters are written ``\\x0a``, as Postfix's
    ``printable()`` and Dovecot's ``str_sanitize()`` neutralise them — and a record's text (a 64 KB TXT value) is cut
    at :data:`LOG_LINE` characters, with how much was left out. Tracebacks are kept whole."""

    LOG_LINE = 2000

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to logging's own handling
            return True
        safe = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else "\\ufffd", text)
        if len(safe) > self.LOG_LINE:
            safe = f"{safe[:self.LOG_LINE]}… [{len(safe) - self.LOG_LINE} caractères de plus]"
        if safe != text:
            record.msg, record.args = safe, None
        return True


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a malformed HTTP request (it answers 400) as an ERROR with a traceback: log it as what it is,
    a refused request, on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            # the reason only: aiohttp's message quotes the offending header, which may be an API key
            record.msg, record.args = "bad HTTP request refused (%s): %s", (error.code, type(error).__name__)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class _AcceptErrorFilter(logging.Filter):
    """asyncio logs every failed accept() (no descriptor left) with a traceback, per listener, every second: one
    line per 10 s is enough to say it (the connection budget, labmail.lab.limits, keeps it from happening)."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -1e9
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "out of system resource" not in text and "EMFILE" not in text:  # asyncio's words, and Twisted's
            return True
        now = time.monotonic()
        if now - self._last < 10:
            self._dropped += 1
            return False
        record.msg, record.args = "accept() failed: no file descriptor left (%d similar lines dropped)", (self._dropped,)
        record.exc_info, record.exc_text = None, None
        self._last, self._dropped = now, 0
        return True


class _SessionErrorFilter(logging.Filter):
    """aiosmtpd logs a client that vanishes mid-session (during a TLS handshake, say) as an ERROR with a traceback:
    log it on one line, as the ordinary event it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        import ssl

        from aiosmtpd.smtp import TLSSetupException

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (TLSSetupException, ConnectionError, ssl.SSLError, TimeoutError)):
            cause = error.__cause__ or error
            record.msg, record.args = "SMTP session ended by the client: %s %s", (type(cause).__name__, str(cause)[:120])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def serve(state_dir: Path, *, parent_domain: str, mail_host: str, students: list[str], dns_port: int,
          forwards: dict[str, tuple[str, int]] | None = None, listen: str | None = None) -> int:
    """Run the lab in this process until SIGTERM/SIGINT or a ``stop`` request."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_SafeRecords())
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    logging.getLogger("asyncio").addFilter(_AcceptErrorFilter())
    logging.getLogger("labmail.lab.twisted").addFilter(_AcceptErrorFilter())
    logging.getLogger("aiohttp.server").addFilter(_BadRequestFilter())
    logging.getLogger("mail.log").addFilter(_SessionErrorFilter())
    from .limits import budget, raise_open_files_limit

    open_files = raise_open_files_limit()
    log.info("open files: %d; connection budget: %d", open_files, budget().limit)
    if budget().limit < 1000:
        log.warning("low open-files limit (%d): the lab takes %d connections at most; raise 'ulimit -Hn' for a class",
                    open_files, budget().limit)
    lock = _acquire_lock(state_dir)
    if lock is None:
        log.error("another lab is already running on %s", state_dir)
        return 3
    try:
        lab = Lab(state_dir)
        lab.open(parent_domain, mail_host, listen)
        lab.forwards.update({dns.name.from_text(zone): server for zone, server in (forwards or {}).items()})
        if students:
            lab.provision(students)
        asyncio.run(LabProcess(lab).run(dns_port))
    except LabError as exc:
        log.error("%s", exc.message("en"))
        print(exc.message("fr"), file=sys.stderr)
        return 2
    except OSError as exc:  # an address that is not this machine's, a port taken between two starts…
        log.error("cannot listen on %s: %s", listen or "the lab's address", exc.strerror or exc)
        print(f"Le lab ne peut pas écouter sur {listen or 'son adresse'} ({exc.strerror or exc}) : donnez une adresse de "
              "cette machine (« ip -br addr »), ou « labmail lab start --adresse 127.0.0.1 ».", file=sys.stderr)
        return 2
    finally:
        lock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labmail.lab")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the lab in the foreground")
    run.add_argument("--state", required=True, type=Path)
    run.add_argument("--parent-domain", default="labmail.cloud")
    run.add_argument("--mail-host", default="mailcow.labmail.cloud")
    run.add_argument("--student", action="append", default=[])
    run.add_argument("--dns-port", type=int, default=0)
    run.add_argument("--forward", action="append", default=[], help="ZONE=HOST:PORT, a zone served by another server")
    run.add_argument("--listen", default=None, help="the address every service listens on (default: 127.0.0.1)")
    args = parser.parse_args(argv)
    from ..config import forward_zones

    return serve(args.state, parent_domain=args.parent_domain, mail_host=args.mail_host,
                 students=args.student, dns_port=args.dns_port, forwards=forward_zones(",".join(args.forward)),
                 listen=args.listen)
