"""DKIM keys (RFC 6376, RFC 8301, RFC 8463) and their DNS records.

>>> key = generate_key(bits=1024)
>>> key.record.startswith("v=DKIM1; k=rsa; p=")
True
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field


@dataclass(frozen=True)
class DKIMKey:
    """A DKIM key pair: the private key (PEM, never shown) and the public TXT record text."""

    kind: str
    bits: int
    private_pem: bytes = field(repr=False)
    public_b64: str

    @property
    def record(self) -> str:
        """The TXT record value, e.g. ``v=DKIM1; k=rsa; p=MIIBIjANBg…``."""
        return f"v=DKIM1; k={self.kind}; p={self.public_b64}"


def generate_key(bits: int = 2048, kind: str = "rsa") -> DKIMKey:
    """Generate a DKIM key: RSA (1024 to 4096 bits, 2048 as Mailcow does) or Ed25519 (``kind="ed25519"``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    from .errors import ConfigError

    if kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        return DKIMKey("ed25519", 256, pem, base64.b64encode(raw).decode())
    if kind != "rsa" or not 1024 <= bits <= 4096:
        raise ConfigError(
            f"Clé DKIM {kind}/{bits} impossible : choisissez RSA de 1024 à 4096 bits (2048 conseillé) ou Ed25519.",
            f"Cannot make a {kind}/{bits} DKIM key: choose RSA from 1024 to 4096 bits (2048 advised) or Ed25519.",
            rfc="RFC 8301 §3.2",
        )
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return DKIMKey("rsa", bits, pem, base64.b64encode(der).decode())
