"""Errors are told apart by type (one family under LabmailError, one class per concept), not by their French text;
each still says what to do, in French first."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from labmail import dkim, dmarc, errors, headers, interro, replay, reports, spf
from labmail.errors import LabmailError

NOW = datetime.now(timezone.utc)


@pytest.mark.parametrize("call,kind", [
    (lambda: dmarc.parse_record("v=DMARC1; p=none", standard="2015"), errors.UsageError),
    (lambda: replay.replay(b"Received: from a by b; Mon, 1 Dec 2026 10:00:00 +0000\r\n\r\nx", receiver="yahoo"), errors.UsageError),
    (lambda: interro.get("interro_99_nothing"), errors.UsageError),
    (lambda: spf.lint(), errors.UsageError),
    (lambda: dkim.tamper(b"From: a@b.example\r\n\r\nbody\r\n"), errors.UsageError),
    (lambda: headers.analyze(b"   "), errors.MessageError),
    (lambda: replay.flow(b"From: a@b.example\r\n\r\nbody\r\n"), errors.MessageError),
    (lambda: reports.parse(b"not a report at all"), errors.ReportError),
    (lambda: reports.build([], org_name="o", email="e@o.example", report_id="1", domain="d.example", policy={},
                           begin=NOW, end=NOW, format="2015"), errors.UsageError),
])
def test_each_concept_raises_its_own_type(call, kind):
    with pytest.raises(kind) as info:
        call()
    assert isinstance(info.value, LabmailError) and str(info.value)  # one family, and a message
    assert info.value.text.fr and info.value.text.en


def test_the_families():
    assert issubclass(errors.APIError, errors.MailError) and issubclass(errors.ReportError, errors.MessageError)
    assert issubclass(errors.UsageError, ValueError) and issubclass(errors.MessageError, ValueError)
    for cls in (errors.MailError, errors.APIError, errors.MessageError, errors.ReportError, errors.AutodiscoverError,
                errors.CourseError, errors.UsageError, errors.DNSError, errors.ConfigError, errors.LabError):
        assert issubclass(cls, LabmailError), cls


def test_tables_follow_the_language_setting():
    """A DataFrame's column names are French by default and English when the course is set to English."""
    from labmail import dmarc
    from labmail.i18n import COLUMN_NAMES, set_language

    record = dmarc.parse_record("v=DMARC1; p=reject; rua=mailto:r@example.com")
    assert list(record.to_dataframe().columns) == ["balise", "valeur", "signification"]
    set_language("en")
    try:
        assert list(record.to_dataframe().columns) == ["tag", "value", "meaning"]
        frame = headers.analyze(b"From: a@b.example\r\nSubject: s\r\n\r\nbody\r\n", recompute=False).findings_frame()
        assert list(frame.columns) == ["severity", "finding", "why", "fix", "RFC"]
    finally:
        set_language(None)
    assert all(name.isascii() for name in COLUMN_NAMES.values())
