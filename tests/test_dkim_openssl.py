"""labmail signs DKIM with OpenSSL (through cryptography) and dkimpy's canonicalization: the result must be byte for
byte what dkimpy alone writes, since RSASSA-PKCS1-v1_5 is deterministic (RFC 8017 §8.2), and dkimpy must verify it.

dkimpy's own pure-Python signer is the reference here (``dkim.DKIM.sign`` without labmail's subclass).
"""

from __future__ import annotations

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import count, examples
from labmail import dkim as ldkim

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def keys():
    return {bits: ldkim.generate_key(bits) for bits in (1024, 2048, 3072)}


def _reference(message: bytes, pem: bytes, *, canonicalize, headers, length, timestamp, expire) -> bytes:
    """dkimpy alone (pure-Python RSA), with the same t= and x= labmail writes."""

    class Reference(dkim.DKIM):
        def gen_header(self, fields, *args, **kwargs):
            fields = [(k, str(timestamp).encode()) if k == b"t" else (k, v) for k, v in fields]
            if expire is not None:
                fields.insert(len(fields) - 3, (b"x", str(expire).encode()))
            return super().gen_header(fields, *args, **kwargs)

    header = Reference(message).sign(b"dkim", b"example.test", pem, canonicalize=canonicalize,
                                     include_headers=headers, length=length)
    return header + message


_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_body_line = st.one_of(_text, st.just(""), st.just("  trailing  "), st.just("\ttab\t"))


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=_text, body=st.lists(_body_line, max_size=12), extra=st.lists(st.tuples(
    st.sampled_from(["X-Tag", "Reply-To", "Cc", "Subject", "X-Mailer"]), _text), max_size=4),
    canon=st.sampled_from([("relaxed", "relaxed"), ("relaxed", "simple"), ("simple", "simple"), ("simple", "relaxed")]),
    length=st.booleans(), expire=st.one_of(st.none(), st.integers(1_800_000_000, 1_900_000_000)),
    bits=st.sampled_from([1024, 2048, 3072]), sign_extra=st.booleans())
def test_openssl_signature_is_dkimpys_byte_for_byte(keys, subject, body, extra, canon, length, expire, bits, sign_extra):
    count()
    head = ["From: Tintin <tintin@example.test>", "To: milou@example.org", f"Subject: {subject}",
            "Date: Tue, 01 Dec 2026 10:00:00 +0000", "Message-ID: <x@example.test>"]
    head += [f"{name}: {value}" for name, value in extra]
    message = ("\r\n".join(head) + "\r\n\r\n" + "\r\n".join(body) + "\r\n").encode()
    headers = ["from", "to", "subject", "date", "message-id"] + (["x-tag", "reply-to"] if sign_extra else [])
    pem = keys[bits].private_pem
    ours = ldkim.sign(message, "example.test", "dkim", pem, canonicalize=canon, headers=headers, length=length,
                      timestamp=1_764_583_200, expire=expire)
    reference = _reference(message, pem, canonicalize=(canon[0].encode(), canon[1].encode()),
                           headers=[h.encode() for h in headers], length=length, timestamp=1_764_583_200, expire=expire)
    assert ours == reference
    record = f"v=DKIM1; k=rsa; p={keys[bits].public_b64}".encode()
    assert dkim.verify(ours, dnsfunc=lambda *_a, **_k: record)


def test_the_key_is_loaded_once_then_reused(keys):
    """The lab signs every message of a domain with its one key: loaded once (as OpenDKIM does), then reused."""
    pem = keys[2048].private_pem
    ldkim._signing_key.cache_clear()
    for _ in range(3):
        ldkim.sign(b"From: a@example.test\r\n\r\nx\r\n", "example.test", "dkim", pem)
    info = ldkim._signing_key.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_a_key_from_elsewhere_is_checked_the_labs_own_is_trusted(keys):
    """A PEM whose RSA parts do not agree is refused with a clear error unless the caller vouches for it (the lab's
    own keys skip the check, as OpenDKIM does)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from labmail.errors import ConfigError

    good = serialization.load_pem_private_key(keys[2048].private_pem, None).private_numbers()
    broken = rsa.RSAPrivateNumbers(good.p, good.q, good.d + 2, good.dmp1, good.dmq1, good.iqmp, good.public_numbers)
    pem = broken.private_key(unsafe_skip_rsa_key_validation=True).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(ConfigError):
        ldkim.sign(b"From: a@example.test\r\n\r\nx\r\n", "example.test", "dkim", pem)
    signed = ldkim.sign(b"From: a@example.test\r\n\r\nx\r\n", "example.test", "dkim", keys[2048].private_pem,
                        trusted_key=True)
    record = f"v=DKIM1; k=rsa; p={keys[2048].public_b64}".encode()
    assert dkim.verify(signed, dnsfunc=lambda *_a, **_k: record)


def test_ed25519_still_signs_through_dkimpy():
    key = ldkim.generate_key(kind="ed25519")
    signed = ldkim.sign(b"From: a@example.test\r\nSubject: s\r\n\r\nx\r\n", "example.test", "ed", key.private_pem)
    assert b"a=ed25519-sha256" in signed.split(b"\r\n\r\n")[0]
