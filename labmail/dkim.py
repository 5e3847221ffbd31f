"""DKIM (RFC 6376, RFC 8301, RFC 8463): keys, signing, and verification of *every* signature, explained.

dkimpy does the cryptography; labmail fetches the keys itself (through the world's DNS) so that each
signature's outcome comes with its reason: body hash mismatch, signature mismatch, key not found, key
revoked, key too small, rsa-sha1 refused, testing mode ``t=y``, ``l=`` with appended content, expired ``x=``.

>>> key = generate_key(bits=1024)
>>> key.record.startswith("v=DKIM1; k=rsa; p=")
True
>>> all(len(s) <= 255 for s in key.txt_strings())
True
"""

from __future__ import annotations

import base64
import functools
import html
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError, LabmailError, MessageError, UsageError
from .i18n import Text, frame, tr

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .resolver import Resolver

__all__ = ["DKIMKey", "generate_key", "load_private_key", "sign", "verify", "SignatureCheck", "signature_tags",
           "key_tags", "tamper", "TamperReport", "parse_tags"]


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------
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

    def txt_strings(self) -> list[str]:
        """The record split into strings of at most 255 bytes, as one TXT record holds it (RFC 6376 §3.6.2.2)."""
        data = self.record
        return [data[i : i + 255] for i in range(0, len(data), 255)]

    def zone_line(self, domain: str, selector: str = "dkim", ttl: int = 3600) -> str:
        """The record as a zone-file line: ``dkim._domainkey.example.com. 3600 IN TXT "…" "…"``."""
        quoted = " ".join(f'"{s}"' for s in self.txt_strings())
        return f"{selector}._domainkey.{domain.rstrip('.')}. {ttl} IN TXT {quoted}"


def generate_key(bits: int = 2048, kind: str = "rsa") -> DKIMKey:
    """Generate a DKIM key: RSA (1024 to 4096 bits, 2048 as Mailcow does) or Ed25519 (``kind="ed25519"``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

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
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = rsa_key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return DKIMKey("rsa", bits, pem, base64.b64encode(der).decode())


@functools.lru_cache(maxsize=64)
def load_private_key(pem: bytes) -> DKIMKey:
    """Rebuild a :class:`DKIMKey` (with its record) from a PEM private key (memoized: loading checks the key,
    which costs tens of milliseconds for RSA)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("Clé privée PEM illisible.", "Unreadable PEM private key.") from None
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return DKIMKey("ed25519", 256, pem, base64.b64encode(raw).decode())
    if isinstance(private, rsa.RSAPrivateKey):
        der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return DKIMKey("rsa", private.key_size, pem, base64.b64encode(der).decode())
    raise ConfigError("Type de clé non géré par DKIM (RSA ou Ed25519).", "Key type not used by DKIM (RSA or Ed25519).")


# ---------------------------------------------------------------------------
# Signing (dkimpy)
# ---------------------------------------------------------------------------
def _as_bytes(message: bytes | str) -> bytes:
    return message.encode("utf-8") if isinstance(message, str) else message


def sign(message: bytes | str, domain: str, selector: str, private_pem: bytes, *, headers: list[str] | None = None,
         canonicalize: tuple[str, str] = ("relaxed", "relaxed"), length: bool = False, timestamp: int | None = None,
         expire: int | None = None, trusted_key: bool = False) -> bytes:
    """Sign ``message`` and return it with its ``DKIM-Signature`` header on top.

    Defaults follow Mailcow (rspamd): ``relaxed/relaxed``, rsa-sha256 (ed25519-sha256 for an Ed25519 key),
    the RFC 6376 §5.4 header list with From over-signed. ``length=True`` adds ``l=`` (a teaching hazard),
    ``expire`` sets ``x=`` (seconds since the epoch), ``timestamp`` sets ``t=``. The key is loaded once and reused;
    ``trusted_key=True`` (the lab's own keys, made by :func:`generate_key`) skips OpenSSL's RSA consistency check
    on that first load, as OpenDKIM does — never for a key that came from elsewhere.
    """
    import dkim

    private = _signing_key(private_pem, trusted_key)
    data = _as_bytes(message)
    rsa_key = None
    if _is_ed25519(private):
        from cryptography.hazmat.primitives import serialization

        raw = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        privkey, algorithm = base64.b64encode(raw), b"ed25519-sha256"
    else:
        privkey, algorithm, rsa_key = private_pem, b"rsa-sha256", private

    class _Signer(dkim.DKIM):
        def gen_header(self, fields, include_headers, canon_policy, header_name, pk, standardize=False):
            # t=/x= where dkimpy has no parameter for them
            fields = [(k, str(timestamp).encode()) if (k == b"t" and timestamp is not None) else (k, v) for k, v in fields]
            if expire is not None:
                fields.insert(len(fields) - 3, (b"x", str(expire).encode()))
            if rsa_key is None or standardize or self.signature_algorithm != b"rsa-sha256":
                return super().gen_header(fields, include_headers, canon_policy, header_name, pk, standardize)
            return _gen_header_openssl(self, fields, include_headers, canon_policy, header_name, rsa_key)

    signer = _Signer(data)
    try:
        header = signer.sign(selector.encode(), domain.encode(), privkey, signature_algorithm=algorithm,
                             canonicalize=(canonicalize[0].encode(), canonicalize[1].encode()),
                             include_headers=[h.encode() for h in headers] if headers else None, length=length)
    except dkim.DKIMException as exc:
        raise MessageError(f"Signature DKIM impossible : {exc}", f"Cannot DKIM-sign: {exc}", rfc="RFC 6376 §5") from None
    return header + data


@functools.lru_cache(maxsize=1024)
def _signing_key(pem: bytes, trusted: bool = False):
    """The OpenSSL key object (cryptography) for a PEM private key, loaded once and reused for every signature.

    A ``trusted`` RSA key — one the lab made itself and keeps in its state folder — is loaded as OpenDKIM loads
    its keys (``PEM_read_bio_PrivateKey``), without OpenSSL's RSA_check_key: 28 ms for a 2048-bit key, paid by
    the first message of each of a class's 200 domains. cryptography calls skipping it safe for trusted keys only,
    so any other key (a student's PEM) is checked, once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        private = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=trusted)
    except (ValueError, TypeError):
        raise ConfigError("Clé privée PEM illisible.", "Unreadable PEM private key.") from None
    if not isinstance(private, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ConfigError("Type de clé non géré par DKIM (RSA ou Ed25519).", "Key type not used by DKIM (RSA or Ed25519).")
    return private


def _is_ed25519(private) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return isinstance(private, ed25519.Ed25519PrivateKey)


def _gen_header_openssl(signer, fields, include_headers, canon_policy, header_name: bytes, rsa_key) -> bytes:
    """dkimpy's ``DKIM.gen_header`` (dkimpy 1.1.8, non-"standardize" branch) with the one RSA operation done by
    OpenSSL through ``cryptography`` instead of dkimpy's pure-Python modular exponentiation (about 7 ms for a
    2048-bit key, against 0.4 ms). Canonicalization, header selection, folding and the hash stay dkimpy's:
    RSASSA-PKCS1-v1_5 is deterministic (RFC 8017 §8.2), so the header is byte for byte what dkimpy alone writes
    (``tests/test_dkim_openssl.py`` compares them)."""
    import dkim
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    header_value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), namelen=len(header_name), linesep=b"\r\n")
    header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
    digest = signer.hasher()
    headers = canon_policy.canonicalize_headers(signer.headers)
    signer.signed_headers = dkim.hash_headers(digest, canon_policy, headers, include_headers,
                                              (header_name, b" " + header_value), dict(fields))
    signature = rsa_key.sign(digest.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    index = [i for i, (name, _value) in enumerate(fields) if name == b"b"][0]
    fields[index] = (b"b", base64.b64encode(signature))
    return dkim.fold(b"; ".join(b"=".join(x) for x in fields) + signer.linesep, namelen=len(header_name),
                     linesep=signer.linesep)


# ---------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------
def parse_tags(text: str | bytes) -> dict[str, str]:
    """Parse a DKIM tag list (``k=v; k=v``, RFC 6376 §3.2) into a dict; raise LabmailError if malformed."""
    from dkim.util import InvalidTagValueList, parse_tag_value

    raw = _as_bytes(text)
    try:
        tags = parse_tag_value(raw)
    except (InvalidTagValueList, ValueError, IndexError) as exc:
        raise MessageError(f"Liste de balises DKIM invalide : {exc}", f"Invalid DKIM tag list: {exc}", rfc="RFC 6376 §3.2") from None
    return {k.decode("ascii", "replace"): v.decode("utf-8", "replace") for k, v in tags.items()}


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of one DKIM-Signature: ``result`` as Authentication-Results writes it, and why."""

    index: int
    domain: str
    selector: str
    algorithm: str
    result: str  # pass, fail, neutral, policy, temperror, permerror
    code: str  # ok, body-hash, signature, key-not-found, key-revoked, key-too-small, key-invalid, rsa-sha1, expired, ...
    reason: Text
    rfc: str
    testing: bool = False
    length: int | None = None
    appended: str | None = None
    key_bits: int | None = None
    header_b: str = ""
    auid: str = ""
    tags: dict = field(default_factory=dict, repr=False)

    @property
    def counts_for_dmarc(self) -> bool:
        """A pass that DMARC may use (a key in testing mode must be treated as unsigned, RFC 6376 §3.6.1)."""
        return self.result == "pass" and not self.testing

    def __str__(self) -> str:
        flag = tr(" (clé en mode test t=y)", " (key in testing mode t=y)") if self.testing else ""
        return f"dkim={self.result} d={self.domain} s={self.selector}{flag}: {self.reason} [{self.rfc}]"

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))


def _key_record(resolver: "Resolver", name: str) -> tuple[str | None, tuple[str, str, Text, str] | None, str]:
    """Fetch the key record; returns (text, None, note) or (None, partial failure fields, '')."""
    from .resolver import Outcome

    answer = resolver.query(name, "TXT")
    if answer.outcome in (Outcome.TIMEOUT, Outcome.SERVFAIL, Outcome.UNREACHABLE, Outcome.ERROR, Outcome.REFUSED):
        return None, ("temperror", "dns-error", Text(f"erreur DNS en cherchant la clé {name} ({answer.outcome.value}) : réessayer",
                                                    f"DNS error looking up the key {name} ({answer.outcome.value}): retry"),
                      "RFC 6376 §6.1.2"), ""
    if not answer.records:
        return None, ("permerror", "key-not-found", Text(
            f"clé introuvable : pas d'enregistrement TXT à {name}. Vérifiez le sélecteur (s=) et publiez la clé à ce nom",
            f"key not found: no TXT record at {name}. Check the selector (s=) and publish the key at that name"),
            "RFC 6376 §6.1.2"), ""
    note = ""
    if len(answer.records) > 1:
        note = "several"
    return answer.records[0].value, None, note


def verify(message: bytes | str, *, resolver: "Resolver | None" = None, world=None, minkey: int = 1024) -> list[SignatureCheck]:
    """Verify every DKIM-Signature of ``message`` (top first) and say why each passes or fails."""
    import dkim
    from dkim.util import InvalidTagValueList, parse_tag_value

    from .resolver import Resolver

    data = _as_bytes(message)
    resolver = resolver or Resolver(world=world)
    try:
        parsed = dkim.DKIM(data, minkey=minkey, logger=_QUIET)
    except dkim.DKIMException as exc:
        raise MessageError(f"Message illisible pour DKIM : {exc}", f"Message unreadable for DKIM: {exc}") from None
    sigheaders = [v for k, v in parsed.headers if k.lower() == b"dkim-signature"]
    checks: list[SignatureCheck] = []
    for index, value in enumerate(sigheaders):
        try:
            tags_b = parse_tag_value(value)
        except (InvalidTagValueList, ValueError, IndexError):
            checks.append(SignatureCheck(index, "", "", "", "permerror", "syntax", Text(
                "en-tête DKIM-Signature mal formé (liste balise=valeur invalide)", "malformed DKIM-Signature header (bad tag=value list)"),
                "RFC 6376 §3.2"))
            continue
        tags = {k.decode("ascii", "replace"): v.decode("utf-8", "replace") for k, v in tags_b.items()}
        d, s, a = tags.get("d", ""), tags.get("s", ""), tags.get("a", "")
        b_short = re.sub(r"\s+", "", tags.get("b", ""))[:8]
        auid = tags.get("i", f"@{d}")
        base = dict(index=index, domain=d, selector=s, algorithm=a, header_b=b_short, auid=auid, tags=tags)
        length = int(tags["l"]) if tags.get("l", "").isdigit() else None
        if not d or not s or not a:
            checks.append(SignatureCheck(**base, result="permerror", code="syntax", reason=Text(
                "balise obligatoire manquante (d=, s= ou a=)", "required tag missing (d=, s= or a=)"), rfc="RFC 6376 §3.5"))
            continue
        if a.lower() == "rsa-sha1":
            checks.append(SignatureCheck(**base, result="fail", code="rsa-sha1", reason=Text(
                "algorithme rsa-sha1 refusé : SHA-1 n'est plus sûr, signez en rsa-sha256",
                "rsa-sha1 refused: SHA-1 is no longer safe, sign with rsa-sha256"), rfc="RFC 8301 §3.1"))
            continue
        name = f"{s}._domainkey.{d}"
        record, failure, note = _key_record(resolver, name)
        if failure is not None:
            result, code, reason, rfc = failure
            checks.append(SignatureCheck(**base, result=result, code=code, reason=reason, rfc=rfc, length=length))
            continue
        assert record is not None
        testing = False
        try:
            key_tags_ = parse_tags(record)
        except LabmailError:
            key_tags_ = {}
        if '"' in record:
            checks.append(SignatureCheck(**base, result="permerror", code="key-invalid", reason=Text(
                f"l'enregistrement de clé à {name} contient des guillemets : ils ont été collés dans la valeur. Republiez-le sans",
                f"the key record at {name} contains quotes: they were pasted into the value. Publish it again without them"),
                rfc="RFC 6376 §3.6.2.2", length=length))
            continue
        if "p" in key_tags_ and not re.sub(r"\s+", "", key_tags_["p"]):
            checks.append(SignatureCheck(**base, result="permerror", code="key-revoked", reason=Text(
                f"clé révoquée : p= est vide à {name}", f"key revoked: p= is empty at {name}"), rfc="RFC 6376 §3.6.1", length=length))
            continue
        testing = "y" in key_tags_.get("t", "").split(":")

        def dnsfunc(_name, timeout=5, _record=record):
            return _record.encode()

        try:
            try:
                dkim.load_pk_from_dns(name.encode(), dnsfunc)  # dkimpy's verify() hides key errors behind False
            except (ValueError, TypeError, IndexError) as exc:  # binascii.Error is a ValueError
                raise dkim.KeyFormatError(str(exc)) from None
            verifier = dkim.DKIM(data, minkey=minkey, logger=_QUIET)
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
            bits = getattr(verifier, "keysize", None)
        except dkim.KeyFormatError as exc:
            text = str(exc)
            if "too small" in text:
                checks.append(SignatureCheck(**base, result="fail", code="key-too-small", reason=Text(
                    f"clé trop courte ({text.rsplit(' ', 1)[-1]} bits) : il faut au moins 1024 bits, 2048 conseillés",
                    f"key too small ({text.rsplit(' ', 1)[-1]} bits): at least 1024 bits are needed, 2048 advised"),
                    rfc="RFC 8301 §3.2", testing=testing, length=length))
            else:
                checks.append(SignatureCheck(**base, result="permerror", code="key-invalid", reason=Text(
                    f"clé publique inutilisable à {name} ({text[:80]}) : souvent une clé tronquée ou mal découpée "
                    "(chaînes de 255 caractères dans un seul enregistrement TXT)",
                    f"unusable public key at {name} ({text[:80]}): often a truncated or badly split key "
                    "(255-character strings in one TXT record)"), rfc="RFC 6376 §3.6.2.2", testing=testing, length=length))
            continue
        except dkim.ValidationError as exc:
            text = str(exc)
            if "body hash mismatch" in text:
                code, reason = "body-hash", Text(
                    "empreinte du corps différente (bh=) : le corps du message a été modifié après la signature",
                    "body hash mismatch (bh=): the message body was changed after signing")
                rfc = "RFC 6376 §6.1.3"
            elif "x= value is past" in text:
                code, reason = "expired", Text(f"signature expirée (x={tags.get('x')})", f"signature expired (x={tags.get('x')})")
                rfc = "RFC 6376 §3.5"
            elif "future" in text:
                code, reason = "future", Text("signature datée dans le futur (t=)", "signature dated in the future (t=)")
                rfc = "RFC 6376 §3.5"
            else:
                code, reason = "syntax", Text(f"signature invalide : {text}", f"invalid signature: {text}")
                rfc = "RFC 6376 §6.1.1"
            result = "fail" if code in ("body-hash", "expired", "future") else "permerror"
            checks.append(SignatureCheck(**base, result=result, code=code, reason=reason, rfc=rfc, testing=testing, length=length))
            continue
        except dkim.DKIMException as exc:
            checks.append(SignatureCheck(**base, result="permerror", code="syntax", reason=Text(
                f"signature inutilisable : {exc}", f"unusable signature: {exc}"), rfc="RFC 6376 §6.1", testing=testing, length=length))
            continue
        appended = None
        if length is not None:
            appended = _appended_after_l(data, tags.get("c", "simple/simple"), length)
        if ok:
            fr = f"signature valide ({bits} bits)"
            en = f"valid signature ({bits} bits)"
            if appended:
                fr += f" — mais l={length} : {len(appended)} caractères ajoutés après la partie signée ne sont pas protégés"
                en += f" — but l={length}: {len(appended)} characters appended after the signed part are not protected"
            if testing:
                fr += " ; clé en mode test (t=y) : à traiter comme un message non signé"
                en += "; key in testing mode (t=y): to be treated as unsigned"
            if note == "several":
                fr += " ; attention, plusieurs TXT à ce nom : seul le premier est utilisé"
                en += "; beware, several TXT records at that name: only the first is used"
            checks.append(SignatureCheck(**base, result="pass", code="ok", reason=Text(fr, en), rfc="RFC 6376 §6.1",
                                         testing=testing, length=length, appended=appended, key_bits=bits))
        else:
            checks.append(SignatureCheck(**base, result="fail", code="signature", reason=Text(
                "signature différente (b=) : un en-tête signé (voir h=) a été modifié, ou la clé publiée ne correspond pas "
                "à la clé privée de signature",
                "signature mismatch (b=): a signed header (see h=) was changed, or the published key does not match the "
                "signing key"), rfc="RFC 6376 §6.1.3", testing=testing, length=length, key_bits=bits))
    return checks


def _quiet_logger():
    import logging

    logger = logging.getLogger("labmail.dkimpy")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False  # dkimpy logs errors it also reports: nothing must reach stderr (nbgrader)
    return logger


_QUIET = _quiet_logger()


def _appended_after_l(data: bytes, c_value: str, length: int) -> str | None:
    from dkim.canonicalization import CanonicalizationPolicy

    try:
        policy = CanonicalizationPolicy.from_c_value(c_value.encode())
    except Exception:
        return None
    body = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[-1]
    canonical = policy.canonicalize_body(body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    extra = canonical[length:]
    return extra.decode("utf-8", "replace") if extra else None


# ---------------------------------------------------------------------------
# Tags explained
# ---------------------------------------------------------------------------
_SIGNATURE_TAGS = {
    "v": Text("version (toujours 1)", "version (always 1)"),
    "a": Text("algorithme : rsa-sha256 ou ed25519-sha256 (rsa-sha1 interdit)", "algorithm: rsa-sha256 or ed25519-sha256 (rsa-sha1 forbidden)"),
    "b": Text("la signature elle-même (base64)", "the signature itself (base64)"),
    "bh": Text("empreinte du corps canonisé", "hash of the canonicalized body"),
    "c": Text("canonisation en-têtes/corps (simple ou relaxed)", "header/body canonicalization (simple or relaxed)"),
    "d": Text("domaine signataire (SDID) : celui que DMARC compare au From", "signing domain (SDID): the one DMARC compares with From"),
    "h": Text("en-têtes signés, dans l'ordre (From obligatoire)", "signed headers, in order (From required)"),
    "i": Text("identité de l'agent (AUID), dans d= ou un sous-domaine", "agent identity (AUID), in d= or a subdomain"),
    "l": Text("longueur du corps signée : le reste n'est pas protégé (déconseillé)", "signed body length: the rest is not protected (discouraged)"),
    "q": Text("méthode de recherche de la clé (dns/txt)", "key lookup method (dns/txt)"),
    "s": Text("sélecteur : la clé est publiée à <s>._domainkey.<d>", "selector: the key is published at <s>._domainkey.<d>"),
    "t": Text("date de signature (secondes depuis 1970)", "signing time (seconds since 1970)"),
    "x": Text("date d'expiration de la signature", "signature expiry time"),
    "z": Text("copie des en-têtes d'origine (diagnostic)", "copy of the original headers (diagnostics)"),
}
_KEY_TAGS = {
    "v": Text("version de l'enregistrement (DKIM1), en premier", "record version (DKIM1), first"),
    "h": Text("algorithmes de hachage acceptés", "accepted hash algorithms"),
    "k": Text("type de clé : rsa (par défaut) ou ed25519", "key type: rsa (default) or ed25519"),
    "n": Text("notes pour les humains", "notes for humans"),
    "p": Text("clé publique en base64 ; vide = clé révoquée", "public key in base64; empty = revoked key"),
    "s": Text("type de service (* ou email) — PAS le sélecteur", "service type (* or email) — NOT the selector"),
    "t": Text("drapeaux : y = mode test, s = i= doit être égal à d=", "flags: y = testing, s = i= must equal d="),
}


def _tag_frame(tags: dict[str, str], meanings: dict[str, Text]) -> "pandas.DataFrame":

    rows = []
    for key, value in tags.items():
        shown = re.sub(r"\s+", "", value) if key in ("b", "bh", "p") else re.sub(r"\s+", " ", value)
        if len(shown) > 60:
            shown = shown[:28] + "…" + shown[-28:]
        meaning = meanings.get(key)
        rows.append({"balise": key, "valeur": shown, "signification": str(meaning) if meaning else tr("balise inconnue (ignorée)", "unknown tag (ignored)")})
    return frame(rows, columns=["balise", "valeur", "signification"])


def signature_tags(signature: str | bytes) -> "pandas.DataFrame":
    """The tags of a DKIM-Signature (header value, or a whole message: its first signature) with their meaning."""
    text = _as_bytes(signature)
    match = re.search(rb"(?im)^dkim-signature:[ \t]*((?:.*(?:\r?\n[ \t]+.*)*))", text)
    if match:
        text = match.group(1)
    return _tag_frame(parse_tags(text), _SIGNATURE_TAGS)


def key_tags(record: str) -> "pandas.DataFrame":
    """The tags of a DKIM key record (``v=DKIM1; k=rsa; p=…``) with their meaning."""
    return _tag_frame(parse_tags(record), _KEY_TAGS)


# ---------------------------------------------------------------------------
# Tampering, for teaching
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TamperReport:
    """A message before and after a change, with each signature's result and what broke."""

    change: Text
    before: list[SignatureCheck]
    after: list[SignatureCheck]
    message: bytes = field(repr=False)

    @property
    def explanation(self) -> str:
        lines = [str(self.change)]
        for old, new in zip(self.before, self.after):
            lines.append(f"d={new.domain} s={new.selector}: {old.result} → {new.result} — {new.reason}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.explanation

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(n.domain)}</td><td>{o.result}</td><td><b>{n.result}</b></td>"
                       f"<td>{html.escape(str(n.reason))}</td></tr>" for o, n in zip(self.before, self.after))
        return (f"<div><p>{html.escape(str(self.change))}</p><table><tr><th>d=</th><th>avant</th><th>après</th>"
                f"<th>pourquoi</th></tr>{rows}</table></div>")


def tamper(message: bytes | str, *, header: str | None = None, value: str | None = None, replace: tuple[str, str] | None = None,
           append: str | None = None, resolver: "Resolver | None" = None, world=None) -> TamperReport:
    """Change a signed message as an attacker or a mailing list would, and show which check breaks.

    ``header``/``value`` set a header (e.g. ``header="Subject", value="Gagnez !"``); ``replace=(old, new)``
    edits the body; ``append`` adds text at the end of the body (what ``l=`` fails to protect).
    """
    from .resolver import Resolver

    if header is None and replace is None and append is None:  # said before anything else is asked (the world…)
        raise UsageError("tamper() : indiquez header=, replace= ou append=.", "tamper(): give header=, replace= or append=.")
    resolver = resolver or Resolver(world=world)
    data = _as_bytes(message)
    before = verify(data, resolver=resolver)
    head, sep, body = data.partition(b"\r\n\r\n") if b"\r\n\r\n" in data else data.partition(b"\n\n")
    nl = b"\r\n" if b"\r\n" in head else b"\n"
    changes = []
    if header is not None:
        pattern = re.compile(rb"(?im)^" + re.escape(header.encode()) + rb":[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*")
        new_line = header.encode() + b": " + (value or "").encode()
        head, count = pattern.subn(new_line, head, count=1)
        if not count:
            head = head + nl + new_line
        changes.append(Text(f"en-tête {header} remplacé par « {value} »", f"header {header} set to \"{value}\""))
    if replace is not None:
        body = body.replace(replace[0].encode(), replace[1].encode())
        changes.append(Text(f"corps : « {replace[0]} » → « {replace[1]} »", f"body: \"{replace[0]}\" → \"{replace[1]}\""))
    if append is not None:
        body = body + append.encode().replace(b"\n", nl)
        changes.append(Text(f"texte ajouté à la fin du corps : « {append.strip()} »", f"text appended to the body: \"{append.strip()}\""))
    if not changes:
        raise UsageError("tamper() : indiquez header=, replace= ou append=.", "tamper(): give header=, replace= or append=.")
    changed = head + sep + body
    after = verify(changed, resolver=resolver)
    change = Text("; ".join(c.fr for c in changes), "; ".join(c.en for c in changes))
    return TamperReport(change, before, after, changed)


