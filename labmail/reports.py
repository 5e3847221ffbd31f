"""DMARC aggregate reports: what receivers tell a domain about the mail that claimed to come from it.

A receiver that honours ``rua=mailto:…`` sends, once a day, an XML report (usually gzipped, attached to a
mail): for each sending address, how many messages, the DMARC disposition, and the SPF and DKIM results.
:func:`build` writes one (RFC 7489 appendix C, or the RFC 9990 format); :func:`parse` reads XML, gzip, zip
or the whole report mail into a DataFrame; :func:`labmail.plots.dmarc_report` draws it. In the lab, the
providers send theirs when asked: :func:`labmail.lab.send_dmarc_reports` ("end of the day").

>>> from labmail import reports
>>> frame = reports.parse(open("rapport.xml.gz", "rb").read())    # doctest: +SKIP
>>> frame.groupby("source_ip")["count"].sum()                     # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from .i18n import frame
from .errors import ReportError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["Judgement", "build", "parse", "FORMATS", "COLUMNS"]

FORMATS = ("7489", "9990")
NS_9990 = "urn:ietf:params:xml:ns:dmarc-2.0"
COLUMNS = ["rapporteur", "report_id", "début", "fin", "domaine", "p", "source_ip", "count", "disposition", "dkim", "spf",
           "header_from", "envelope_from", "dkim_domain", "dkim_result", "spf_domain", "spf_result", "format"]


@dataclass(frozen=True)
class Judgement:
    """One message as a receiver judged it (the raw material of a report)."""

    source_ip: str
    header_from: str
    envelope_from: str
    disposition: str  # none, quarantine, reject
    dkim_aligned: bool
    spf_aligned: bool
    dkim: tuple[tuple[str, str, str], ...]  # (domain, selector, result)
    spf_domain: str
    spf_result: str


def build(judgements: list[Judgement], *, org_name: str, email: str, report_id: str, domain: str, policy: dict,
          begin: datetime, end: datetime, format: str = "7489") -> bytes:
    """An aggregate report as XML bytes. ``policy`` is the published record's tags (``p``, ``sp``, ``adkim``…).

    Identical rows are counted together, as receivers do. ``format="9990"`` writes the RFC 9990 form
    (namespace, ``<version>``, ``np``/``testing``/``discovery_method`` instead of ``pct``).
    """
    if format not in FORMATS:
        raise UsageError(f"Format de rapport inconnu « {format} » : « 7489 » ou « 9990 ».",
                           f"Unknown report format \"{format}\": \"7489\" or \"9990\".")
    root = ET.Element("feedback", {"xmlns": NS_9990} if format == "9990" else {})
    if format == "9990":
        ET.SubElement(root, "version").text = "1.0"
    meta = ET.SubElement(root, "report_metadata")
    for tag, value in (("org_name", org_name), ("email", email), ("report_id", report_id)):
        ET.SubElement(meta, tag).text = value
    dates = ET.SubElement(meta, "date_range")
    ET.SubElement(dates, "begin").text = str(int(begin.timestamp()))
    ET.SubElement(dates, "end").text = str(int(end.timestamp()))
    if format == "9990":
        ET.SubElement(meta, "generator").text = "labmail"
    published = ET.SubElement(root, "policy_published")
    ET.SubElement(published, "domain").text = domain
    p = str(policy.get("p") or "none")
    if format == "9990":  # RFC 9990 order: domain, discovery_method, p, sp, np, fo, adkim, aspf, testing
        values = [("discovery_method", "treewalk"), ("p", p), ("sp", policy.get("sp") or p),
                  ("np", policy.get("np") or policy.get("sp") or p), ("fo", policy.get("fo") or "0"),
                  ("adkim", policy.get("adkim") or "r"), ("aspf", policy.get("aspf") or "r"),
                  ("testing", "y" if policy.get("t") == "y" else "n")]
    else:  # RFC 7489 appendix C: domain, adkim, aspf, p, sp, pct
        values = [("adkim", policy.get("adkim") or "r"), ("aspf", policy.get("aspf") or "r"), ("p", p),
                  ("sp", policy.get("sp") or p), ("pct", str(policy.get("pct", 100)))]
    for tag, value in values:
        ET.SubElement(published, tag).text = str(value)
    for judgement, count in Counter(judgements).items():
        record = ET.SubElement(root, "record")
        row = ET.SubElement(record, "row")
        ET.SubElement(row, "source_ip").text = judgement.source_ip
        ET.SubElement(row, "count").text = str(count)
        evaluated = ET.SubElement(row, "policy_evaluated")
        ET.SubElement(evaluated, "disposition").text = judgement.disposition
        ET.SubElement(evaluated, "dkim").text = "pass" if judgement.dkim_aligned else "fail"
        ET.SubElement(evaluated, "spf").text = "pass" if judgement.spf_aligned else "fail"
        identifiers = ET.SubElement(record, "identifiers")
        ET.SubElement(identifiers, "header_from").text = judgement.header_from
        ET.SubElement(identifiers, "envelope_from").text = judgement.envelope_from
        auth = ET.SubElement(record, "auth_results")
        for d, selector, result in judgement.dkim:
            node = ET.SubElement(auth, "dkim")
            ET.SubElement(node, "domain").text = d
            ET.SubElement(node, "selector").text = selector
            ET.SubElement(node, "result").text = result
        spf = ET.SubElement(auth, "spf")
        ET.SubElement(spf, "domain").text = judgement.spf_domain
        ET.SubElement(spf, "scope").text = "mfrom"
        ET.SubElement(spf, "result").text = judgement.spf_result
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def parse(data: bytes | str) -> "pandas.DataFrame":
    """Read aggregate report(s) — XML, ``.gz``, ``.zip``, or a whole report mail (every attachment) — into one
    DataFrame, a row per record (several DKIM signatures joined with ", "): see :data:`COLUMNS`."""

    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    rows: list[dict] = []
    for xml in _documents(raw):
        rows.extend(_rows(xml))
    table = frame(rows, columns=COLUMNS)
    table["count"] = table["count"].astype(int)
    return table


def _documents(raw: bytes) -> list[bytes]:
    if raw[:2] == b"\x1f\x8b":
        try:
            return [gzip.decompress(raw)]
        except (OSError, EOFError) as exc:
            raise ReportError("Fichier gzip abîmé : téléchargez de nouveau la pièce jointe du rapport.",
                               "Damaged gzip file: download the report attachment again.") from exc
    if raw[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                return [archive.read(n) for n in archive.namelist() if n.lower().endswith(".xml")]
        except zipfile.BadZipFile as exc:
            raise ReportError("Archive zip abîmée : téléchargez de nouveau la pièce jointe du rapport.",
                               "Damaged zip archive: download the report attachment again.") from exc
    if raw.lstrip()[:1] == b"<":
        return [raw]
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    found = []
    try:
        for part in msg.walk():
            payload = part.get_payload(decode=True) if not part.is_multipart() else None
            name = (part.get_filename() or "").lower()
            if isinstance(payload, bytes) and payload and (name.endswith((".xml", ".gz", ".zip")) or part.get_content_type() in (
                    "application/gzip", "application/zip", "application/xml", "text/xml")):
                found.extend(_documents(payload))
    except RecursionError:  # email's header parser recurses once per nested comment: thousands of them exceed the limit
        raise ReportError("Message illisible : un en-tête contient des milliers de commentaires imbriqués « ( ». Ce n'est "
                          "pas un rapport envoyé par un vrai destinataire ; ignorez-le.",
                          "Unreadable message: a header holds thousands of nested comments \"(\". No real receiver sends "
                          "such a report; ignore it.") from None
    if not found:
        raise ReportError("Ce n'est pas un rapport DMARC : ni XML, ni gzip, ni zip, ni message avec un rapport en pièce "
                           "jointe. Donnez le fichier joint au mail du rapport, ou le mail entier (.eml).",
                           "This is not a DMARC report: neither XML, gzip, zip nor a mail with a report attached. Give "
                           "the file attached to the report mail, or the whole mail (.eml).")
    return found


def _rows(xml: bytes) -> list[dict]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ReportError(f"XML du rapport illisible ({exc}) : le fichier est tronqué ou n'est pas un rapport DMARC.",
                           f"Unreadable report XML ({exc}): the file is truncated or not a DMARC report.") from exc
    for el in root.iter():  # namespace-agnostic: RFC 7489 reports have none, RFC 9990 ones do
        el.tag = el.tag.rpartition("}")[2]
    if root.tag != "feedback":
        raise ReportError(f"Élément racine <{root.tag}> : un rapport agrégé DMARC commence par <feedback>.",
                           f"Root element <{root.tag}>: a DMARC aggregate report starts with <feedback>.")
    fmt = "9990" if root.find("version") is not None else "7489"

    def text(node, path: str) -> str:
        found = node.find(path) if node is not None else None
        return (found.text or "").strip() if found is not None and found.text else ""

    meta, published = root.find("report_metadata"), root.find("policy_published")
    base = {"rapporteur": text(meta, "org_name"), "report_id": text(meta, "report_id"),
            "début": _time(text(meta, "date_range/begin")), "fin": _time(text(meta, "date_range/end")),
            "domaine": text(published, "domain"), "p": text(published, "p"), "format": fmt}
    rows = []
    for record in root.findall("record"):
        row = dict(base, source_ip=text(record, "row/source_ip"), count=text(record, "row/count") or "0",
                   disposition=text(record, "row/policy_evaluated/disposition"),
                   dkim=text(record, "row/policy_evaluated/dkim"), spf=text(record, "row/policy_evaluated/spf"),
                   header_from=text(record, "identifiers/header_from"),
                   envelope_from=text(record, "identifiers/envelope_from"),
                   spf_domain=text(record, "auth_results/spf/domain"), spf_result=text(record, "auth_results/spf/result"))
        dkims = record.findall("auth_results/dkim")
        rows.append(dict(row, dkim_domain=", ".join(text(n, "domain") for n in dkims),
                         dkim_result=", ".join(text(n, "result") for n in dkims) or "none"))
    return rows


def _time(value: str):
    return datetime.fromtimestamp(int(value), tz=timezone.utc) if value.isdigit() else None
