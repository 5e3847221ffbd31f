"""Automatic client configuration, as the mail clients really do it: Thunderbird's autoconfig and Outlook's Autodiscover.

A user types only an address and a password; the client finds the IMAP and SMTP servers by itself, trying
places in a fixed order until one answers. :func:`thunderbird` and :func:`outlook` replay that order against
the world (each DNS answer, each HTTPS request and why it failed or won) and return the settings the client
would fill in; :func:`check_settings` then logs in with them, as the client does after "Terminé".

Thunderbird (153 ESR, ``FindConfig.sys.mjs``): its own install file, ``https://autoconfig.<domain>/mail/
config-v1.1.xml?emailaddress=…``, ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…``,
the same over ``http://``, Mozilla's central ISPDB (``live.thunderbird.net``), then the MX's domains — all at once,
the first by priority wins — with Exchange Autodiscover alongside (used only if the others found nothing), then
guessing host names. Outlook (POX Autodiscover, [MS-OXDISCO]): POST to ``https://<domain>/autodiscover/
autodiscover.xml``, then ``https://autodiscover.<domain>/…``, then an ``http://autodiscover.<domain>`` redirect,
then the ``_autodiscover._tcp.<domain>`` SRV record.

>>> found = thunderbird("tintin@jean-emile.labmail.cloud")     # doctest: +SKIP
>>> found.settings()                                            # doctest: +SKIP
  protocole              serveur  port sécurité  identifiant
0      IMAP  mailcow.labmail.cloud   993   SSL/TLS  tintin@…
"""

from __future__ import annotations

import html
import http.client
import socket
import ssl
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import AutodiscoverError, LabmailError, UsageError
from .i18n import frame, tr
from .world import World, current

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Server", "Attempt", "Discovery", "thunderbird", "outlook", "parse_autoconfig", "parse_autodiscover",
           "check_settings", "fetch", "OUTLOOK_REQUEST"]

#: The request body Outlook desktop POSTs (asks for IMAP/SMTP settings, not ActiveSync).
OUTLOOK_REQUEST = ('<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="http://schemas.microsoft.com/exchange/'
                   'autodiscover/outlook/requestschema/2006"><Request><EMailAddress>{address}</EMailAddress>'
                   "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/"
                   "2006a</AcceptableResponseSchema></Request></Autodiscover>")

_SECURITY = {"SSL": "SSL/TLS", "STARTTLS": "STARTTLS", "plain": "aucune"}


@dataclass(frozen=True)
class Server:
    """One server setting, as the client fills its account form."""

    protocol: str  # IMAP, POP3, SMTP
    hostname: str
    port: int
    security: str  # SSL (implicit TLS), STARTTLS, plain
    username: str


@dataclass(frozen=True)
class Attempt:
    """One place the client looked: what (method), where (URL or DNS name), the DNS path, and the outcome."""

    method: str
    target: str
    dns: str
    ok: bool
    detail: str

    def as_row(self) -> dict:
        return {"méthode": self.method, "où": self.target, "DNS": self.dns, "résultat": "✔" if self.ok else "✘",
                "détail": self.detail}


@dataclass
class Discovery:
    """What a client found for an address: every attempt in order, and the servers of the one that won."""

    client: str
    address: str
    attempts: list[Attempt] = field(default_factory=list)
    servers: list[Server] = field(default_factory=list)
    source: str | None = None  # the URL the settings came from

    @property
    def found(self) -> bool:
        return bool(self.servers)

    def best(self, protocol: str) -> Server | None:
        """The server the client picks for ``protocol`` (the first listed: the document's preference)."""
        return next((s for s in self.servers if s.protocol == protocol.upper()), None)

    def to_dataframe(self) -> "pandas.DataFrame":
        """The lookup order replayed: one row per attempt."""
        return frame([a.as_row() for a in self.attempts], columns=["méthode", "où", "DNS", "résultat", "détail"])

    def settings(self) -> "pandas.DataFrame":
        """The account form as the client fills it (every server the document offers, preferred first)."""
        return frame([{"protocole": s.protocol, "serveur": s.hostname, "port": s.port,
                              "sécurité": _SECURITY.get(s.security, s.security), "identifiant": s.username}
                             for s in self.servers], columns=["protocole", "serveur", "port", "sécurité", "identifiant"])

    def __str__(self) -> str:
        lines = [f"{self.client} — {self.address}"]
        lines += [f"  {'✔' if a.ok else '✘'} {a.method}: {a.target} — {a.detail}" for a in self.attempts]
        if self.found:
            lines.append(tr(f"  → configuration trouvée ({self.source})", f"  → settings found ({self.source})"))
            lines += [f"    {s.protocol} {s.hostname}:{s.port} {_SECURITY.get(s.security, s.security)}" for s in self.servers]
        else:
            lines.append(tr("  → rien trouvé : l'utilisateur doit tout saisir à la main (et appelle le support)",
                            "  → nothing found: the user must type everything by hand (and calls the help desk)"))
        return "\n".join(lines)

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr style='color:{'#1b7f3b' if a.ok else '#666'}'><td>{i}</td><td>{html.escape(a.method)}</td>"
                       f"<td><code>{html.escape(a.target)}</code></td><td><small>{html.escape(a.dns)}</small></td>"
                       f"<td>{'✔' if a.ok else '✘'} {html.escape(a.detail)}</td></tr>"
                       for i, a in enumerate(self.attempts, 1))
        if self.found:
            servers = "".join(f"<li><b>{s.protocol}</b> {html.escape(s.hostname)} port {s.port} "
                              f"({_SECURITY.get(s.security, s.security)})</li>" for s in self.servers)
            verdict = f"<p style='color:#1b7f3b'>✔ {html.escape(tr('Configuration trouvée', 'Settings found'))}</p><ul>{servers}</ul>"
        else:
            verdict = "<p style='color:#b00020'>✘ " + html.escape(tr("Rien trouvé : saisie manuelle.", "Nothing found: manual setup.")) + "</p>"
        return (f"<div><b>{html.escape(self.client)}</b> — {html.escape(self.address)}<table><tr><th>#</th><th>méthode</th>"
                f"<th>où</th><th>DNS</th><th>résultat</th></tr>{rows}</table>{verdict}</div>")


# -- documents ------------------------------------------------------------------------------------------------------
def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_autoconfig(xml: str, address: str) -> list[Server]:
    """The servers of a Thunderbird ``config-v1.1.xml`` document, placeholders (``%EMAILADDRESS%``…) filled in."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AutodiscoverError(f"Document autoconfig illisible ({exc}).", f"Unreadable autoconfig document ({exc}).") from None
    local, _, domain = address.partition("@")
    fill = {"%EMAILADDRESS%": address, "%EMAILLOCALPART%": local, "%EMAILDOMAIN%": domain}
    servers = []
    for node in root.iter():
        if _local(node.tag) not in ("incomingServer", "outgoingServer"):
            continue
        values = {_local(child.tag): (child.text or "").strip() for child in node}
        username = values.get("username", "")
        for key, value in fill.items():
            username = username.replace(key, value)
        try:
            port = int(values.get("port", ""))
        except ValueError:
            continue
        servers.append(Server(node.get("type", "").upper(), values.get("hostname", ""), port,
                              values.get("socketType", "plain"), username))
    if not servers:
        raise AutodiscoverError("Le document autoconfig ne décrit aucun serveur.", "The autoconfig document lists no server.")
    return servers


def parse_autodiscover(xml: str, address: str) -> list[Server]:
    """The IMAP/POP3/SMTP servers of an Outlook Autodiscover response; an ``<Error>`` response raises with its code."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise AutodiscoverError(f"Réponse Autodiscover illisible ({exc}).", f"Unreadable Autodiscover response ({exc}).") from None
    error = next((n for n in root.iter() if _local(n.tag) == "ErrorCode"), None)
    if error is not None:
        raise AutodiscoverError(f"Le serveur Autodiscover répond ErrorCode {error.text} : il ne connaît pas {address} "
                           "(la boîte existe-t-elle ?).", f"The Autodiscover server answers ErrorCode {error.text}: it does "
                           f"not know {address} (does the mailbox exist?).")
    servers = []
    for node in root.iter():
        if _local(node.tag) != "Protocol":
            continue
        values = {_local(child.tag): (child.text or "").strip() for child in node}
        kind = values.get("Type", "").upper()
        if kind not in ("IMAP", "POP3", "SMTP") or not values.get("Port", "").isdigit():
            continue
        if values.get("SSL", "on").lower() == "off":
            security = "plain"
        else:
            security = "STARTTLS" if values.get("Encryption", "").upper() == "TLS" else "SSL"
        servers.append(Server(kind, values.get("Server", ""), int(values["Port"]), security,
                              values.get("LoginName") or address))
    if not servers:
        mobile = any(_local(n.tag) == "MobileSync" or (n.text or "").strip() == "MobileSync" for n in root.iter())
        raise AutodiscoverError("La réponse ne propose qu'ActiveSync (client mobile), pas IMAP/SMTP." if mobile else
                           "La réponse Autodiscover ne décrit aucun serveur IMAP/POP/SMTP.",
                           "The response only offers ActiveSync (mobile client), not IMAP/SMTP." if mobile else
                           "The Autodiscover response lists no IMAP/POP/SMTP server.")
    return servers


# -- the network, as the client sees it -------------------------------------------------------------------------------
def _resolve(world: World, name: str) -> tuple[str | None, str]:
    """(IPv4 address or None, the DNS path as text: CNAME chain and address, or why there is none)."""
    from . import dns as _dns

    answer = _dns.lookup(name, "A", world=world)
    chain = [f"{r.name.rstrip('.')} CNAME {r.value.rstrip('.')}" for r in (*answer.cnames, *answer.records)
             if r.type == "CNAME"]
    addresses = [r.value for r in answer.records if r.type == "A"]
    if addresses:
        return addresses[0], " → ".join(chain + [f"A {addresses[0]}"])
    return None, " → ".join(chain + [answer.outcome.name])


class _Connection(http.client.HTTPSConnection):
    """HTTPS to ``host`` at the address the world maps it to; the certificate is checked against ``host``."""

    def __init__(self, host: str, where: tuple[str, int], context: ssl.SSLContext | None, timeout: float) -> None:
        super().__init__(host, 443, timeout=timeout, context=context or ssl.create_default_context())
        self._where, self._tls = where, context is not None

    def connect(self) -> None:
        self.sock = socket.create_connection(self._where, self.timeout)
        if self._tls:
            self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)  # type: ignore[attr-defined]  # http.client's


def _fetch(world: World, scheme: str, host: str, path: str, *, port: int | None = None, body: str | None = None,
           timeout: float = 5.0) -> tuple[int | None, str, str, dict]:
    """(HTTP status or None, body or the reason it failed, DNS path, response headers) — never raises for the network."""
    port = port or (443 if scheme == "https" else 80)
    address, path_text = _resolve(world, host)
    if address is None:
        missing = path_text.endswith("NXDOMAIN")
        return None, tr("le nom n'existe pas dans le DNS" if missing else "ce nom n'a pas d'adresse (A) dans le DNS",
                        "the name does not exist in DNS" if missing else "the name has no address (A) in DNS"), path_text, {}
    try:
        where = world.connect_address(address, port)  # local: the lab's port map, or LabError if nothing listens
    except LabmailError:
        return None, tr(f"rien n'écoute sur le port {port} de {address}", f"nothing listens on port {port} of {address}"), path_text, {}
    connection = _Connection(host, where, world.tls_context() if scheme == "https" else None, timeout)
    try:
        headers = {"Host": host if port in (80, 443) else f"{host}:{port}", "User-Agent": "labmail-autodiscover"}
        if body is not None:
            headers["Content-Type"] = "text/xml"
        connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read(1 << 20).decode("utf-8", "replace"), path_text, dict(response.getheaders())
    except ssl.SSLCertVerificationError as exc:
        return None, tr(f"certificat refusé ({exc.verify_message}) : le certificat du serveur ne couvre pas {host}",
                        f"certificate refused ({exc.verify_message}): the server's certificate does not cover {host}"), path_text, {}
    except (OSError, http.client.HTTPException) as exc:
        return None, tr(f"connexion impossible ({exc})", f"connection failed ({exc})"), path_text, {}
    finally:
        connection.close()


def fetch(url: str, data: str | None = None, *, world: World | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET (or POST ``data`` to) ``url`` in the world, as a client does: name resolved by the world's DNS, the
    certificate checked against that name. Returns (HTTP status, body); raises with the reason if no answer.

    >>> status, xml = fetch("https://autoconfig.jean-emile.labmail.cloud/mail/config-v1.1.xml")   # doctest: +SKIP
    """
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"« {url} » n'est pas une URL http(s)://nom/chemin.", f"\"{url}\" is not an http(s)://name/path URL.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    status, text, dns_path, _headers = _fetch(world or current(), parts.scheme, parts.hostname, path, port=parts.port,
                                              body=data, timeout=timeout)
    if status is None:
        raise AutodiscoverError(f"{url} : {text} (DNS : {dns_path}).", f"{url}: {text} (DNS: {dns_path}).")
    return status, text


def _http_detail(status: int | None, text: str) -> str:
    if status is None:
        return text
    return f"HTTP {status}"


# -- the two clients --------------------------------------------------------------------------------------------------
def thunderbird(address: str, *, world: World | None = None, timeout: float = 5.0) -> Discovery:
    """Replay Thunderbird's account setup for ``address``: every place it looks, by priority, until one answers.

    As Thunderbird 153 ESR does it (``FindConfig.sys.mjs``, ``FetchConfig.sys.mjs``,
    ``ExchangeAutoDiscover.sys.mjs``), its sources are queried together and the first **by priority** that answers
    wins: (1) a file shipped with Thunderbird, ``isp/<domain>.xml``; (2) the domain's own server,
    ``https://autoconfig.<domain>/mail/config-v1.1.xml?emailaddress=…`` then
    ``https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=…``, then both over ``http://``;
    (3) Mozilla's central database (ISPDB), ``https://live.thunderbird.net/autoconfig/v1.1/<domain>``; (4) the MX:
    the same at the MX host's domain and its registrable domain. **Alongside**, Exchange Autodiscover
    (``https://autodiscover.<domain>/autodiscover/autodiscover.xml``, ``https://<domain>/…``, the ``http://``
    redirect, the ``_autodiscover._tcp`` SRV record): its IMAP/SMTP servers are used only when (1)–(4) found
    nothing. Last, Thunderbird guesses usual host names.
    """
    from urllib.parse import quote

    from . import dns as _dns

    domain = _domain(address)
    world = world or current()
    found = Discovery("Thunderbird", address)
    query = "?emailaddress=" + quote(address, safe="@")
    found.attempts.append(Attempt(tr("fichier d'installation", "install file"), f"<installation>/isp/{domain}.xml", "—",
                                  False, tr("Thunderbird n'en livre que pour quelques fournisseurs, pas pour ce domaine",
                                            "Thunderbird ships a few providers' files, not this domain's")))
    isp = [("autoconfig (ISP)", "https", f"autoconfig.{domain}", f"/mail/config-v1.1.xml{query}"),
           ("well-known (ISP)", "https", domain, f"/.well-known/autoconfig/mail/config-v1.1.xml{query}"),
           ("autoconfig (ISP, http)", "http", f"autoconfig.{domain}", f"/mail/config-v1.1.xml{query}"),
           ("well-known (ISP, http)", "http", domain, f"/.well-known/autoconfig/mail/config-v1.1.xml{query}")]
    if not _try_autoconfig(found, world, isp, timeout):
        found.attempts.append(_ispdb(domain))
        mx = _dns.lookup(domain, "MX", world=world)
        hosts = sorted((r.value.split() for r in mx.records if r.type == "MX"), key=lambda v: int(v[0]))
        if hosts:
            mx_host = hosts[0][1].rstrip(".").lower()
            base = _base_domain(mx_host)
            # Thunderbird looks at the MX host's own domain (one label under the registrable domain), then at the
            # registrable domain: mailcow.labmail.cloud, then labmail.cloud
            labels = mx_host.split(".")
            below = ".".join(labels[-len(base.split(".")) - 1:]) if len(labels) > len(base.split(".")) else base
            places = [] if base == domain else list(dict.fromkeys((below, base)))
            found.attempts.append(Attempt("MX", domain, f"MX {hosts[0][0]} {hosts[0][1]}", True, tr(
                f"le MX mène à {' puis '.join(places) or base} : Thunderbird y cherche aussi",
                f"the MX leads to {' then '.join(places) or base}: Thunderbird looks there too")))
            candidates = [(tr("autoconfig du MX", "MX's autoconfig"), "https", f"autoconfig.{d}",
                           f"/mail/config-v1.1.xml{query}") for d in places]
            if not _try_autoconfig(found, world, candidates, timeout):
                found.attempts += [_ispdb(d) for d in places]
        else:
            found.attempts.append(Attempt("MX", domain, mx.outcome.name, False, tr("pas de MX", "no MX")))
    winner = (found.source, found.servers) if found.found else None
    exchange = _exchange_alongside(found, world, domain, address, timeout, used=winner is None)
    if winner is None and exchange is not None:
        found.source, found.servers = exchange
    if not found.found:
        for guess in (f"imap.{domain}", f"mail.{domain}"):
            ip, path_text = _resolve(world, guess)
            found.attempts.append(Attempt(tr("devinette", "guess"), guess, path_text, False, tr(
                "nom usuel essayé en dernier recours" + (" : il existe, mais Thunderbird ne fait que deviner" if ip else " : inexistant"),
                "usual name tried as a last resort" + (": it exists, but Thunderbird only guesses" if ip else ": does not exist"))))
    return found


def _ispdb(domain: str) -> Attempt:
    return Attempt("ISPDB (Mozilla)", f"https://live.thunderbird.net/autoconfig/v1.1/{domain}", "—", False, tr(
        "base centrale de Mozilla : elle ne connaît que les grands fournisseurs, pas ce domaine (non interrogée dans le lab)",
        "Mozilla's central database: it knows only big providers, not this domain (not queried in the lab)"))


def _exchange_alongside(found: Discovery, world: World, domain: str, address: str, timeout: float, *,
                        used: bool) -> tuple[str, list[Server]] | None:
    """Thunderbird's Exchange Autodiscover, run beside autoconfig: autodiscover.<domain>, then <domain>, the http
    redirect, then the SRV target (asking the user first when it is another registrable domain)."""
    from . import dns as _dns

    request = OUTLOOK_REQUEST.format(address=html.escape(address))
    label = tr("Autodiscover (en parallèle)", "Autodiscover (alongside)")
    first = None
    for host in (f"autodiscover.{domain}", domain):
        result = _autodiscover_try(found, world, label, "https", host, 443, request, timeout, used=used and first is None)
        first = first or result
    status, text, path_text, headers = _fetch(world, "http", f"autodiscover.{domain}", "/autodiscover/autodiscover.xml",
                                              timeout=timeout)
    location = headers.get("Location", "")
    found.attempts.append(Attempt(label, f"http://autodiscover.{domain}/autodiscover/autodiscover.xml", path_text,
                                  status in (301, 302) and location.startswith("https://"),
                                  location if status in (301, 302) else _http_detail(status, text)))
    srv = _dns.lookup(f"_autodiscover._tcp.{domain}", "SRV", world=world)
    records = sorted((r.value.split() for r in srv.records if r.type == "SRV"), key=lambda v: int(v[1]))
    if not records:
        found.attempts.append(Attempt(label, f"_autodiscover._tcp.{domain}", srv.outcome.name, False,
                                      tr("pas d'enregistrement SRV", "no SRV record")))
        return first
    target = records[0][3].rstrip(".")
    other = _base_domain(target) != _base_domain(domain)
    found.attempts.append(Attempt(label, f"_autodiscover._tcp.{domain}", " ".join(records[0]), True, tr(
        f"le SRV désigne {target}" + (" (autre domaine : Thunderbird demande d'abord à l'utilisateur s'il lui fait "
                                      "confiance)" if other else ""),
        f"the SRV points to {target}" + (" (another domain: Thunderbird asks the user first)" if other else ""))))
    result = _autodiscover_try(found, world, label, "https", target, 443, request, timeout, used=used and first is None)
    return first or result


def _autodiscover_try(found: Discovery, world: World, method: str, scheme: str, host: str, port: int, request: str,
                      timeout: float, *, used: bool = True) -> tuple[str, list[Server]] | None:
    """POST the Autodiscover request to ``host``; one attempt recorded; (URL, servers) when it answers."""
    path = "/autodiscover/autodiscover.xml"
    url = f"{scheme}://{host}{'' if port == 443 else f':{port}'}{path}"
    status, text, path_text, _headers = _fetch(world, scheme, host, path, port=port, body=request, timeout=timeout)
    if status != 200:
        found.attempts.append(Attempt(method, url, path_text, False, _http_detail(status, text)))
        return None
    try:
        servers = parse_autodiscover(text, found.address)
    except LabmailError as exc:
        found.attempts.append(Attempt(method, url, path_text, False, str(exc)))
        return None
    found.attempts.append(Attempt(method, url, path_text, True, tr(
        f"HTTP 200, {len(servers)} serveurs décrits" + (" : retenu" if used else " ; non utilisé, l'autoconfig a déjà répondu"),
        f"HTTP 200, {len(servers)} servers" + (": chosen" if used else "; not used, autoconfig already answered"))))
    return url, servers


def _try_autoconfig(found: Discovery, world: World, candidates, timeout: float) -> bool:
    """Fetch each candidate (Thunderbird fetches them together; the first in order that answers wins)."""
    winner = None
    for method, scheme, host, path in candidates:
        url = f"{scheme}://{host}{path}"
        status, text, path_text, _headers = _fetch(world, scheme, host, path, timeout=timeout)
        if status == 200 and winner is None:
            try:
                servers = parse_autoconfig(text, found.address)
            except LabmailError as exc:
                found.attempts.append(Attempt(method, url, path_text, False, str(exc)))
                continue
            winner = (url, servers)
            found.attempts.append(Attempt(method, url, path_text, True, tr(
                f"HTTP 200, {len(servers)} serveurs décrits : retenu", f"HTTP 200, {len(servers)} servers: chosen")))
        elif status == 200:
            found.attempts.append(Attempt(method, url, path_text, True, tr(
                "répond aussi, mais une source prioritaire a déjà gagné", "answers too, but a higher-priority source won")))
        else:
            found.attempts.append(Attempt(method, url, path_text, False, _http_detail(status, text)))
        if winner and scheme == "https" and method.startswith("well-known"):
            break  # the https pair has answered: Thunderbird does not go on to http
    if winner:
        found.source, found.servers = winner
        return True
    return False


def outlook(address: str, *, world: World | None = None, timeout: float = 5.0) -> Discovery:
    """Replay Outlook's Autodiscover for ``address`` (POX, the IMAP/SMTP "outlook" response schema)."""
    from . import dns as _dns

    domain = _domain(address)
    world = world or current()
    found = Discovery("Outlook", address)
    request = OUTLOOK_REQUEST.format(address=html.escape(address))
    candidates = [("domaine", "https", domain, 443), ("autodiscover", "https", f"autodiscover.{domain}", 443)]
    for method, scheme, host, port in candidates:
        if _outlook_try(found, world, method, scheme, host, port, request, timeout):
            return found
    status, text, path_text, headers = _fetch(world, "http", f"autodiscover.{domain}", "/autodiscover/autodiscover.xml",
                                              timeout=timeout)
    location = headers.get("Location", "")
    redirected = status in (301, 302) and location.startswith("https://")
    found.attempts.append(Attempt(tr("redirection http", "http redirect"), f"http://autodiscover.{domain}/autodiscover/"
                                  "autodiscover.xml", path_text, redirected, location if redirected else _http_detail(status, text)))
    srv = _dns.lookup(f"_autodiscover._tcp.{domain}", "SRV", world=world)
    records = sorted((r.value.split() for r in srv.records if r.type == "SRV"), key=lambda v: (int(v[0]), -int(v[1])))
    if not records:
        found.attempts.append(Attempt("SRV", f"_autodiscover._tcp.{domain}", srv.outcome.name, False,
                                      tr("pas d'enregistrement SRV", "no SRV record")))
        return found
    _prio, _weight, port_text, target = records[0]
    port = int(port_text)
    target = target.rstrip(".")
    found.attempts.append(Attempt("SRV", f"_autodiscover._tcp.{domain}", " ".join(records[0]), True, tr(
        f"le SRV désigne {target}, port {port}", f"the SRV points to {target}, port {port}")))
    _outlook_try(found, world, tr("cible du SRV", "SRV target"), "https", target, int(port), request, timeout)
    return found


def _outlook_try(found: Discovery, world: World, method: str, scheme: str, host: str, port: int, request: str,
                 timeout: float) -> bool:
    result = _autodiscover_try(found, world, method, scheme, host, port, request, timeout)
    if result is not None:
        found.source, found.servers = result
    return result is not None


def _domain(address: str) -> str:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or "." not in domain:
        raise UsageError(f"« {address} » n'est pas une adresse mail complète (nom@domaine).",
                           f"\"{address}\" is not a full e-mail address (name@domain).")
    return domain.lower().rstrip(".")


def _base_domain(host: str) -> str:
    """The registrable domain of a host name (Thunderbird's eTLD+1), by the pinned Public Suffix List."""
    from .dmarc import organizational_domain

    return organizational_domain(host, standard="7489")


# -- "Terminé": the client logs in with what it found ---------------------------------------------------------------
def check_settings(found: Discovery, *, password: str | None = None, world: World | None = None) -> "pandas.DataFrame":
    """Log in to the IMAP and SMTP servers the client would use, as it does when the user clicks "Terminé".

    The password is the mailbox's stored one in the lab (or ``password``); it is never shown.
    """
    import smtplib


    from . import mail

    world = world or current()
    if not found.found:
        raise AutodiscoverError("Rien à tester : le client n'a trouvé aucune configuration (voir les tentatives).",
                           "Nothing to test: the client found no settings (see the attempts).")
    secret = mail.stored_password(found.address, password, world)
    rows = []
    for protocol in ("IMAP", "SMTP"):
        server = found.best(protocol)
        if server is None:
            rows.append({"protocole": protocol, "serveur": "—", "résultat": "✘", "détail": tr("non décrit", "not described")})
            continue
        try:
            if protocol == "IMAP":
                client = mail.imap_connect(server.username, password=secret, port=server.port, host=server.hostname, world=world)
                client.logout()
            else:
                where, context = world.connect_address(server.hostname, server.port), world.tls_context()
                smtp: mail._RecordingSMTP  # noqa: SLF001
                if server.security == "SSL":
                    smtp = mail._RecordingSMTPSSL(server.hostname, context, timeout=10)  # noqa: SLF001
                else:
                    smtp = mail._RecordingSMTP(server.hostname, timeout=10)  # noqa: SLF001
                with smtp:
                    smtp.connect(*where)
                    if server.security == "STARTTLS":
                        smtp.starttls(context=context)
                    smtp.login(server.username, secret)
            rows.append({"protocole": protocol, "serveur": f"{server.hostname}:{server.port}", "résultat": "✔",
                         "détail": tr("connexion et authentification réussies", "connected and authenticated")})
        except (LabmailError, smtplib.SMTPException, OSError) as exc:
            rows.append({"protocole": protocol, "serveur": f"{server.hostname}:{server.port}", "résultat": "✘",
                         "détail": str(exc)})
    return frame(rows, columns=["protocole", "serveur", "résultat", "détail"])
