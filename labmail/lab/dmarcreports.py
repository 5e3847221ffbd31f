"""DMARC aggregate reports at the end of the day: each provider reports what it judged since its last report to the
``rua`` of each policy domain (RFC 7489 §7.2, RFC 9990 with ``fmt="9990"``), if the destination is authorised
(§7.1), DKIM-signed with the provider's key and sent through the lab's outbound relay.
"""

from __future__ import annotations

import email.utils
import json
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING

from .._files import atomic_write_text
from ..state import PROVIDERS
from .outbound import _domain

if TYPE_CHECKING:  # pragma: no cover
    from .smtp import Host, MailServices

log = logging.getLogger("labmail.lab.smtp")


class ReportSender:
    def __init__(self, services: "MailServices") -> None:
        self.services = services
        self._lock = threading.Lock()  # one "end of the day" at a time: the marker is read, then written

    _REPORTERS = {name: (p.domain, p.report_sender, p.selector) for name, p in PROVIDERS.items()}

    def send_all(self, fmt: str = "7489", *, only: str | None = None) -> list[dict]:
        """Each provider reports what it judged since its last report to the ``rua`` of each policy domain (``only``:
        of that domain and its subdomains — a student of a class lab asks for their own reports, no one else's).
        Two students asking at once are served one after the other (else one would write back a marker without the
        other's report, and their next call would send the same messages again)."""
        with self._lock:
            return self._send_all(fmt, only)

    def _send_all(self, fmt: str, only: str | None) -> list[dict]:
        from datetime import datetime, timezone

        from .. import dmarc, reports
        from ..dkim import sign

        marker = self.services.lab.layout.dmarc_reports_marker
        last = json.loads(marker.read_text()) if marker.exists() else {}

        def since(role: str, domain: str) -> float:
            """The end of the last report: this provider's about every domain, or about this one alone."""
            return max(float(last.get(role, 0.0)), float(last.get(f"{role}|{domain}", 0.0)))
        now = time.time()
        out = []
        resolver = self.services.resolver()
        for role, (org, sender, selector) in self._REPORTERS.items():
            host = self.services.hosts[role]
            groups: dict[str, list] = {}
            for record in self._judged(host):
                verdict = (record.get("checks") or {}).get("dmarc") or {}
                policy_domain = (verdict.get("9989") or {}).get("record_domain")
                if not policy_domain or (only is not None and policy_domain != only
                                         and not policy_domain.endswith("." + only)):
                    continue
                if since(role, policy_domain) <= record.get("received_at", 0) < now:
                    groups.setdefault(policy_domain, []).append(record)
            for domain, records in sorted(groups.items()):
                begun = since(role, domain)
                found = dmarc.discover(domain, resolver=resolver)
                if found.record is None:
                    continue
                authorised = {uri for uri, ok, _why in dmarc.report_authorization(domain, found.record, resolver=resolver)
                              if ok}
                begin = datetime.fromtimestamp(begun or min(r["received_at"] for r in records), tz=timezone.utc)
                end = datetime.fromtimestamp(now, tz=timezone.utc)
                report_id = f"{secrets.token_hex(8)}"
                xml = reports.build([_judgement(r) for r in records], org_name=org, email=sender, report_id=report_id,
                                    domain=domain, policy=dict(found.record.tags), begin=begin, end=end, format=fmt)
                for uri in found.record.rua:
                    rua = uri.split(":", 1)[1]
                    if not uri.lower().startswith("mailto:"):
                        continue
                    if uri not in authorised:
                        out.append({"provider": role, "domain": domain, "rua": rua, "messages": len(records),
                                    "status": "refused", "reply": "destination not authorised (RFC 7489 §7.1)"})
                        continue
                    data = _report_mail(org, sender, rua, domain, report_id, begin, end, xml)
                    key = self.services.lab.layout.dkim_private(org, selector)
                    if key.exists():
                        data = sign(data, org, selector, key.read_bytes())
                    status, reply = self.services.outbound.send(host, sender, [rua], data, _domain(rua))
                    log.info("DMARC report %s → %s (%s, %d messages): %s %s", org, rua, domain, len(records), status, reply)
                    out.append({"provider": role, "domain": domain, "rua": rua, "messages": len(records), "status": status,
                                "reply": reply, "report_id": report_id})
                last[f"{role}|{domain}"] = now
            if only is None:
                last[role] = now
        atomic_write_text(marker, json.dumps(last) + "\n")
        return out

    def _judged(self, host: Host):
        """Every record of a message ``host`` received (delivered or refused)."""
        paths = [p for d in host.domains for p in (self.services.store.root / d).glob("*/records/*.json")]
        paths += [p for p in self.services.lab.layout.rejected_dir.glob("*.json")]
        for path in paths:
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if record.get("server") == host.name and record.get("checks"):
                yield record


def _judgement(record: dict):
    from ..reports import Judgement

    checks, verdict = record["checks"], record.get("verdict") or {}
    dmarc9989 = checks["dmarc"]["9989"]
    if verdict.get("folder") is None:
        disposition = "reject"
    elif verdict.get("warning") == "quarantine":
        disposition = "quarantine"
    else:
        disposition = "none"
    return Judgement(record["client"]["ip"], checks.get("from_domain") or "", _domain(record.get("mail_from") or ""),
                     disposition, bool(dmarc9989.get("dkim_aligned")), bool(dmarc9989.get("spf_aligned")),
                     tuple((d["domain"], d["selector"], d["result"]) for d in checks.get("dkim", [])),
                     checks["spf"].get("domain") or "", checks["spf"]["result"])


def _report_mail(org: str, sender: str, rua: str, domain: str, report_id: str, begin, end, xml: bytes) -> bytes:
    """The report mail as receivers send it (RFC 7489 §7.2.1.1): subject, and the gzipped XML attached."""
    import gzip
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = rua
    msg["Subject"] = f"Report Domain: {domain} Submitter: {org} Report-ID: <{report_id}>"
    msg["Date"] = email.utils.format_datetime(email.utils.localtime())
    msg["Message-ID"] = f"<{report_id}@{org}>"
    msg.set_content(f"Rapport DMARC agrégé de {org} pour {domain}.\nDMARC aggregate report from {org} for {domain}.\n")
    name = f"{org}!{domain}!{int(begin.timestamp())}!{int(end.timestamp())}.xml.gz"
    msg.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip", filename=name)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
