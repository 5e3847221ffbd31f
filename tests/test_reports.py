"""DMARC aggregate reports: written in both formats, read back from XML, gzip, zip and the report mail, drawn."""

from __future__ import annotations

import gzip
import io
import zipfile
from datetime import datetime, timezone
from email.message import EmailMessage

import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402

from labmail import plots, reports  # noqa: E402
from labmail import errors

GOOD = reports.Judgement("203.0.113.10", "jean.labmail.cloud", "jean.labmail.cloud", "none", True, True,
                         (("jean.labmail.cloud", "dkim", "pass"),), "jean.labmail.cloud", "pass")
SPOOF = reports.Judgement("192.0.2.66", "jean.labmail.cloud", "arnaque.test", "reject", False, False, (),
                          "arnaque.test", "pass")
FORWARD = reports.Judgement("198.51.100.7", "jean.labmail.cloud", "jean.labmail.cloud", "none", True, False,
                            (("jean.labmail.cloud", "dkim", "pass"), ("relais.example", "k1", "pass")),
                            "jean.labmail.cloud", "fail")


def build(fmt="7489", judgements=(GOOD, GOOD, GOOD, SPOOF, FORWARD)):
    return reports.build(list(judgements), org_name="gmail.test", email="noreply@gmail.test", report_id="r1",
                         domain="jean.labmail.cloud", policy={"p": "reject", "adkim": "r", "t": "y"},
                         begin=datetime(2026, 11, 28, tzinfo=timezone.utc), end=datetime(2026, 11, 29, tzinfo=timezone.utc),
                         format=fmt)


@pytest.mark.parametrize("fmt", ["7489", "9990"])
def test_round_trip_counts_identical_rows(fmt):
    xml = build(fmt)
    assert (b"urn:ietf:params:xml:ns:dmarc-2.0" in xml) == (fmt == "9990")
    assert (b"<pct>" in xml) == (fmt == "7489") and (b"<testing>y</testing>" in xml) == (fmt == "9990")
    if fmt == "9990":  # the order RFC 9990 prescribes
        assert xml.index(b"<discovery_method>") < xml.index(b"<p>") < xml.index(b"<np>") < xml.index(b"<adkim>") < xml.index(b"<testing>")
    frame = reports.parse(xml)
    assert list(frame.columns) == reports.COLUMNS and len(frame) == 3 and frame["count"].sum() == 5
    good = frame[frame["source_ip"] == "203.0.113.10"].iloc[0]
    assert (good["count"], good["dkim"], good["spf"], good["disposition"], good["format"]) == (3, "pass", "pass", "none", fmt)
    assert good["début"] == datetime(2026, 11, 28, tzinfo=timezone.utc) and good["p"] == "reject"
    spoof = frame[frame["source_ip"] == "192.0.2.66"].iloc[0]
    assert (spoof["dkim_result"], spoof["spf_result"], spoof["disposition"]) == ("none", "pass", "reject")
    forward = frame[frame["source_ip"] == "198.51.100.7"].iloc[0]
    assert forward["dkim_domain"] == "jean.labmail.cloud, relais.example" and forward["spf"] == "fail"


def test_every_container():
    xml = build()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("gmail.test!jean.labmail.cloud!1!2.xml", xml)
    mail = EmailMessage()
    mail["Subject"] = "Report Domain: jean.labmail.cloud"
    mail.set_content("rapport")
    mail.add_attachment(gzip.compress(xml), maintype="application", subtype="gzip", filename="r.xml.gz")
    for data in (xml, xml.decode(), gzip.compress(xml), buffer.getvalue(), mail.as_bytes()):
        assert reports.parse(data)["count"].sum() == 5


@pytest.mark.parametrize("data, fragment", [
    (b"Subject: bonjour\r\n\r\nrien\r\n", "pas un rapport DMARC"),
    (b"<feedback><record>", "XML du rapport illisible"),
    (b"<html></html>", "<feedback>"),
    # mtime=0: the same bytes on every xdist worker (the gzip header carries a time stamp).
    (gzip.compress(b"<feedback/>", mtime=0)[:-6], "gzip"),
    # email's header parser recurses once per nested comment (a RecursionError before)
    (b"From: a@b.example\r\nContent-Type: application/zip\r\nContent-Disposition: attachment; filename=r.zip "
     + b"\r\n ".join([b"(" * 900] * 12) + b"\r\n\r\nUEsFBg==\r\n", "commentaires imbriqués"),
], ids=["mail", "xml-tronque", "html", "gzip-tronque", "commentaires-imbriques"])
def test_bad_input_says_what_to_do(data, fragment):
    with pytest.raises(errors.ReportError, match=fragment):
        reports.parse(data)
    with pytest.raises(errors.UsageError, match="Format de rapport inconnu"):
        build("2.0")


def test_report_figure():
    frame = reports.parse(build())
    by_source, by_mechanism = plots.dmarc_report(frame)
    bars = {(to_hex(p.get_facecolor()), p.get_width()) for p in by_source.patches if p.get_width() > 0}
    assert ("#2e7d32", 3.0) in bars and ("#c62828", 1.0) in bars and ("#2e7d32", 1.0) in bars  # forwarded: DKIM saves it
    assert {t.get_text() for t in by_source.get_yticklabels()} == {"203.0.113.10", "192.0.2.66", "198.51.100.7"}
    widths = [p.get_width() for p in by_mechanism.patches]
    assert widths == [3.0, 4.0, 2.0, 1.0]  # SPF pass 3, DKIM pass 4, SPF fail 2, DKIM fail 1
