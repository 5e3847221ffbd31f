"""A receiving server's judgement of one message: SPF for MAIL FROM and HELO, every DKIM signature, DMARC under both
standards, iprev (forward-confirmed reverse DNS), a DNS block list, each provider's published sender rules, and the
Authentication-Results it writes. One implementation: the lab's receivers, :mod:`labmail.replay`,
:func:`labmail.headers.analyze` and :func:`labmail.checks.message` all call :func:`judge`.

Sources of the rules:

* Gmail, "Email sender guidelines" (support.google.com/a/answer/81126, /14229414), for *all* senders since
  2024-02-01: SPF **or** DKIM, valid forward and reverse DNS (PTR) for the sending IP, TLS; DMARC policies of
  the From domain are enforced (quarantine → spam, reject → ``550 5.7.26``). In the lab, mail with neither SPF
  nor DKIM passing goes to spam with a warning (the course's step 7); Google's later move to rejecting such
  mail outright is secondary-source only and not modelled.
* Microsoft (Outlook.com/Hotmail, "Strengthening Email Ecosystem", 2025-04-02, in force 2025-05-05): SPF pass
  **and** DKIM pass **and** DMARC at least ``p=none`` aligned with SPF or DKIM; DMARC reject → ``550 5.7.509``.
  The rule is written for senders of over 5,000 messages a day; the lab applies it to every sender so that
  the course's progression (SPF, then DKIM, then DMARC) is visible at Outlook.
* Both stamp ``Authentication-Results`` in their own style: Gmail with ``mx.google.com``-like authserv-id and
  the DMARC policy in a comment; Microsoft without authserv-id and with ``compauth``.
"""

from __future__ import annotations

import email.utils

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from email import message_from_bytes

from ._rfc5322 import READ_POLICY, domain_of
from .authres import MethodResult, make_authentication_results
from .i18n import Text
from .state import PROVIDERS

if TYPE_CHECKING:  # pragma: no cover
    from .dkim import SignatureCheck
    from .dmarc import DMARCEvaluation


@dataclass
class Checks:
    """Everything a receiver learnt about one message (from the lab's engine)."""

    ip: str
    helo: str
    mail_from: str
    spf: Any  # SPFEvaluation (MAIL FROM, or HELO for a bounce); None when judged from the headers only
    spf_helo: Any  # SPFEvaluation or None
    dkim: list[SignatureCheck] = field(default_factory=list)
    dmarc: DMARCEvaluation | None = None
    from_domain: str | None = None
    iprev: str = "fail"
    iprev_name: str | None = None
    dnsbl: str | None = None  # the block-list answer (127.0.0.x) if the address is listed
    ptr_names: tuple[str, ...] = ()  # what the PTR of the address names (confirmed or not)

    spf_value: str = "none"  # the SPF result used (re-run, or read from the headers)
    spf_domain: str | None = None
    from_fields: int = 1  # how many From fields the header holds
    from_mailboxes: int = 1  # how many addresses they name

    @property
    def from_problem(self) -> str | None:
        """Why the From section is not the one RFC 5322 §3.6 asks for (exactly one field, one address without a
        Sender): "none", "several fields", "several addresses" — a message DMARC cannot judge by one domain
        (RFC 7489 §6.6.1: receivers typically reject it); None when it is."""
        if self.from_fields == 0 or self.from_mailboxes == 0:
            return "none"
        if self.from_fields > 1:
            return "several fields"
        if self.from_mailboxes > 1:
            return "several addresses"
        return None

    @property
    def spf_pass(self) -> bool:
        return self.spf_value == "pass"

    @property
    def dkim_pass(self) -> bool:
        return any(c.counts_for_dmarc for c in self.dkim)

    @property
    def dmarc_result(self) -> str:
        return self.dmarc.result if self.dmarc is not None else "none"

    @property
    def dmarc_policy(self) -> str | None:
        return self.dmarc.rfc9989.policy if self.dmarc is not None else None

    def to_record(self) -> dict:
        return {
            "spf": {"result": self.spf_value, "domain": self.spf_domain, "reason": self.spf.reason.fr,
                    "lookups": self.spf.lookups, "void_lookups": self.spf.void_lookups,
                    "trace": [{"depth": s.depth, "domain": s.domain, "term": s.term, "detail": s.detail.fr, "matched": s.matched,
                               "queries": [str(q) for q in s.queries], "rfc": s.rfc} for s in self.spf.trace]},
            "spf_helo": {"result": self.spf_helo.result.value, "domain": self.spf_helo.domain},
            "dkim": [{"domain": c.domain, "selector": c.selector, "result": c.result, "code": c.code, "reason": c.reason.fr,
                      "rfc": c.rfc} for c in self.dkim],
            "dmarc": None if self.dmarc is None else {
                std: {"result": v.result, "disposition": v.disposition, "policy": v.policy, "record_domain": v.record_domain,
                      "org_from": v.org_from, "spf_aligned": v.spf_aligned, "dkim_aligned": v.dkim_aligned,
                      "reason": v.reason.fr} for std, v in (("7489", self.dmarc.rfc7489), ("9989", self.dmarc.rfc9989))},
            "from_domain": self.from_domain, "iprev": {"result": self.iprev, "name": self.iprev_name},
        }


def judge(data: bytes, *, ip: str | None, mail_from: str = "", helo: str = "", resolver,
          spf_from_headers: tuple[str, str | None] | None = None, dnsbl_zone: str | None = "dnsbl.test") -> Checks:
    """Judge one received message as a receiving server does, with the lab's engine.

    ``ip``, ``mail_from``, ``helo``: the envelope the server saw; without ``ip`` (headers only), SPF is not
    re-run and ``spf_from_headers`` (result, domain) stands in for it. One PTR lookup (iprev) and one block-list
    lookup per message.
    """
    from . import dkim, dmarc, spf

    spf_result = spf_helo = None
    spf_value: str
    spf_domain: str | None
    if ip:
        spf_result = spf.evaluate(ip, mail_from, helo, resolver=resolver, timeout=10)
        spf_helo = spf.evaluate(ip, mail_from, helo, identity="helo", resolver=resolver, timeout=10)
        spf_value, spf_domain = spf_result.result.value, spf_result.domain
    else:
        spf_value, spf_domain = spf_from_headers or ("none", None)
    try:
        signatures = dkim.verify(data, resolver=resolver)
    except Exception:  # noqa: BLE001 - an unparseable message: no usable signature
        signatures = []
    msg = message_from_bytes(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n", policy=READ_POLICY)
    from_domain = domain_of(msg.get("From"))
    from_fields = [str(v) for v in msg.get_all("From") or []]
    try:
        from_mailboxes = len([a for _n, a in email.utils.getaddresses(from_fields) if a])
    except RecursionError:  # comments nested past Python's limit: no address read
        from_mailboxes = 0
    verdict = None
    if from_domain:
        verdict = dmarc.evaluate(from_domain, spf_result=spf_value, spf_domain=spf_domain,
                                 dkim=[(c.domain, "pass" if c.counts_for_dmarc else c.result) for c in signatures],
                                 resolver=resolver)
    iprev, name, listed, names = "fail", None, None, tuple[str, ...]()
    if ip:
        iprev, name, names = _iprev(resolver, ip)
        listed = _dnsbl(resolver, ip, dnsbl_zone)
    return Checks(ip or "", helo, mail_from, spf_result, spf_helo, signatures, verdict, from_domain, iprev, name, listed,
                  names, spf_value, spf_domain, len(from_fields), from_mailboxes)


def _iprev(resolver, ip: str) -> tuple[str, str | None, tuple[str, ...]]:
    """RFC 8601 §3 iprev: the PTR of the address names a host whose A/AAAA holds the address.
    Returns (result, the confirmed name, every name the PTR gave)."""
    try:
        reverse = ipaddress.ip_address(ip).reverse_pointer
    except ValueError:
        return "fail", None, ()
    ptr = resolver.query(reverse, "PTR")
    names = tuple(v.rstrip(".") for v in ptr.values)
    rtype = "AAAA" if ":" in ip else "A"
    for candidate in ptr.values:
        if ip in resolver.query(candidate, rtype).values:
            return "pass", candidate.rstrip("."), names
    return "fail", None, names


def _dnsbl(resolver, ip: str, zone: str | None) -> str | None:
    """RFC 5782: the reversed IPv4 address under the list's zone has an A record when listed."""
    if not zone or ":" in ip:
        return None
    answer = resolver.query(".".join(reversed(ip.split("."))) + "." + zone, "A")
    return answer.values[0] if answer.records else None


@dataclass(frozen=True)
class Verdict:
    """Where the message goes: a folder ("INBOX", "Junk"), or ``None`` and the SMTP rejection reply."""

    folder: str | None
    reason: Text
    reply: str = ""
    warning: str | None = None

    def to_record(self) -> dict:
        return {"folder": self.folder, "reason": self.reason.fr, "reason_en": self.reason.en, "reply": self.reply,
                "warning": self.warning}


class Policy:
    name = "generic"
    authserv_id: str = "mx.lab.test"

    def dmarc_verdict(self, checks: Checks, reject_reply: str, junk_fr: str, junk_en: str) -> Verdict | None:
        """What every receiver does with a DMARC failure: refuse for p=reject, Junk for p=quarantine."""
        if checks.dmarc is None or checks.dmarc_result != "fail":
            return None
        if checks.dmarc.disposition == "reject":
            return Verdict(None, Text("DMARC échoue et le domaine demande reject : refus à la réception",
                           "DMARC fails and the domain asks for reject: refused at SMTP time"),
                           reject_reply.replace("{d}", checks.from_domain or "?"))
        if checks.dmarc.disposition == "quarantine":
            return Verdict("Junk", Text(junk_fr, junk_en), warning="quarantine")
        return None

    def decide(self, checks: Checks) -> Verdict:  # pragma: no cover - overridden
        raise NotImplementedError

    def stamp(self, host, checks: Checks, ip: str, mail_from: str, helo: str) -> bytes:
        raise NotImplementedError


def _dmarc_comment(checks: Checks) -> str:
    v = checks.dmarc.rfc9989 if checks.dmarc is not None else None
    if v is None or v.policy is None:
        return ""
    sp = v.policy.upper()
    dis = {"none": "NONE", "quarantine": "QUARANTINE", "reject": "REJECT"}[v.disposition]
    return f"p={v.policy.upper()} sp={sp} dis={dis if v.result == 'fail' else 'NONE'}"


_FROM_REFUSAL = Text("l'en-tête From n'a pas exactement une adresse (aucun, plusieurs champs ou plusieurs adresses) : "
                     "DMARC ne peut pas juger le message par un seul domaine (RFC 7489 §6.6.1, RFC 5322 §3.6)",
                     "the From header does not hold exactly one address (none, several fields or several addresses): "
                     "DMARC cannot judge the message by one domain (RFC 7489 §6.6.1, RFC 5322 §3.6)")


class GmailPolicy(Policy):
    name = "gmail"
    authserv_id = PROVIDERS["gmail"].authserv_id or "mx.gmail.test"

    def decide(self, checks: Checks) -> Verdict:
        if checks.from_problem is not None:  # Google's published refusals (support.google.com/mail/answer/81126)
            reply = ("550 5.7.1 Messages missing a valid address in From: header, or having no From: header, are not "
                     "accepted." if checks.from_problem == "none" else
                     "550 5.7.1 This message is not RFC 5322 compliant. There are multiple From headers or addresses. "
                     "To reduce the amount of spam sent to Gmail, this message has been blocked.")
            return Verdict(None, _FROM_REFUSAL, reply)
        dmarc = self.dmarc_verdict(checks, "550 5.7.26 Unauthenticated email from {d} is not accepted due to domain's "
                                           "DMARC policy. Please contact the administrator of {d} domain.",
                                   "DMARC échoue et le domaine demande quarantine : indésirables",
                                   "DMARC fails and the domain asks for quarantine: spam")
        if dmarc is not None:
            return dmarc
        if not (checks.spf_pass or checks.dkim_pass):
            return Verdict("Junk", Text("ni SPF ni DKIM ne passent : Gmail ne peut pas authentifier l'expéditeur (spam, avec un avertissement)",
                           "neither SPF nor DKIM pass: Gmail cannot authenticate the sender (spam, with a warning)"),
                           warning="Soyez prudent avec ce message : Gmail n'a pas pu vérifier qu'il a bien été envoyé par "
                                   f"{checks.from_domain}. / Be careful with this message: Gmail could not verify it was "
                                   f"sent by {checks.from_domain}.")
        if checks.iprev != "pass":
            return Verdict("Junk", Text("le serveur d'envoi n'a pas de PTR valide (DNS inverse)",
                           "the sending server has no valid PTR (reverse DNS)"), warning="no PTR")
        return Verdict("INBOX", Text("SPF ou DKIM passe et le DNS inverse est valide : boîte de réception",
                       "SPF or DKIM passes and reverse DNS is valid: inbox"))

    def stamp(self, host, checks: Checks, ip: str, mail_from: str, helo: str) -> bytes:
        results = []
        for c in checks.dkim:
            results.append(MethodResult("dkim", "neutral" if c.result == "permerror" and c.code == "key-not-found" else c.result,
                                        properties={"header.i": c.auid, "header.s": c.selector, "header.b": c.header_b},
                                        comments=(("no key for signature",) if c.code == "key-not-found" else ())))
        spf = checks.spf
        who = f"domain of {spf.sender}" if spf.identity == "mailfrom" else f"domain of {helo}"
        spf_comment = {"pass": f"gmail.test: {who} designates {ip} as permitted sender",
                       "fail": f"gmail.test: {who} does not designate {ip} as permitted sender",
                       "softfail": f"gmail.test: {who} does not designate {ip} as permitted sender",
                       "neutral": f"gmail.test: {ip} is neither permitted nor denied by best guess record for domain of {spf.sender}",
                       "none": f"gmail.test: {spf.domain} does not designate permitted sender hosts"}.get(spf.result.value,
                                                                                                  f"gmail.test: error in processing during lookup of {spf.sender}")
        results.append(MethodResult("spf", spf.result.value, comments=(spf_comment,), properties={"smtp.mailfrom": spf.sender}))
        if checks.dmarc is not None:
            comment = _dmarc_comment(checks)
            results.append(MethodResult("dmarc", checks.dmarc_result, comments=((comment,) if comment else ()),
                                        properties={"header.from": checks.from_domain}))
        ar = make_authentication_results(self.authserv_id, results)
        received_spf = f"{spf.result.value} ({spf_comment}) client-ip={ip};"
        return f"Authentication-Results: {ar}\r\nReceived-SPF: {received_spf}\r\n".encode()


class OutlookPolicy(Policy):
    name = "outlook"

    def decide(self, checks: Checks) -> Verdict:
        if checks.from_problem is not None:  # Exchange Online's NDR 5.7.512
            return Verdict(None, _FROM_REFUSAL, "550 5.7.512 Access denied, message must be RFC 5322 section 3.6.2 "
                                                "compliant and include a valid From address")
        dmarc = self.dmarc_verdict(checks, "550 5.7.509 Access denied, sending domain {d} does not pass DMARC "
                                           "verification and has a DMARC policy of reject.",
                                   "DMARC échoue et le domaine demande quarantine : courrier indésirable",
                                   "DMARC fails and the domain asks for quarantine: junk")
        if dmarc is not None:
            return dmarc
        missing = [name for name, ok in (("SPF", checks.spf_pass), ("DKIM", checks.dkim_pass),
                                         ("DMARC", checks.dmarc_result == "pass")) if not ok]
        if missing:
            return Verdict("Junk", Text(f"Microsoft exige SPF, DKIM et DMARC alignés ; manque : {', '.join(missing)}",
                           f"Microsoft requires SPF, DKIM and aligned DMARC; missing: {', '.join(missing)}"),
                           warning="Courrier indésirable / Junk (compauth=fail)")
        return Verdict("INBOX", Text("SPF, DKIM et DMARC passent : boîte de réception", "SPF, DKIM and DMARC pass: inbox"))

    def stamp(self, host, checks: Checks, ip: str, mail_from: str, helo: str) -> bytes:
        spf = checks.spf
        spf_comment = {"pass": f"sender IP is {ip}", "none": f"sender IP is {ip}"}.get(spf.result.value, f"sender IP is {ip}")
        parts = [f"spf={spf.result.value} ({spf_comment}) smtp.mailfrom={spf.domain}"]
        if checks.dkim:
            for c in checks.dkim:
                comment = "signature was verified" if c.result == "pass" else "signature did not verify"
                parts.append(f"dkim={c.result} ({comment}) header.d={c.domain}")
        else:
            parts.append("dkim=none (message not signed) header.d=none")
        if checks.dmarc is not None:
            action = {"none": "none", "quarantine": "quarantine", "reject": "oreject"}[checks.dmarc.disposition]
            parts.append(f"dmarc={checks.dmarc_result} action={action} header.from={checks.from_domain}")
        good = checks.spf_pass and checks.dkim_pass and checks.dmarc_result == "pass"
        parts.append(f"compauth={'pass' if good else 'fail'} reason={'100' if good else '001'}")
        received_spf = (f"{spf.result.value.capitalize()} (protection.outlook.test: domain of {spf.domain} "
                        f"{'designates' if spf.result.value == 'pass' else 'does not designate'} {ip} as permitted sender) "
                        f"receiver=protection.outlook.test; client-ip={ip}; helo={helo};")
        return f"Authentication-Results: {';'.join(parts)}\r\nReceived-SPF: {received_spf}\r\n".encode()


class SchoolPolicy(Policy):
    """mailcow.labmail.cloud's rspamd: DMARC reject → refuse, quarantine → Junk, else inbox."""

    name = "school"
    authserv_id = "mailcow.labmail.cloud"

    def decide(self, checks: Checks) -> Verdict:
        dmarc = self.dmarc_verdict(checks, "550 5.7.1 Rejected by DMARC policy for {d}",
                                   "DMARC échoue et le domaine demande quarantine : indésirables",
                                   "DMARC fails and the domain asks for quarantine: junk")
        if dmarc is None and checks.from_problem is not None:  # rspamd's MULTIPLE_FROM / MISSING_FROM: spam score
            return Verdict("Junk", _FROM_REFUSAL)
        return dmarc or Verdict("INBOX", Text("accepté", "accepted"))

    def stamp(self, host, checks: Checks, ip: str, mail_from: str, helo: str) -> bytes:
        results = [MethodResult("dkim", c.result, properties={"header.d": c.domain, "header.s": c.selector, "header.b": c.header_b})
                   for c in checks.dkim] or [MethodResult("dkim", "none")]
        results.append(MethodResult("spf", checks.spf.result.value, properties={"smtp.mailfrom": checks.spf.sender}))
        if checks.dmarc is not None:
            results.append(MethodResult("dmarc", checks.dmarc_result, comments=(_dmarc_comment(checks),) if _dmarc_comment(checks) else (),
                                        properties={"header.from": checks.from_domain}))
        return f"Authentication-Results: {make_authentication_results(host.name, results)}\r\n".encode()


POLICIES = {"gmail": GmailPolicy(), "outlook": OutlookPolicy(), "school": SchoolPolicy()}
