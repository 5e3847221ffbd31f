"""The lab's certificate authority (trustme): one CA per lab, kept across restarts, certificates per host.

``<state>/tls/ca.pem`` is what clients trust: labmail's own clients load it; for Thunderbird, import it in
Settings → Privacy & Security → Certificates → Manage Certificates → Authorities → Import, and tick
"Trust this CA to identify websites" (and email users). Its private key (``ca.key``, 0600) never leaves
the state folder.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from .._files import atomic_write_bytes


class LabCA:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "tls"
        self._ca = None
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}

    @property
    def ca_path(self) -> Path:
        return self.dir / "ca.pem"

    def load_or_create(self) -> "LabCA":
        import trustme

        cert, key = self.dir / "ca.pem", self.dir / "ca.key"
        if cert.exists() and key.exists():
            self._ca = trustme.CA.from_pem(cert.read_bytes(), key.read_bytes())
        else:
            self._ca = trustme.CA(organization_name="labmail", organization_unit_name="Lab CA — not for the Internet")
            atomic_write_bytes(key, self._ca.private_key_pem.bytes(), mode=0o600)
            atomic_write_bytes(cert, self._ca.cert_pem.bytes(), mode=0o644)
        return self

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server-side TLS context with a certificate for ``names`` (host names and addresses)."""
        key = tuple(sorted(names))
        if key not in self._contexts:
            assert self._ca is not None, "load_or_create() first"
            leaf = self._ca.issue_cert(*key)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            leaf.configure_cert(context)
            self._contexts[key] = context
        return self._contexts[key]

    def configure(self, context: ssl.SSLContext, names) -> None:
        """Load a new certificate for ``names`` into an existing context (new connections use it at once)."""
        assert self._ca is not None, "load_or_create() first"
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca.issue_cert(*names).configure_cert(context)

    def leaf_pem(self, *names: str) -> bytes:
        """A new certificate for ``names`` with its private key, as one PEM blob (for Twisted)."""
        assert self._ca is not None, "load_or_create() first"
        return self._ca.issue_cert(*names).private_key_and_cert_chain_pem.bytes()

    def client_context(self) -> ssl.SSLContext:
        """A client-side context that trusts the lab CA only."""
        return ssl.create_default_context(cafile=str(self.ca_path))
