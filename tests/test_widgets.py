"""The notebook widgets do what a click does: the same functions the notebooks show, and a clear message on refusal."""

from __future__ import annotations

import pytest

from labmail import config, course, dns, mail, widgets
from labmail.lab.mailstore import MailStore

DOMAIN = "jean-emile.labmail.cloud"


@pytest.fixture
def clean(lab_env):
    yield lab_env
    course.prepare(4)


def test_identity_form_previews_refuses_and_saves(monkeypatch, isolated_config):
    monkeypatch.delenv("LABMAIL_PRENOM", raising=False)
    form = widgets.identity_form()
    assert form.prenom.value == "" and "prenom.labmail.cloud" in form.preview.value
    form.prenom.value = "jean.pierre"
    assert "labmail-error" in form.preview.value and "point" in form.preview.value
    assert form.save() is None and "labmail-error" in form.message.value
    assert config.load().prenom is None  # nothing written
    form.prenom.value = "  Zoë Martin "
    assert "zoe-martin.labmail.cloud" in form.preview.value
    saved = form.save()
    assert saved.domain == "zoe-martin.labmail.cloud" and config.load().prenom == "zoe-martin"
    assert "Configuration enregistrée : votre domaine est zoe-martin.labmail.cloud." in form.message.value
    assert widgets.identity_form().prenom.value == "zoe-martin"  # prefilled next time


def test_dns_panel_adds_refuses_and_deletes(clean):
    panel = widgets.dns_panel()
    assert {r.type for r in panel.panel.list()} == {"SOA", "NS"}
    panel.name.value, panel.type.value, panel.value.value = "@", "MX", "10 203.0.113.10"
    assert panel.add() is None and "labmail-error" in panel.message.value  # MX to an address: refused, explained
    assert {r.type for r in panel.panel.list()} == {"SOA", "NS"}
    panel.value.value = "10 mailcow.labmail.cloud."
    assert panel.add() is not None and panel.value.value == ""
    assert dns.lookup(DOMAIN, "MX", authoritative=True).values == ["10 mailcow.labmail.cloud."]
    assert any("MX" in box.children[1].value for box in panel.records.children if hasattr(box, "children"))
    delete = next(box.children[0] for box in panel.records.children if hasattr(box, "children") and "MX" in box.children[1].value)
    delete.click()
    assert not dns.lookup(DOMAIN, "MX", authoritative=True).ok


def test_mailbox_form_send_form_and_viewer(clean):
    course.prepare(5)
    form = widgets.mailbox_form()
    form.local.value, form.full_name.value = "tintin", "Tintin"
    form.password.value, form.password2.value = "Un-mot-de-passe-1", "Un-autre"
    assert form.create() is None and "différents" in form.message.value
    assert form.password.value == form.password2.value == ""  # never left in the widget
    state = course.prepare(5)
    form.password.value = form.password2.value = state.new_password(state.tintin)
    assert form.create() == state.tintin and form.password.value == ""
    form.password.value = form.password2.value = state.new_password(state.milou)
    form.local.value = "milou"
    assert form.create() == state.milou
    form.password.value = form.password2.value = "x-Y-z-123456"
    assert form.create() is None and "labmail-error" in form.message.value  # exists already
    form.local.value = "haddock"
    form.password.value = form.password2.value = "Mille-sabords-42"
    assert form.create() == f"haddock@{DOMAIN}"
    assert mail.stored_password(f"haddock@{DOMAIN}") == "Mille-sabords-42"  # remembered, as a client would
    assert len(mail.imap(f"haddock@{DOMAIN}")) == 0  # and it logs in with it
    from labmail import lab

    mail.MailcowAPI.raise_for(mail.MailcowAPI(key=lab.api_key()).delete_mailbox(f"haddock@{DOMAIN}"))

    store = MailStore(clean[0].state_dir / "mail")
    before = store.counts(state.milou)
    send = widgets.send_form(state.tintin, state.milou, "Depuis le formulaire", "Bonjour Milou")
    result = send.send()
    assert result.accepted and "labmail-ok" in send.message.value
    assert store.wait_new(state.milou, before, 15) is not None
    refused = widgets.send_form(state.tintin, "personne@" + DOMAIN, "Perdu", "?").send()
    assert refused is not None and not refused.accepted

    viewer = widgets.mailbox_viewer(state.milou)
    assert [m.subject for m in viewer.listing][:1] == ["Depuis le formulaire"]
    assert "Subject: Depuis le formulaire" in viewer.source.value and "DKIM-Signature" in viewer.source.value
    viewer.folder.value = "Junk"
    assert viewer.listing == [] and viewer.source.value == ""
    assert all("\\Seen" not in m.flags for m in mail.imap(state.milou))  # reading in the viewer marks nothing


def test_header_analyzer_reads_pasted_headers(lab_env):
    analyzer = widgets.header_analyzer()
    assert analyzer.analyze() is None and "Message vide" in analyzer.result.value
    analyzer.text.value = ("Authentication-Results: mx.google.com; spf=pass smtp.mailfrom=example.org; dkim=none; "
                           "dmarc=fail header.from=example.org\r\nFrom: a@example.org\r\nSubject: test\r\n"
                           "Received: from mail.example.org (mail.example.org [192.0.2.1]) by mx.google.com with ESMTPS"
                           " id abc for <b@gmail.test>; Sun, 29 Nov 2026 10:00:00 +0000")
    report = analyzer.analyze()
    assert report is not None and report.from_domain == "example.org"
    assert "labmail-report" in analyzer.result.value and "spf=" in analyzer.result.value
    assert "192.0.2.1" in analyzer.result.value  # the hop table


def test_spf_builder_and_dmarc_chooser_publish(clean):
    builder = widgets.spf_builder()
    builder.ip4.value = "203.0.113.10"
    assert builder.record.value == "v=spf1 ip4:203.0.113.10 -all" and "labmail-ok" in builder.lint.value
    builder.all.value = "+all"
    assert "labmail-error" in builder.lint.value  # +all is flagged
    builder.all.value = "-all"
    builder.mx.value = True
    assert builder.publish() is not None
    assert dns.lookup(DOMAIN, "TXT", authoritative=True).values == ["v=spf1 mx ip4:203.0.113.10 -all"]
    builder.mx.value = False
    builder.publish()  # replaces, never a second SPF record
    assert dns.lookup(DOMAIN, "TXT", authoritative=True).values == ["v=spf1 ip4:203.0.113.10 -all"]

    chooser = widgets.dmarc_chooser()
    chooser.policy.value = "reject"
    assert chooser.record.value == "v=DMARC1; p=reject" and "refusés" in chooser.effect.value
    chooser.rua.value = "dmarc@jean-emile.labmail.cloud"  # without mailto: → the validation says so
    assert "labmail-error" in chooser.notes.value
    chooser.rua.value = f"mailto:dmarc@{DOMAIN}"
    chooser.policy.value = "quarantine"
    assert "labmail-ok" in chooser.notes.value and chooser.publish() is not None
    assert dns.lookup(f"_dmarc.{DOMAIN}", "TXT", authoritative=True).values == [f"v=DMARC1; p=quarantine; rua=mailto:dmarc@{DOMAIN}"]
