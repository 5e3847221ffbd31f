"""The world labmail talks to: the embedded lab (``local``) or the class servers (``live``).

Every helper reaches DNS (and later mail servers) through one :class:`World`
built from the configuration; nothing else branches on the world.

>>> w = current()              # doctest: +SKIP
>>> w.dns_server               # doctest: +SKIP
('127.0.0.1', 37405)
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from . import _nodoh  # noqa: F401 - before dnspython: no DNS-over-HTTPS stack
import dns.exception
import dns.nameserver
import dns.resolver
import dns.tsig

from .config import Config, is_ip_address, load, parse_hostport, port_map
from .errors import ConfigError, LabError
from .state import Layout, read_api_keys, read_run


@dataclass(frozen=True)
class World:
    """Endpoints and credentials of one world, resolved from the configuration."""

    kind: str
    config: Config
    dns_server: tuple[str, int]
    resolvers: tuple[tuple[str, int], ...]
    dns_servers: dict[str, tuple[str, int]] = field(default_factory=dict)
    services: dict[str, tuple[str, int]] = field(default_factory=dict)
    ca_file: str | None = None

    # -- addressing -----------------------------------------------------------
    def endpoint(self, address: str, port: int) -> tuple[str, int]:
        """Where to connect to reach (``address``, ``port``) of this world.

        In the local world every simulated public address is served on
        loopback: port 53 of ``ns1.labmail.cloud`` or ``dns.labmail.cloud``
        (or a provider's nameserver) is one of the lab's DNS ports.
        """
        if self.kind == "live":
            return address, port_map(self.config.ports).get(port, port)
        if port == 53 and address in self.dns_servers:
            return self.dns_servers[address]
        if f"{address}:{port}" in self.services:
            return self.services[f"{address}:{port}"]
        raise LabError(
            f"Le lab ne sert pas encore le port {port} de {address}.",
            f"The lab does not serve port {port} of {address} yet.",
        )

    def connect_address(self, host: str, port: int) -> tuple[str, int]:
        """Where a client connects to reach ``host:port``: the lab's port map (local) or the host itself (live).

        In the local world a simulated address that the lab does not serve on ``port`` is an error
        (:class:`LabError`), never a connection to the real Internet; a loopback address is used as it is.
        """
        if self.kind == "live":
            return host, port_map(self.config.ports).get(port, port)
        if is_ip_address(host):
            if f"{host}:{port}" not in self.services and ipaddress.ip_address(host).is_loopback:
                return host, port
            return self.endpoint(host, port)
        answer = self.resolver().resolve(host, "A")
        return self.endpoint(answer[0].address, port)

    def tls_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this world's servers (the lab CA, or the system's CAs)."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else ssl.create_default_context()

    def resolver(self, *, timeout: float = 2.0) -> dns.resolver.Resolver:
        """A dnspython resolver that asks this world's DNS (no cache, bounded waits)."""
        res = dns.resolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in self.resolvers]
        res.timeout = min(timeout, 1.0)
        res.lifetime = timeout
        res.use_edns(0, 0, 1232)
        return res

    # -- credentials ---------------------------------------------------------
    def tsig_key(self) -> dns.tsig.Key:
        """The student's TSIG key for RFC 2136 updates of their zone (never printed)."""
        if self.kind == "local":
            path = Layout(self.config.state_dir).tsig_file
            try:
                keys = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                keys = {}
            entry = keys.get(self.config.domain + ".")
            if entry is None:
                raise LabError(
                    f"Le lab n'a pas encore de clé pour {self.config.domain} : lancez labmail.lab.ensure().",
                    f"The lab has no key for {self.config.domain} yet: run labmail.lab.ensure().",
                )
            return dns.tsig.Key(entry["name"], base64.b64decode(entry["secret"]), entry["algorithm"])
        name = self.config.tsig_key_name or (self.config.domain + ".")
        secret = os.environ.get("LABMAIL_TSIG_SECRET")
        if not secret and self.config.tsig_secret_file:
            try:
                secret = _read_secret_file(self.config.tsig_secret_file)
            except OSError as exc:
                raise ConfigError(
                    f"Impossible de lire le secret TSIG dans {self.config.tsig_secret_file} ({exc.strerror}).",
                    f"Cannot read the TSIG secret from {self.config.tsig_secret_file} ({exc.strerror}).",
                ) from None
        if not secret:
            raise ConfigError(
                "Pas de secret TSIG pour modifier votre zone : indiquez tsig_secret_file dans la configuration "
                "(fichier donné par l'enseignant) ou la variable LABMAIL_TSIG_SECRET. Ne le collez jamais dans un notebook.",
                "No TSIG secret to change your zone: set tsig_secret_file in the configuration (file from your "
                "instructor) or the LABMAIL_TSIG_SECRET variable. Never paste it into a notebook.",
            )
        try:
            return dns.tsig.Key(name, base64.b64decode(secret, validate=True), self.config.tsig_algorithm)
        except Exception:
            raise ConfigError(
                "Le secret TSIG n'est pas du base64 valide : recopiez-le exactement depuis le fichier de clé.",
                "The TSIG secret is not valid base64: copy it exactly from the key file.",
            ) from None


def _read_secret_file(path: Path) -> str:
    """Read a secret: a bare base64 line, or a BIND key file (``secret "…";``)."""
    text = Path(path).expanduser().read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("secret"):
            return line.split('"')[1]
    return text.strip()


def _system_resolvers() -> tuple[tuple[str, int], ...]:
    res = dns.resolver.Resolver(configure=True)
    return tuple((str(ns), 53) for ns in res.nameservers)


def current(config: Config | None = None) -> World:
    """The world of the configuration; in the local world the lab must be running."""
    cfg = config if config is not None else load()
    if cfg.world == "local":
        run = read_run(cfg.state_dir)
        try:
            host = run["host"]
            resolver = (host, int(run["ports"]["resolver"]))
            server = (host, int(run["ports"]["students"]))
            servers = {addr: (host, int(port)) for addr, port in run["dns_servers"].items()}
            services = {key: (host, int(port)) for key, port in run.get("endpoints", {}).items()}
        except (TypeError, ValueError, KeyError):
            raise LabError(
                "Le lab n'est pas démarré. Dans un notebook : labmail.lab.ensure() ; "
                "dans un terminal : labmail lab start.",
                "The lab is not running. In a notebook: labmail.lab.ensure(); in a terminal: labmail lab start.",
            ) from None
        ca = run.get("ca")  # relative in a student's folder of a class lab (labmail.lab.student_folder)
        return World("local", cfg, server, (resolver,), servers, services, str(cfg.state_dir / ca) if ca else None)
    if not cfg.dns_server:
        raise ConfigError(
            "Monde « live » : indiquez dns_server (le serveur DNS autoritatif de la classe, qui accepte les mises à jour).",
            "\"live\" world: set dns_server (the class's authoritative DNS server, which accepts updates).",
        )
    host, port = parse_hostport(cfg.dns_server)
    if not is_ip_address(host):
        try:
            host = str(dns.resolver.resolve(host, "A", lifetime=3)[0])
        except dns.exception.DNSException as exc:
            raise ConfigError(
                f"Monde « live » : le nom du serveur DNS {host} (dns_server) ne se résout pas ({type(exc).__name__}). "
                "Vérifiez le nom, ou donnez son adresse IP : dns_server = \"192.0.2.53:53\".",
                f"\"live\" world: the DNS server name {host} (dns_server) does not resolve ({type(exc).__name__}). "
                "Check the name, or give its IP address: dns_server = \"192.0.2.53:53\".",
            ) from None
    resolvers = (parse_hostport(cfg.resolver),) if cfg.resolver else _system_resolvers()
    return World("live", cfg, (host, port), resolvers, ca_file=str(cfg.ca_file) if cfg.ca_file else None)


class use_world_resolver:
    """Point every DNS-using library (dnspython's default resolver, hence dkimpy, pyspf,
    checkdmarc, authheaders) at the world's DNS. Works as a call or a ``with`` block.

    >>> with use_world_resolver():        # doctest: +SKIP
    ...     import dkim; dkim.verify(msg)  # dkimpy now asks the lab DNS
    """

    def __init__(self, world: World | None = None) -> None:
        self.previous = dns.resolver.default_resolver
        dns.resolver.default_resolver = (world or current()).resolver()

    def __enter__(self) -> "use_world_resolver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Put back the resolver that was there before."""
        dns.resolver.default_resolver = self.previous


def api_key(config: Config | None = None, *, admin: bool = False) -> str:
    """The student's key for the school server's API (or the admin's, for instructors). Never print it.

    Local world: the key the lab made (``keys/api-keys.json``); live world: the instructor's credentials file."""
    from .config import live_credentials

    cfg = config if config is not None else load()
    if cfg.world == "live":
        key = live_credentials(cfg).get("admin_api_key" if admin else "api_key")
        if not key:
            raise LabError("Monde live : la clé d'API vient du fichier credentials_file donné par l'enseignant·e "
                           "(clé « api_key ») ; indiquez-le dans la configuration.", "Live world: the API key comes "
                           "from the credentials_file given by the instructor (key \"api_key\"); set it in the configuration.")
        return key
    keys = read_api_keys(cfg.state_dir)
    key = keys.get("admin") if admin else (keys.get("domains") or {}).get(cfg.domain)
    if not key:
        raise LabError(f"Pas de clé d'API pour {'l’administrateur' if admin else cfg.domain} : lancez labmail.lab.ensure().",
                       f"No API key for {'the administrator' if admin else cfg.domain}: run labmail.lab.ensure().")
    return key


__all__ = ["World", "current", "use_world_resolver", "api_key"]
