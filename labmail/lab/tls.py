"""The lab's certificate authority: one CA per lab, kept across restarts, a certificate per host.

``<state>/tls/ca.pem`` is what clients trust: labmail's own clients load it; Thunderbird imports it (Settings →
Privacy & Security → Certificates → Manage Certificates → Authorities → Import, "Trust this CA to identify
websites": Thunderbird uses that trust for every TLS server, IMAP and SMTP included; S/MIME's "email users" is
not needed). Its private key (``ca.key``, 0600) never leaves the state folder.

Trusting it cannot hurt elsewhere: the CA carries X.509 name constraints (RFC 5280 §4.2.1.10, critical) that
limit it to the lab's names — the parent domain (students' zones, the school's server), ``.test`` (the providers,
the spoofer), ``localhost`` — and to loopback and the documentation addresses (RFC 5737, RFC 3849). A certificate
it signed for ``accounts.google.com`` would be refused by OpenSSL, NSS (Thunderbird, Firefox) and every other
conforming client. It lives two years, its server certificates 397 days (the CA/Browser Forum's limit), and it
says what it is in its name.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import os
import ssl
import tempfile
from pathlib import Path

from .._files import atomic_write_bytes
from ..state import Layout

CA_DAYS = 730
LEAF_DAYS = 397
#: The addresses the lab's hosts use: loopback, and the documentation ranges of the simulated Internet.
LAB_NETWORKS = ("127.0.0.0/8", "::1/128", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def _lab_dns_names(state_dir: Path) -> tuple[str, ...]:
    """The DNS subtrees of the lab: its parent domain (and the mail host if it lies elsewhere), .test, localhost."""
    try:
        world = json.loads(Layout(state_dir).world_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        world = {}
    names = [str(world.get("parent_domain") or "labmail.cloud"), "test", "localhost"]
    host = str(world.get("mail_host") or "")
    if host and not any(host == n or host.endswith("." + n) for n in names):
        names.append(host)
    return tuple(dict.fromkeys(n.rstrip(".").lower() for n in names))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class LabCA:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.dir = Layout(self.state_dir).tls_dir
        self._cert = None
        self._key = None
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.pem"

    def load_or_create(self, listen: str | None = None) -> "LabCA":
        """Load the lab's CA, or create it. A CA made by an older labmail (no name constraints) is replaced: clients
        that trusted it must import the new one. ``listen``: the address a class lab listens on — outside the lab's
        own networks, it must be among the addresses the CA may certify (a CA that does not permit it is replaced)."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert_path, key_path = self.dir / "ca.pem", self.dir / "ca.key"
        if cert_path.exists() and key_path.exists():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            try:
                constraints = cert.extensions.get_extension_for_class(x509.NameConstraints).value
                current = cert.not_valid_after_utc > _now() + _dt.timedelta(days=LEAF_DAYS)
                if listen is not None and not any(
                        isinstance(n, x509.IPAddress) and ipaddress.ip_address(listen) in n.value
                        for n in constraints.permitted_subtrees or ()):
                    current = False  # a class lab on a new address: its certificates must name it
            except x509.ExtensionNotFound:
                current = False
            if current:
                self._cert = cert
                self._key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
                return self
        self._create(cert_path, key_path, listen)
        return self

    def _create(self, cert_path: Path, key_path: Path, listen: str | None = None) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        dns_names = _lab_dns_names(self.state_dir)
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labmail"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Lab de messagerie, pas pour Internet"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Autorité du lab labmail ({dns_names[0]})"),
        ])
        networks = [ipaddress.ip_network(n) for n in LAB_NETWORKS]
        if listen is not None and not any(ipaddress.ip_address(listen) in n for n in networks):
            networks.append(ipaddress.ip_network(f"{listen}/32"))
        permitted = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(n) for n in networks]
        now = _now()
        public = key.public_key()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(hours=1)).not_valid_after(now + _dt.timedelta(days=CA_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .sign(key, hashes.SHA256()))
        atomic_write_bytes(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()), mode=0o600)
        atomic_write_bytes(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        self._cert, self._key = cert, key

    def _issue(self, names: tuple[str, ...]) -> bytes:
        """A server certificate for ``names`` (host names and addresses), with its key: one PEM blob."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        assert self._cert is not None and self._key is not None, "load_or_create() first"
        key = ec.generate_private_key(ec.SECP256R1())
        alt = [x509.IPAddress(ipaddress.ip_address(n)) if _is_ip(n) else x509.DNSName(n) for n in names]
        first = next((n for n in names if not _is_ip(n)), names[0])
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, first)]))
                .issuer_name(self._cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - _dt.timedelta(hours=1)).not_valid_after(now + _dt.timedelta(days=LEAF_DAYS))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
                .sign(self._key, hashes.SHA256()))
        return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
                + cert.public_bytes(serialization.Encoding.PEM) + self._cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _load(context: ssl.SSLContext, pem: bytes) -> None:
        """Load a key-and-chain PEM into ``context`` (the ssl module reads files only: a private temporary one)."""
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            context.load_cert_chain(path)
        finally:
            os.unlink(path)

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server-side TLS context with a certificate for ``names`` (host names and addresses)."""
        key = tuple(sorted(names))
        if key not in self._contexts:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._load(context, self._issue(key))
            self._contexts[key] = context
        return self._contexts[key]

    def configure(self, context: ssl.SSLContext, names) -> None:
        """Load a new certificate for ``names`` into an existing context (new connections use it at once)."""
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._load(context, self._issue(tuple(names)))

    def leaf_pem(self, *names: str) -> bytes:
        """A new certificate for ``names`` with its private key, as one PEM blob (for Twisted)."""
        return self._issue(names)

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that trusts the lab CA only."""
        return ssl.create_default_context(cafile=str(self.ca_path))
