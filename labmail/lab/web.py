"""HTTPS of the school's server, as Mailcow serves it: autoconfig, Autodiscover and a REST API subset.

* Thunderbird autoconfig: ``GET /mail/config-v1.1.xml`` and ``/.well-known/autoconfig/mail/config-v1.1.xml``
  (same content as Mailcow's ``autoconfig.php``: IMAP 993/143, POP3 995/110, SMTP 465/587, all on the mail host).
* Microsoft Autodiscover: ``POST /Autodiscover/Autodiscover.xml`` (Outlook schema → IMAP/SMTP settings,
  otherwise ActiveSync; unknown address → ErrorCode 600) and ``GET /autodiscover/autodiscover.json``.
* Mailcow's API (``/api/v1/…``, header ``X-API-Key``): domains, mailboxes, DKIM, with Mailcow's shapes —
  including HTTP 200 with ``"type": "error"`` for a failed write. The admin key may do everything; a
  student's key only touches the student's own domain.

Everything is served on every host name (``mailcow.labmail.cloud``, ``autoconfig.<domain>``,
``autodiscover.<domain>``), as Mailcow's nginx does; the certificate covers them all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import ssl
import time
from xml.sax.saxutils import escape

from aiohttp import web

from .._files import atomic_write_text
from ..state import PROVIDERS
from .apikeys import api_keys
from .limits import LISTEN_BACKLOG, guarded

log = logging.getLogger("labmail.lab.web")

#: How many times a minute one student's key may ask the lab's own endpoints (the spoofer, the reports).
RATE = 20
#: What the API dispatches to: Mailcow's verbs and the lab's own, and only these handlers (never a helper method).
_ACTIONS = ("get", "add", "edit", "delete", "labmail")
#: One address, nothing else (the spoofer's checks read what the message and the envelope will carry).
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
GIB = 1024 * 1024
#: mailboxes a domain may hold through the API (Mailcow's max_num_mboxes_for_domain): a student's key created 1,182
#: in 30 s (each a scrypt and a rewrite of accounts.json) before it was kept
MAX_MAILBOXES = 50


def autoconfig_xml(mail_host: str) -> str:
    servers = [("incomingServer", "imap", 993, "SSL"), ("incomingServer", "imap", 143, "STARTTLS"),
               ("incomingServer", "pop3", 995, "SSL"), ("incomingServer", "pop3", 110, "STARTTLS"),
               ("outgoingServer", "smtp", 465, "SSL"), ("outgoingServer", "smtp", 587, "STARTTLS")]
    body = "".join(
        f'    <{tag} type="{kind}">\n      <hostname>{mail_host}</hostname>\n      <port>{port}</port>\n'
        f'      <socketType>{socket}</socketType>\n      <username>%EMAILADDRESS%</username>\n'
        f'      <authentication>password-cleartext</authentication>\n    </{tag}>\n'
        for tag, kind, port, socket in servers)
    return ('<?xml version="1.0"?>\n<clientConfig version="1.1">\n'
            f'  <emailProvider id="{mail_host}">\n    <domain>%EMAILDOMAIN%</domain>\n'
            '    <displayName>A mailcow mail server</displayName>\n    <displayShortName>mail server</displayShortName>\n'
            f"{body}  </emailProvider>\n"
            f'  <webMail>\n    <loginPage url="https://{mail_host}/SOGo/"/>\n  </webMail>\n</clientConfig>\n')


def autodiscover_imap(mail_host: str, address: str) -> str:
    proto = ("      <Protocol>\n        <Type>{t}</Type>\n        <Server>{h}</Server>\n        <Port>{p}</Port>\n"
             "        <DomainRequired>off</DomainRequired>\n        <LoginName>{a}</LoginName>\n        <SPA>off</SPA>\n"
             "        <SSL>on</SSL>\n        <AuthRequired>on</AuthRequired>\n{extra}      </Protocol>\n")
    return ('<?xml version="1.0" encoding="utf-8" ?>\n'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
            '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">\n'
            "    <User>\n      <DisplayName>" + escape(address) + "</DisplayName>\n    </User>\n"
            "    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n"
            + proto.format(t="IMAP", h=mail_host, p=993, a=escape(address), extra="")
            + proto.format(t="SMTP", h=mail_host, p=465, a=escape(address),
                           extra="        <UsePOPAuth>on</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n")
            + "    </Account>\n  </Response>\n</Autodiscover>\n")


def autodiscover_activesync(mail_host: str, address: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8" ?>\n'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
            '  <Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006">\n'
            f"    <Culture>fr:fr</Culture>\n    <User>\n      <DisplayName>{escape(address)}</DisplayName>\n"
            f"      <EMailAddress>{escape(address)}</EMailAddress>\n    </User>\n    <Action>\n      <Settings>\n"
            "        <Server>\n          <Type>MobileSync</Type>\n"
            f"          <Url>https://{mail_host}/Microsoft-Server-ActiveSync</Url>\n"
            f"          <Name>https://{mail_host}/Microsoft-Server-ActiveSync</Name>\n        </Server>\n"
            "      </Settings>\n    </Action>\n  </Response>\n</Autodiscover>\n")


def autodiscover_error() -> str:
    return ('<?xml version="1.0" encoding="utf-8" ?>\n'
            '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">\n'
            '  <Response>\n    <Error Time="00:00:00" Id="2477272013">\n      <ErrorCode>600</ErrorCode>\n'
            "      <Message>Invalid Request</Message>\n      <DebugData />\n    </Error>\n  </Response>\n</Autodiscover>\n")


def _result(kind: str, log_: list, msg: list) -> list[dict]:
    return [{"type": kind, "log": log_, "msg": msg}]


class WebApp:
    """The aiohttp application of mailcow.labmail.cloud."""

    def __init__(self, services) -> None:
        self.services = services
        self.lab = services.lab
        self.store = services.store
        self.mail_host = services.hosts["school"].name
        self._provisioning = asyncio.Lock()
        self._asked: dict[str, list[float]] = {}  # a student key → when it asked the lab's own endpoints (last minute)
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self.dispatch)
        self.app = app

    # -- routing ---------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        from urllib.parse import unquote

        raw = unquote(unquote(request.raw_path.split("?", 1)[0]))  # as sent, before aiohttp normalizes "..": the attempt
        if ".." in raw or "\\" in raw or "\0" in raw:
            log.warning("path traversal attempt refused: %r from %s", request.raw_path[:200], request.remote)
            return web.Response(status=400, text="Bad request\n")
        path = request.path
        if re.fullmatch(r"/(?:[mM]ail)/(?:[cC]onfig)-v1\.1\.xml", path) or path == "/.well-known/autoconfig/mail/config-v1.1.xml":
            # as the web server's access log shows it: which host name and address the client asked for
            log.info("autoconfig: %s https://%s%s (emailaddress=%s) from %s", request.method, request.host.split(":")[0],
                     path, request.query.get("emailaddress", "-")[:320], request.remote)
            return web.Response(text=autoconfig_xml(self.mail_host), content_type="application/xml")
        if path.lower() == "/autodiscover/autodiscover.xml":
            log.info("autodiscover: %s https://%s%s from %s", request.method, request.host.split(":")[0], path,
                     request.remote)
            return await self.autodiscover(request)
        if path.lower() == "/autodiscover/autodiscover.json":
            protocol = request.query.get("Protocol", "")
            if protocol.lower() == "autodiscoverv1":
                return web.json_response({"Protocol": "AutodiscoverV1", "Url": f"https://{request.host.split(':')[0]}/Autodiscover/Autodiscover.xml"})
            if protocol.lower() == "activesync":
                return web.json_response({"Protocol": "ActiveSync", "Url": f"https://{self.mail_host}/Microsoft-Server-ActiveSync"})
            return web.json_response({"ErrorCode": "InvalidProtocol", "ErrorMessage": f"The given protocol value '{protocol}' is invalid."}, status=400)
        if path.startswith("/api/v1/"):
            return await self.api(request)
        if ".." in path or "\\" in path:
            log.warning("path traversal attempt refused: %r from %s", path, request.remote)
            return web.Response(status=400, text="Bad request\n")
        return web.Response(status=404, text="Not found\n")

    async def autodiscover(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.Response(text=autodiscover_error(), content_type="application/xml")
        body = (await request.text())[:65536]
        match = re.search(r"<EMailAddress>\s*([^<\s]+)\s*</EMailAddress>", body, re.I)
        address = match.group(1).lower() if match else ""
        account = self.store.accounts.get(address)
        if account is None or not account.active or account.domain not in self.services.hosts["school"].domains:
            log.info("autodiscover: unknown address %r", address)
            return web.Response(text=autodiscover_error(), content_type="application/xml")
        if "autodiscover/outlook/responseschema" in body.lower():
            return web.Response(text=autodiscover_imap(self.mail_host, address), content_type="application/xml")
        return web.Response(text=autodiscover_activesync(self.mail_host, address), content_type="application/xml")

    # -- API ---------------------------------------------------------------------
    def _scope(self, request: web.Request) -> str | None:
        """'*' for the admin key, the domain for a student's key, None if the key is wrong."""
        key = re.sub(r"[^A-Za-z0-9-]", "", request.headers.get("X-API-Key", ""))
        keys = api_keys(self.lab.state_dir)
        if key and secrets.compare_digest(key, keys["admin"]):
            return "*"
        for domain, value in keys["domains"].items():
            if key and secrets.compare_digest(key, value):
                return domain
        return None

    async def api(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        if scope is None:
            log.warning("API: authentication failed from %s", request.remote)
            return web.json_response({"type": "error", "msg": "authentication failed"}, status=401)
        parts = request.path.split("/")[3:]  # ["get", "domain", "all"]
        action = parts[0] if parts else ""
        if action == "get" and request.method != "GET":
            return web.json_response({"type": "error", "msg": "only GET method is allowed"}, status=405)
        if action in ("add", "edit", "delete", "labmail") and request.method != "POST":
            return web.json_response({"type": "error", "msg": "only POST method is allowed"}, status=405)
        if action == "labmail" and scope != "*" and not self._within_rate(scope):
            log.warning("API: the key of %s asked the lab's spoofer or reports too often: refused for a while", scope)
            return web.json_response(_result("danger", ["labmail"], ["rate_limited"]), status=429)
        try:
            payload = await request.json() if request.method == "POST" else None
        except (ValueError, UnicodeDecodeError, RecursionError):  # not JSON, not UTF-8, or nested beyond reason
            return web.json_response(_result("error", [], ["request_body_invalid_json"]))
        name = f"_{action}_{parts[1].replace('-', '_')}" if len(parts) > 1 else ""
        handler = getattr(self, name, None) if action in _ACTIONS and name in _HANDLERS else None
        if handler is None:
            return web.json_response({"type": "error", "msg": "route not found"}, status=404)
        try:
            return web.json_response(await handler(scope, parts[2:], payload))
        except Exception:  # a bug of the lab's: said as Mailcow says things, and logged once
            log.exception("API: %s %s failed", request.method, request.path[:200])
            return web.json_response(_result("danger", [action], ["internal_error"]), status=500)

    def _within_rate(self, scope: str) -> bool:
        """A class lab is shared: one student's key may ask the spoofer and the reports :data:`RATE` times a minute
        (the course asks a handful), so that nobody's loop slows everyone's mail."""
        now = time.monotonic()
        recent = [t for t in self._asked.get(scope, []) if now - t < 60.0]
        if len(recent) >= RATE:
            self._asked[scope] = recent
            return False
        self._asked[scope] = [*recent, now]
        return True

    def _allowed(self, scope: str, domain: str, *, quiet: bool = False) -> bool:
        allowed = scope == "*" or scope == domain.lower()
        if not allowed and not quiet:
            log.warning("API: the key of %s was refused on %s", scope, domain)
        return allowed

    def _domain_obj(self, domain: str) -> dict:
        boxes = self.store.mailboxes(domain)
        # Mailcow's JSON types, as its API description's example gives them ("1" for a flag; tests/test_mailcow_openapi.py)
        return {"domain_name": domain, "active": "1", "description": f"Domaine de l'atelier ({domain})",
                "max_num_mboxes_for_domain": MAX_MAILBOXES, "mboxes_in_domain": len(boxes), "max_num_aliases_for_domain": 400,
                "def_quota_for_mbox": 3072 * GIB, "max_quota_for_mbox": 10240 * GIB, "max_quota_for_domain": 10240 * GIB,
                "quota_used_in_domain": "0", "relay_all_recipients": "0", "backupmx": "0", "gal": "1", "rl": False,
                "tags": []}

    async def _get_domain(self, scope, args, payload):
        domains = sorted(d for d in self.services.hosts["school"].domains if self._allowed(scope, d, quiet=True))
        if not args or args[0] == "all":
            return [self._domain_obj(d) for d in domains]
        if args[0].lower() in domains:
            return self._domain_obj(args[0].lower())
        self._allowed(scope, args[0])  # another student's domain: refused (and logged), as nothing
        return {}

    def _mailbox_obj(self, account) -> dict:
        """Mailcow's mailbox object; ``messages`` and ``quota_used`` (bytes) counted from the folders' listings, no
        message read (called off the event loop)."""
        messages, used = self.store.usage(account.address)
        return {"username": account.address, "domain": account.domain, "local_part": account.address.split("@")[0],
                "name": account.name, "active": "1" if account.active else "0", "quota": account.quota_mib * GIB,
                "messages": messages, "quota_used": used,
                "percent_in_use": round(100 * used / (account.quota_mib * GIB)) if account.quota_mib else 0}

    async def _get_mailbox(self, scope, args, payload):
        if not args:
            return {}
        if args[0] == "all":
            domain = args[1].lower() if len(args) > 1 else None
            accounts = [a for a in self.store.accounts.values()
                        if a.domain in self.services.hosts["school"].domains and self._allowed(scope, a.domain, quiet=True)
                        and (domain is None or a.domain == domain)]
        else:
            account = self.store.accounts.get(args[0].lower())
            if account is None or not self._allowed(scope, account.domain) or account.domain not in self.services.hosts["school"].domains:
                return {}
            accounts = [account]
        # directory listings (a mailbox of thousands of messages): in a worker, never on the loop that serves SMTP,
        # POP3 and the API of the whole class
        objs = await asyncio.get_running_loop().run_in_executor(self.services.executor,
                                                                lambda: [self._mailbox_obj(a) for a in accounts])
        return objs if args[0] == "all" else objs[0]

    async def _add_mailbox(self, scope, args, payload):
        if not isinstance(payload, dict):
            return _result("error", [], ["request_body_invalid_json"])
        text = {k: payload.get(k, "") for k in ("local_part", "domain", "password", "password2", "name")}
        if not all(isinstance(v, str) for v in text.values()):  # what Mailcow's form sends: strings
            return _result("danger", ["mailbox", "add"], ["mailbox_invalid"])
        quota = payload.get("quota", 3072)
        try:
            quota = int(quota) if not isinstance(quota, bool) and isinstance(quota, (int, str)) else -1
        except ValueError:
            quota = -1
        if not 0 <= quota <= 10240:
            return _result("danger", ["mailbox", "add"], ["quota_not_0_not_numeric"])
        local, domain = text["local_part"].lower(), text["domain"].lower()
        password, password2 = text["password"], text["password2"]
        if domain not in self.services.hosts["school"].domains:
            return _result("danger", ["mailbox", "add", payload.get("local_part")], ["domain_not_found", domain])
        if not self._allowed(scope, domain):
            return _result("danger", ["mailbox", "add"], ["access_denied"])
        if password != password2:
            return _result("danger", ["mailbox", "add"], ["password_mismatch"])
        existing = len(self.store.mailboxes(domain))
        if existing >= MAX_MAILBOXES:  # Mailcow's max_num_mboxes_for_domain, announced and now kept
            log.warning("API: %s has %d mailboxes already: mailbox not added", domain, existing)
            return _result("danger", ["mailbox", "add"], ["max_mbox_exceeded", str(existing), str(MAX_MAILBOXES)])
        loop = asyncio.get_running_loop()
        from ..errors import LabmailError

        try:
            account = await loop.run_in_executor(self.services.auth_executor, lambda: self.store.add_mailbox(
                f"{local}@{domain}", password, name=text["name"], quota_mib=quota))
        except LabmailError as exc:
            msg = "object_exists" if "existe" in exc.text.fr else "password_complexity" if "Mot de passe" in exc.text.fr else "mailbox_invalid"
            return _result("danger", ["mailbox", "add"], [msg, f"{local}@{domain}"])
        log.info("API: mailbox %s added", account.address)
        return _result("success", ["mailbox", "add", "mailbox", {"local_part": local, "domain": domain}], ["mailbox_added", account.address])

    async def _delete_mailbox(self, scope, args, payload):
        if not isinstance(payload, list):
            return _result("error", [], ["request_body_invalid_json"])
        out = []
        for address in payload:
            if not isinstance(address, str):
                out += _result("danger", ["mailbox", "delete"], ["mailbox_invalid"])
                continue
            address = address.lower()
            account = self.store.accounts.get(address)
            if account is None or not self._allowed(scope, account.domain):
                out += _result("danger", ["mailbox", "delete", address], ["access_denied"])
                continue
            self.store.delete_mailbox(address)
            out += _result("success", ["mailbox", "delete", address], ["mailbox_removed", address])
        return out

    async def _get_dkim(self, scope, args, payload):
        domain = args[0].lower() if args else ""
        if not self._allowed(scope, domain):
            return {}
        path = self.lab.layout.dkim_record(domain)
        if not path.exists():
            return {}
        record = path.read_text(encoding="utf-8").strip()
        pubkey = record.split("p=", 1)[1]
        return {"pubkey": pubkey, "length": "2048", "dkim_txt": f"v=DKIM1;k=rsa;t=s;s=email;p={pubkey}",
                "dkim_selector": "dkim", "privkey": ""}

    # -- the instructor's class set-up (admin key only), as Mailcow's admin API does it ---------------------------
    async def _add_domain(self, scope, args, payload):
        """add/domain: in the lab, a school domain is a student's zone <label>.<parent>: it is provisioned like
        ``labmail lab start --class`` does (zone, TSIG key, DKIM key under ``dkim``, 2048 bits, as Mailcow makes it)."""
        from ..config import check_label
        from ..errors import LabmailError

        if scope != "*":
            return _result("danger", ["domain", "add"], ["access_denied"])
        if not isinstance(payload, dict):
            return _result("error", [], ["request_body_invalid_json"])
        domain = str(payload.get("domain", "")).strip().rstrip(".").lower()
        parent = self.lab.world["parent_domain"]
        label = domain[: -len(parent) - 1] if domain.endswith("." + parent) else ""
        log_ = ["domain", "add", {k: v for k, v in payload.items() if k != "password"}]
        try:
            check_label(label)
        except LabmailError:
            return _result("danger", log_, ["domain_invalid", domain])
        async with self._provisioning:  # two requests for one domain: one creates it, the other hears it exists
            if domain in self.services.hosts["school"].domains:
                return _result("danger", log_, ["domain_exists", domain])
            await asyncio.get_running_loop().run_in_executor(self.services.executor, self.lab.prepare, [label])
            self.lab.provision([label])
        log.info("API: domain %s added", domain)
        return _result("success", log_, ["domain_added", domain])

    async def _add_dkim(self, scope, args, payload):
        """add/dkim: every school domain of the lab has its key (selector dkim, 2048 bits) from its creation, as
        Mailcow makes one with the domain: asking again is Mailcow's "exists" answer."""
        if scope != "*":
            return _result("danger", ["dkim", "add"], ["access_denied"])
        if not isinstance(payload, dict):
            return _result("error", [], ["request_body_invalid_json"])
        domains = payload.get("domains", "")
        out: list[dict] = []
        for domain in (domains.split(",") if isinstance(domains, str) else []):
            domain = domain.strip().lower()
            if domain not in self.services.hosts["school"].domains:
                out += _result("danger", ["dkim", "add", payload], ["dkim_domain_or_sel_invalid", domain])
            else:
                out += _result("danger", ["dkim", "add", payload], ["dkim_domain_or_sel_exists", domain])
        return out or _result("danger", ["dkim", "add", payload], ["dkim_domain_or_sel_invalid", ""])

    async def _delete_dkim(self, scope, args, payload):
        """delete/dkim: the lab keeps its signing keys (the course's signatures rely on them): refused, said why."""
        if not isinstance(payload, list):
            return _result("error", [], ["request_body_invalid_json"])
        return [item for domain in payload
                for item in _result("danger", ["dkim", "delete", {"domains": domain, "reason": "the lab keeps its DKIM keys"}],
                                    ["access_denied"])] or _result("danger", ["dkim", "delete"], ["access_denied"])

    def _domain_admins(self) -> dict:
        try:
            return json.loads(self.lab.layout.domain_admins_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    async def _add_domain_admin(self, scope, args, payload):
        from .mailstore import hash_password

        if scope != "*":
            return _result("danger", ["domain_admin", "add"], ["access_denied"])
        if not isinstance(payload, dict):
            return _result("error", [], ["request_body_invalid_json"])
        username = str(payload.get("username", "")).strip()
        log_ = ["domain_admin", "add", {**payload, "password": "*", "password2": "*"}]
        domains = payload.get("domains", "")
        domains = [d.strip().lower() for d in (domains.split(",") if isinstance(domains, str) else
                                               domains if isinstance(domains, list) else []) if isinstance(d, str) and d.strip()]
        password = payload.get("password")
        # Mailcow's rules (data/web/inc/functions.domain_admin.inc.php): letters, digits, _ . - ; not "API"
        if not username or not username.replace("_", "").replace(".", "").replace("-", "").isalnum() or \
                not username.isascii() or username.upper() == "API" or len(username) > 64:
            return _result("danger", log_, ["username_invalid", username])
        if not isinstance(password, str) or not password:
            return _result("danger", log_, ["password_empty"])
        if password != payload.get("password2"):
            return _result("danger", log_, ["password_mismatch"])
        unknown = [d for d in domains if d not in self.services.hosts["school"].domains]
        if not domains or unknown:
            return _result("danger", log_, ["domain_invalid", (unknown or [""])[0]])
        admins = self._domain_admins()
        if username.lower() in admins or username.lower() in self.store.accounts:
            return _result("danger", log_, ["object_exists", username])
        digest = await asyncio.get_running_loop().run_in_executor(self.services.auth_executor, hash_password, password)
        admins = self._domain_admins()  # read again: another request may have written meanwhile
        if username.lower() in admins:
            return _result("danger", log_, ["object_exists", username])
        admins[username.lower()] = {"password": digest, "domains": domains, "active": 1 if payload.get("active", 1) else 0,
                                    "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(self.lab.layout.domain_admins_file, json.dumps(admins, indent=2) + "\n", mode=0o600)
        log.info("API: domain administrator %s added for %s", username, ", ".join(domains))
        return _result("success", log_, ["domain_admin_added", username])

    async def _get_domain_admin(self, scope, args, payload):
        if scope != "*":
            return []
        every = sorted(self.services.hosts["school"].domains)
        return [{"username": name, "tfa_active": "0", "active": str(entry.get("active", 1)), "created": entry.get("created", ""),
                 "selected_domains": entry["domains"], "unselected_domains": [d for d in every if d not in entry["domains"]]}
                for name, entry in sorted(self._domain_admins().items())]

    # -- the lab's own endpoints (not Mailcow's): what a student of a shared class lab may ask of the simulated Internet
    @staticmethod
    def _fields(payload, fields: tuple[str, ...]) -> dict[str, str] | None:
        """The string fields of a labmail request, or None if the request is not an object of bounded strings."""
        if not isinstance(payload, dict):
            return None
        out = {}
        for name in fields:
            value = payload.get(name, "")
            if not isinstance(value, str) or len(value) > 10_000:
                return None
            out[name] = value
        return out

    async def _labmail_spoof(self, scope, args, payload):
        """The spoofer (mx.arnaque.test) forges the key's own domain, to the student's own mailboxes only — step 11 in
        a class lab: nobody makes the spoofer write in another's name or to another's mailbox. Each address is one
        bare address (what the checks read is what the message and the envelope carry: no list, no display name, no
        line break); the subject is one line."""
        fields = self._fields(payload, ("mail_from", "header_from", "rcpt", "subject", "body"))
        if fields is None or not all(_BARE_ADDRESS.fullmatch(fields[k]) for k in ("header_from", "rcpt")) \
                or (fields["mail_from"] and not _BARE_ADDRESS.fullmatch(fields["mail_from"])) \
                or any(c in fields["subject"] for c in "\r\n\0"):
            return _result("danger", ["labmail", "spoof"], ["request_body_invalid"])
        header_from, rcpt = fields["header_from"].lower(), fields["rcpt"].lower()
        mail_from = (fields["mail_from"] or "bounce@arnaque.test").lower()
        if scope != "*":
            label = scope.split(".")[0]
            own = {f"{label}@{p.domain}" for p in PROVIDERS.values()}

            def mine(address: str) -> bool:
                domain = address.rpartition("@")[2]
                return domain == scope or domain.endswith("." + scope)

            if not mine(header_from) or not (rcpt in own or mine(rcpt)) \
                    or not (mine(mail_from) or mail_from.rpartition("@")[2] == "arnaque.test"):
                log.warning("API: the key of %s may not make the spoofer write as %s (envelope %s) to %s", scope,
                            header_from[:320], mail_from[:320], rcpt[:320])
                return _result("danger", ["labmail", "spoof"], ["access_denied"])
        status, reply = await asyncio.get_running_loop().run_in_executor(self.services.executor, lambda: self.services.spoof(
            mail_from, header_from, rcpt, fields["subject"], fields["body"]))
        return {"type": "success", "status": status, "reply": reply}

    async def _labmail_dmarc_reports(self, scope, args, payload):
        """"End of the day" for the key's domain only: the providers report to its rua what they judged of it."""
        fields = self._fields(payload, ("format",))
        if fields is None or fields["format"] not in ("", "7489", "9990"):
            return _result("danger", ["labmail", "dmarc-reports"], ["request_body_invalid"])
        sent = await asyncio.get_running_loop().run_in_executor(self.services.executor, lambda: self.services.dmarc_reports(
            fields["format"] or "7489", only=None if scope == "*" else scope))
        return {"type": "success", "reports": sent}



class _GuardedSite(web.TCPSite):
    """aiohttp's TCP site, each connection admitted by the lab's connection budget first (dropped at accept beyond
    it: no HTTP can be said before the TLS handshake), and a TLS handshake bounded to 20 s."""

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (what TCPSite.start does first)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            guarded(server, None), self._host, self._port, ssl=self._ssl_context, backlog=LISTEN_BACKLOG,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port, ssl_handshake_timeout=20)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


async def start_web(services, ca, previous_port: int = 0):
    """Serve the web app over TLS on loopback; returns (runner, port)."""
    app = WebApp(services)
    runner = web.AppRunner(app.app, access_log=None)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.configure(context, web_names(services))
    context.sni_callback = _only_published(services)
    services.web_context = context  # re-configured in place when a student (autoconfig.<domain>) is added
    site = None
    for port in (previous_port, 0):
        try:
            site = _GuardedSite(runner, services.listen, port, ssl_context=context)
            await site.start()
            break
        except OSError:
            if port == 0:
                raise
    sock = site._server.sockets[0]  # noqa: SLF001  (aiohttp exposes no public accessor for the bound port)
    return runner, sock.getsockname()[1]


def published(services, name: str) -> bool:
    """Does ``name`` lead to the school server in the lab's DNS — an address of it, or a CNAME chain to such a
    name? Read from the zones in memory (the DNS is served by this very event loop: no query over the network)."""
    import dns.name
    import dns.rdatatype

    school = services.hosts["school"]
    try:
        qname = dns.name.from_text(name)
    except Exception:  # noqa: BLE001 - any malformed SNI name is simply not published
        return False
    for _hop in range(8):
        if qname.to_text(omit_final_dot=True).lower() == school.name:
            return True
        zone = services.lab.zones.find_zone(qname)
        if zone is None:
            return False
        with zone.reader() as txn:
            cname, a = txn.get(qname, dns.rdatatype.CNAME), txn.get(qname, dns.rdatatype.A)
        if a is not None:
            return any(r.address == school.ip for r in a)
        if cname is None:
            return False
        qname = cname[0].target
    return False


def _only_published(services):
    """SNI callback: ``autoconfig.<domain>`` and ``autodiscover.<domain>`` are answered only once the student's zone
    makes them lead here (step 13) — as on the Internet, where a client cannot reach a name that is not in the DNS.
    A real client on this machine (Thunderbird in the lab's profile) maps the names without asking the lab's DNS:
    this keeps what it finds true to the zone."""

    logged: dict[str, float] = {}

    def callback(ssl_object, server_name, context):
        if server_name and server_name.lower().startswith(("autoconfig.", "autodiscover.")) \
                and not published(services, server_name):
            now = time.monotonic()
            if now - logged.get(server_name, -60.0) > 30:  # a client retries a dozen times in a second: one line
                if len(logged) > 1000:
                    logged.clear()
                logged[server_name] = now
                log.info("https: %s is not in the DNS (no record leads to this server): connection refused",
                         server_name[:255])
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    return callback


def web_names(services) -> tuple[str, ...]:
    host = services.hosts["school"]
    names = list(dict.fromkeys((host.name, host.ip, "localhost", "127.0.0.1", services.listen)))
    for domain in sorted(host.domains):
        names += [f"autoconfig.{domain}", f"autodiscover.{domain}"]
    return tuple(names)


_HANDLERS = frozenset(name for name in vars(WebApp) if name.startswith(tuple(f"_{a}_" for a in _ACTIONS)))
