"""The receiving server's view, step by step: an offline LearnDMARC.

:func:`replay` judges a message as a receiver of the lab does (same engine, same rules as the lab's
Gmail, Outlook and school servers) and returns every step it takes — TCP connection and PTR, EHLO,
MAIL FROM, RCPT TO, DATA, the header From, SPF term by term with the lookup counter, each DKIM signature
(key lookup, body hash, signature), DMARC (where the record was found, organizational domains, alignment)
and the verdict (Inbox, Junk or refused). :func:`labmail.plots.trust_chain` draws it; the widget
:func:`labmail.widgets.replay_steps` walks through it with "suivant / précédent".

>>> from labmail import replay
>>> chain = replay.replay(raw)                     # doctest: +SKIP  (envelope read from the Received header)
>>> [s.title for s in chain.steps][:3]             # doctest: +SKIP
['Connexion TCP', 'EHLO', 'MAIL FROM']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email import message_from_bytes
from typing import TYPE_CHECKING

from .errors import MessageError, UsageError
from ._rfc5322 import raw_fields
from .headers import READ_POLICY
from .i18n import Text, frame, tr
from .state import PROVIDERS

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .headers import Envelope

__all__ = ["Step", "Replay", "replay", "RECEIVERS", "FlowNode", "FlowEdge", "Flow", "flow"]

RECEIVERS = {**{name: p.authserv_id or p.domain for name, p in PROVIDERS.items()}, "school": "mailcow.labmail.cloud"}
_STATUS = {"pass": "pass", "fail": "fail", "softfail": "fail", "permerror": "fail", "temperror": "fail",
           "none": "neutral", "neutral": "neutral", "policy": "fail"}


@dataclass(frozen=True)
class Step:
    """One step of the receiving server: what it looked at, the outcome, and why.

    ``status`` is ``pass`` (green), ``fail`` (red) or ``neutral`` (grey); ``lines`` the details (SPF terms,
    DKIM sub-checks, DMARC alignment) as (text, status) pairs.
    """

    phase: str  # smtp, header, spf, dkim, dmarc, verdict
    title: str
    summary: Text
    status: str
    explanation: Text
    lines: tuple[tuple[str, str], ...] = ()
    rfc: str = ""

    def __str__(self) -> str:
        mark = {"pass": "✔", "fail": "✘", "neutral": "•"}[self.status]
        return f"{mark} {self.title} — {self.summary}"


@dataclass(frozen=True)
class Replay:
    """A message as one receiver judged it: the steps in order, and where the message went."""

    receiver: str
    steps: tuple[Step, ...]
    folder: str | None  # INBOX, Junk, or None (refused)
    reply: str = ""
    checks: object = field(default=None, repr=False)  # labmail.judge.Checks

    @property
    def disposition(self) -> str:
        """``inbox``, ``junk`` or ``rejected``."""
        return {"INBOX": "inbox", "Junk": "junk", None: "rejected"}[self.folder]

    def step(self, phase: str) -> Step:
        """The first step of ``phase`` (``spf``, ``dkim``, ``dmarc``, ``verdict``…)."""
        return next(s for s in self.steps if s.phase == phase)

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame([{"étape": i + 1, "phase": s.phase, "titre": s.title, "résultat": s.status,
                              "résumé": str(s.summary), "explication": str(s.explanation), "RFC": s.rfc}
                             for i, s in enumerate(self.steps)])

    def __str__(self) -> str:
        return "\n".join(f"{i + 1:>2}. {s}" for i, s in enumerate(self.steps))

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))


def replay(raw: bytes | str, envelope: "Envelope | None" = None, *, receiver: str = "gmail", rcpt: str | None = None,
           world=None, resolver=None) -> Replay:
    """Judge ``raw`` as the lab's ``receiver`` (``gmail``, ``outlook`` or ``school``) does, step by step.

    ``envelope`` (client IP, MAIL FROM, HELO) defaults to what the receiving server recorded in its
    ``Received`` and ``Authentication-Results`` headers. The DNS is asked now: replay a message before and
    after publishing a record to see what changed.
    """
    from .resolver import Resolver
    from .headers import envelope_from_headers
    from .judge import POLICIES, judge

    if receiver not in POLICIES:
        raise UsageError(f"Destinataire inconnu « {receiver} » : choisissez parmi {', '.join(POLICIES)}.",
                           f"Unknown receiver \"{receiver}\": choose among {', '.join(POLICIES)}.")
    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if envelope is None:
        envelope = envelope_from_headers(data)
        if envelope is None:
            raise MessageError("Ce message n'a pas d'en-tête Received avec l'adresse du client : donnez envelope="
                               "Envelope(ip, mail_from, helo).",
                               "This message has no Received header with the client's address: give envelope="
                               "Envelope(ip, mail_from, helo).")
        data = _strip_receiver_headers(data)
    if resolver is None:
        from .world import current

        resolver = Resolver(world=world or current())
    checks = judge(data, ip=envelope.ip, mail_from=envelope.mail_from, helo=envelope.helo, resolver=resolver)
    verdict = POLICIES[receiver].decide(checks)
    msg = message_from_bytes(data, policy=READ_POLICY)
    steps = [*_smtp_steps(checks, envelope, rcpt or str(msg.get("To", "")), len(data)),
             _from_step(checks, str(msg.get("From", ""))), _spf_step(checks.spf),
             *_dkim_steps(checks.dkim), _dmarc_step(checks), _verdict_step(receiver, verdict)]
    return Replay(receiver, tuple(steps), verdict.folder, verdict.reply, checks)


def _strip_receiver_headers(data: bytes) -> bytes:
    """Drop the headers the receiving server prepended (its verdict), so the replay judges what it received."""
    head, sep, body = data.partition(b"\r\n\r\n")
    fields = raw_fields(head)
    added = (b"authentication-results:", b"received-spf:", b"x-ms-exchange-", b"received:")
    start = 0
    while start < len(fields) and fields[start].lower().startswith(added):
        start += 1
        if fields[start - 1].lower().startswith(b"received:"):
            break  # the receiver's own Received header is the last one it added
    return b"\r\n".join(fields[start:]) + sep + body


def _smtp_steps(checks, envelope, rcpt: str, size: int) -> list[Step]:
    ptr = checks.iprev_name
    iprev = "pass" if checks.iprev == "pass" else "fail"
    helo_result = checks.spf_helo.result.value
    return [
        Step("smtp", tr("Connexion TCP", "TCP connection"),
             Text(f"{envelope.ip} → PTR {ptr or 'aucun'}", f"{envelope.ip} → PTR {ptr or 'none'}"), iprev,
             Text("le serveur voit l'adresse du client et cherche son nom (PTR), puis vérifie que ce nom redonne l'adresse "
                  "(FCrDNS) — comme le cachet de la poste qui dit d'où vient la lettre",
                  "the server sees the client's address and looks up its name (PTR), then checks that the name maps back "
                  "to the address (FCrDNS) — like the postmark saying where a letter comes from"), rfc="RFC 8601 §3"),
        Step("smtp", "EHLO", Text(f"EHLO {envelope.helo or '—'} (SPF du HELO : {helo_result})",
                                  f"EHLO {envelope.helo or '—'} (HELO SPF: {helo_result})"), "neutral",
             Text("le client se présente ; le nom annoncé n'est pas une preuve", "the client introduces itself; the "
                  "announced name proves nothing"), rfc="RFC 5321 §4.1.1.1"),
        Step("smtp", "MAIL FROM", Text(f"MAIL FROM:<{envelope.mail_from}>", f"MAIL FROM:<{envelope.mail_from}>"), "neutral",
             Text("l'expéditeur d'enveloppe (adresse de retour) : c'est lui que SPF vérifie, pas le From affiché",
                  "the envelope sender (return address): SPF checks it, not the displayed From"), rfc="RFC 5321 §3.3"),
        Step("smtp", "RCPT TO", Text(f"RCPT TO:<{rcpt.strip('<> ')}>", f"RCPT TO:<{rcpt.strip('<> ')}>"), "neutral",
             Text("le destinataire d'enveloppe : l'adresse écrite sur l'enveloppe", "the envelope recipient: the "
                  "address written on the envelope"), rfc="RFC 5321 §3.3"),
        Step("smtp", "DATA", Text(f"{size} octets reçus", f"{size} bytes received"), "neutral",
             Text("le contenu : en-têtes (la lettre) et corps", "the content: headers (the letter) and body"),
             rfc="RFC 5321 §4.1.1.4"),
    ]


def _from_step(checks, from_header: str) -> Step:
    domain = checks.from_domain
    return Step("header", "From", Text(f"{from_header or '—'} → domaine {domain or '?'}",
                                       f"{from_header or '—'} → domain {domain or '?'}"),
                "neutral" if domain else "fail",
                Text("l'auteur affiché au destinataire : c'est ce domaine que DMARC protège",
                     "the author shown to the reader: DMARC protects this domain"), rfc="RFC 5322 §3.6.2")


def _spf_step(spf) -> Step:
    lines = []
    for s in spf.trace:
        status = {True: "pass", False: "neutral", None: "neutral"}[s.matched]
        counter = f" [{s.lookups}/10]" if s.lookups else ""
        lines.append((f"{'  ' * s.depth}{s.domain}: {s.term}{counter} — {s.detail}", status))
    result = spf.result.value
    return Step("spf", "SPF", Text(f"spf={result} pour {spf.domain} ({spf.lookups}/10 requêtes)",
                                   f"spf={result} for {spf.domain} ({spf.lookups}/10 lookups)"),
                _STATUS.get(result, "neutral"), spf.reason, tuple(lines), "RFC 7208")


def _dkim_steps(signatures) -> list[Step]:
    if not signatures:
        return [Step("dkim", "DKIM", Text("aucune signature", "no signature"), "neutral",
                     Text("le message n'est pas signé : rien à vérifier", "the message is not signed: nothing to verify"),
                     rfc="RFC 6376")]
    steps = []
    order = ["key", "body", "signature"]
    failed_at = {"key-not-found": "key", "key-revoked": "key", "key-invalid": "key", "key-too-small": "key",
                 "rsa-sha1": "key", "body-hash": "body", "signature": "signature"}
    for c in signatures:
        stop = failed_at.get(c.code)
        texts = {"key": tr(f"clé {c.selector}._domainkey.{c.domain}", f"key {c.selector}._domainkey.{c.domain}")
                 + (f" ({c.key_bits} bits)" if c.key_bits else ""),
                 "body": tr("empreinte du corps (bh=)", "body hash (bh=)"),
                 "signature": tr("signature des en-têtes (b=)", "header signature (b=)")}
        lines, reached = [], True
        if stop is None and c.result != "pass":  # expired, DNS error, testing key…: one reason, no sub-check
            lines.append((texts["key"] + " : " + str(c.reason), _STATUS.get(c.result, "neutral")))
        else:
            for part in order:
                if not reached:
                    lines.append((texts[part] + tr(" : non vérifiée", ": not checked"), "neutral"))
                elif stop == part:
                    lines.append((texts[part] + " : " + str(c.reason), "fail"))
                    reached = False
                else:
                    lines.append((texts[part] + tr(" : conforme", ": matches"), "pass"))
        status = "pass" if c.counts_for_dmarc else _STATUS.get(c.result, "neutral")
        summary = f"dkim={c.result} d={c.domain} (s={c.selector}, {c.algorithm})"
        steps.append(Step("dkim", "DKIM", Text(summary, summary),
                          status, c.reason, tuple(lines), c.rfc))
    return steps


def _dmarc_step(checks) -> Step:
    if checks.dmarc is None:
        return Step("dmarc", "DMARC", Text("pas de domaine From", "no From domain"), "fail",
                    Text("sans From lisible, DMARC ne peut rien vérifier", "without a readable From DMARC cannot check"),
                    rfc="RFC 9989")
    v = checks.dmarc.rfc9989
    if v.discovery is not None:
        found = str(v.discovery.explain())
    else:
        found = tr(f"enregistrement trouvé sur _dmarc.{v.record_domain}", f"record found at _dmarc.{v.record_domain}") \
            if v.record_domain else tr("aucun enregistrement (cherché : ", "no record (looked up: ") + ", ".join(v.queried) + ")"
    lines = ((found, "pass" if v.record_domain else "neutral"),
             (tr(f"domaine organisationnel du From : {v.org_from}", f"From's organizational domain: {v.org_from}"), "neutral"),
             ("SPF : " + str(v.spf_detail), "pass" if v.spf_aligned else "fail"),
             ("DKIM : " + str(v.dkim_detail), "pass" if v.dkim_aligned else "fail"))
    policy = f"{v.policy_tag or 'p'}={v.policy}" if v.policy else tr("pas de politique", "no policy")
    return Step("dmarc", "DMARC", Text(f"dmarc={v.result} ({policy} → {v.disposition})",
                                       f"dmarc={v.result} ({policy} → {v.disposition})"),
                _STATUS.get(v.result, "neutral"), v.reason, lines, "RFC 9989 §4")


def _verdict_step(receiver: str, verdict) -> Step:
    if verdict.folder is None:
        summary, status = Text(f"refusé : {verdict.reply}", f"refused: {verdict.reply}"), "fail"
    elif verdict.folder == "Junk":
        summary, status = Text("classé en indésirables (Junk)", "filed as junk"), "fail"
    else:
        summary, status = Text("boîte de réception", "inbox"), "pass"
    return Step("verdict", tr(f"Verdict ({receiver})", f"Verdict ({receiver})"), summary, status,
                verdict.reason)


# ---------------------------------------------------------------------------
# The flow of a message: MUA → MSA → MTA → MTA → MDA → MUA, for a real message
# ---------------------------------------------------------------------------
_POSTAL = {
    "MUA": Text("vous écrivez la lettre", "you write the letter"),
    "MSA": Text("le guichet de la poste : il vérifie votre identité", "the post office counter: it checks who you are"),
    "MTA": Text("le centre de tri : il cherche la destination (MX)", "the sorting centre: it looks up the destination (MX)"),
    "MTA-in": Text("le centre de tri d'arrivée : il vérifie cachet et sceau (SPF, DKIM, DMARC)",
                   "the arrival sorting centre: it checks postmark and seal (SPF, DKIM, DMARC)"),
    "MDA": Text("le facteur : il dépose la lettre dans la bonne boîte", "the postman: puts the letter in the right box"),
    "MUA-in": Text("le destinataire relève sa boîte (IMAP/POP)", "the recipient collects the mail (IMAP/POP)"),
}


@dataclass(frozen=True)
class FlowNode:
    """One agent on the path: its role (MUA, MSA, MTA, MDA), the real host, and the postal analogy."""

    role: str
    host: str
    caption: Text


@dataclass(frozen=True)
class FlowEdge:
    """One transfer: protocol and port, TLS, authentication, and the DNS questions asked on the way."""

    protocol: str
    port: str
    tls: bool
    authenticated: bool
    dns: tuple[str, ...] = ()
    delay_s: float | None = None


@dataclass(frozen=True)
class Flow:
    """The path of one message, read from its Received headers, and the receiver's verdicts."""

    nodes: tuple[FlowNode, ...]
    edges: tuple[FlowEdge, ...]
    results: dict  # spf/dkim/dmarc → result, from the receiver's Authentication-Results


def flow(raw: bytes | str) -> Flow:
    """The seed's step-1 diagram for an actual message: its hosts, ports, protocols, TLS and authentication.

    >>> f = flow(raw)                                 # doctest: +SKIP
    >>> [n.role for n in f.nodes]                     # doctest: +SKIP
    ['MUA', 'MSA', 'MTA', 'MDA', 'MUA']
    """
    from .headers import _hop_rows, parse_authentication_results, parse_received, read_message

    data = raw.encode("utf-8") if isinstance(raw, str) else raw
    msg = read_message(data)
    hops = [parse_received(str(v)) for v in reversed(msg.get_all("Received", []))]
    if not hops:
        raise MessageError("Ce message n'a aucun en-tête Received : il faut la source complète du message reçu "
                           "(« Afficher l'original » / « Afficher la source »).",
                           "This message has no Received header: give the full source of the received message "
                           "(\"Show original\" / \"View source\").")
    delays = [row["délai_s"] for row in _hop_rows(data)]
    first = hops[0]
    nodes = [FlowNode("MUA", first.from_helo or first.from_ip or "?", _POSTAL["MUA"])]
    edges = []
    rcpt_domain = (hops[-1].for_ or str(msg.get("To", ""))).strip("<> ").rpartition("@")[2]
    for index, hop in enumerate(hops):
        last = index == len(hops) - 1
        if index == 0 and hop.authenticated:
            role, caption = "MSA", _POSTAL["MSA"]
        elif last:
            role, caption = "MTA", _POSTAL["MTA-in"]
        else:
            role, caption = "MTA", _POSTAL["MTA"]
        protocol = (hop.with_ or "SMTP").upper()
        port = "587/465" if hop.authenticated else ("25" if "SMTP" in protocol else "?")
        dns_asked = (f"MX {rcpt_domain}",) if last and index > 0 else ()
        edges.append(FlowEdge(protocol, port, hop.tls, hop.authenticated, dns_asked, delays[index]))
        nodes.append(FlowNode(role, hop.by or "?", caption))
    results = {}
    if msg.get("Authentication-Results"):
        ar = parse_authentication_results(str(msg["Authentication-Results"]))
        results = {m: getattr(ar.get(m), "result", "none") for m in ("spf", "dkim", "dmarc")}
    edges[-1] = FlowEdge(edges[-1].protocol, edges[-1].port, edges[-1].tls, edges[-1].authenticated,
                         edges[-1].dns + tuple(f"{m.upper()} {r}" for m, r in results.items()), edges[-1].delay_s)
    nodes.append(FlowNode("MDA", tr("boîte ", "mailbox ") + (hops[-1].for_ or rcpt_domain or "?").strip("<>"), _POSTAL["MDA"]))
    edges.append(FlowEdge(tr("livraison", "delivery"), "", True, False))
    nodes.append(FlowNode("MUA", tr("client de messagerie", "mail client"), _POSTAL["MUA-in"]))
    edges.append(FlowEdge("IMAP/POP", "993/995", True, True))
    return Flow(tuple(nodes), tuple(edges), results)
