"""labmail.grading: every check with a good and a bad world state — the French message, None on success, and
nothing on stderr (nbgrader scores a cell with anything on stderr zero)."""

from __future__ import annotations

import json

import pytest

from labmail import course, grading, interro, mail
from labmail.dns import ZonePanel
from labmail.widgets import quiz

DOMAIN = "jean-emile.labmail.cloud"
HOST = "mailcow.labmail.cloud"


@pytest.fixture
def zone(lab_env):
    course.prepare(4)
    yield ZonePanel()
    course.prepare(4)


def fails(check, *args, match: str, capsys, **kwargs) -> None:
    with pytest.raises(AssertionError, match=match):
        check(*args, **kwargs)
    assert capsys.readouterr().err == ""


def passes(check, *args, capsys, **kwargs) -> None:
    assert check(*args, **kwargs) is None
    assert capsys.readouterr().err == ""


# -- quiz answers ---------------------------------------------------------------------------------------------------
def test_the_catalog_is_well_formed():
    assert len(interro.QUESTIONS) >= 15
    for qid, question in interro.QUESTIONS.items():
        assert qid.startswith("interro_") and question.check(question.correct).correct, qid
    with pytest.raises(Exception, match="inconnue"):
        interro.get("interro_99_rien")


def test_quiz_answers_are_recorded_on_answer_only_and_the_first_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    widget = quiz("interro_04_priorite")
    assert not (tmp_path / grading.ANSWERS_FILE).exists()  # building the widget records nothing
    fails(grading.answered, "interro_04_priorite", match="Pas encore de réponse.*Valider", capsys=capsys)
    widget.boxes[2].value = True
    widget.button.click()  # a click on "Valider"
    assert "✘" in widget.feedback.value
    widget.answer({0, 1})  # then the right answer, in code
    assert "✔" in widget.feedback.value
    saved = json.loads((tmp_path / grading.ANSWERS_FILE).read_text())
    assert saved["interro_04_priorite"]["first"] == [2] and saved["interro_04_priorite"]["last"] == [0, 1]
    assert saved["interro_04_priorite"]["attempts"] == 2
    passes(grading.answered, "interro_04_priorite", capsys=capsys)
    fails(grading.quiz_answer, "interro_04_priorite", {0, 1}, match="première réponse \\(n° 3\\) n'est pas la bonne",
          capsys=capsys)
    quiz("interro_04_priorite")  # re-running the notebook rebuilds the widget: the answers stay
    assert json.loads((tmp_path / grading.ANSWERS_FILE).read_text()) == saved
    second = quiz("interro_02_zone")
    second.answer(0)
    passes(grading.quiz_answer, "interro_02_zone", [0], capsys=capsys)
    fails(grading.quiz_answer, "interro_05_protocoles", {0, 1}, match="Pas de réponse", capsys=capsys)
    with pytest.raises(Exception, match="Une seule réponse"):
        second.answer({0, 1})


# -- the world --------------------------------------------------------------------------------------------------------
def test_mx(zone, capsys):
    fails(grading.mx, match=f"{DOMAIN} ne publie aucun MX.*MX 10 {HOST}", capsys=capsys)
    zone.add("@", "MX", "10 autre.labmail.cloud.")
    fails(grading.mx, match="doit désigner le serveur de l'école", capsys=capsys)
    zone.replace("@", "MX", f"10 {HOST}.")
    passes(grading.mx, capsys=capsys)


def test_spf(zone, capsys):
    fails(grading.spf, match="ne publie pas d'enregistrement SPF.*ip4:203.0.113.10 -all", capsys=capsys)
    zone.add("@", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    fails(grading.spf, match="donne fail pour le serveur de l'école \\(203.0.113.10\\)", capsys=capsys)
    zone.replace("@", "TXT", "v=spf1 ip4:203.0.113.10 ?all")
    fails(grading.spf, match="doit finir par -all", capsys=capsys)
    zone.replace("@", "TXT", ["v=spf1 ip4:203.0.113.10 -all", "v=spf1 mx -all"])
    fails(grading.spf, match="2 enregistrements SPF", capsys=capsys)
    zone.replace("@", "TXT", ["v=spf1 ip4:203.0.113.0/24 ~all", "google-site-verification=abc"])
    passes(grading.spf, capsys=capsys)


def test_dkim(zone, lab_env, capsys):
    cfg, _ = lab_env
    record = (cfg.state_dir / "keys" / "dkim" / f"{DOMAIN}.dkim.txt").read_text().strip()
    fails(grading.dkim, match=f"Rien n'est publié à dkim._domainkey.{DOMAIN}", capsys=capsys)
    zone.add("dkim._domainkey", "TXT", record[:255])  # what a panel that truncates publishes
    fails(grading.dkim, match="elle est tronquée", capsys=capsys)
    other = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx"
    zone.replace("dkim._domainkey", "TXT", other)
    fails(grading.dkim, match="ce n'est pas celle du serveur", capsys=capsys)
    zone.replace("dkim._domainkey", "TXT", record)
    passes(grading.dkim, capsys=capsys)


def test_dmarc(zone, capsys):
    fails(grading.dmarc, match="Pas d'enregistrement DMARC à _dmarc.*p=quarantine", capsys=capsys)
    zone.add("@", "TXT", "v=DMARC1; p=quarantine")
    fails(grading.dmarc, match="publié à la racine du domaine", capsys=capsys)
    zone.delete("@", "TXT")
    zone.add("_dmarc", "TXT", "v=DMARC1; p=none")
    fails(grading.dmarc, match="publie p=none, la politique demandée est p=quarantine", capsys=capsys)
    zone.replace("_dmarc", "TXT", "v=DMARC1; p=quarantin")
    fails(grading.dmarc, match="n'est pas valide", capsys=capsys)
    zone.replace("_dmarc", "TXT", f"v=DMARC1; p=quarantine; rua=mailto:tintin@{DOMAIN}")
    passes(grading.dmarc, capsys=capsys)
    passes(grading.dmarc, policy="quarantine", domain=DOMAIN, capsys=capsys)


def test_mailboxes(zone, capsys):
    fails(grading.mailboxes, "tintin", "milou", match=f"absente\\(s\\) du serveur : tintin@{DOMAIN}, milou@{DOMAIN}",
          capsys=capsys)
    course.prepare(6)
    passes(grading.mailboxes, capsys=capsys)


def test_autodiscover(zone, capsys):
    fails(grading.autodiscover, match=f"autodiscover.{DOMAIN} doit être un CNAME vers {HOST}. \\(absent\\)", capsys=capsys)
    zone.add("autodiscover", "CNAME", f"{HOST}.")
    zone.add("autoconfig", "CNAME", f"{HOST}.")
    zone.add("_autodiscover._tcp", "SRV", f"0 0 8443 {HOST}.")
    fails(grading.autodiscover, match="doit être un SRV « 0 0 443", capsys=capsys)
    zone.replace("_autodiscover._tcp", "SRV", f"0 0 443 {HOST}.")
    passes(grading.autodiscover, capsys=capsys)


def test_final_message_and_audit(lab_env, capsys):
    try:
        state = course.prepare(10)  # SPF published, no DKIM and no DMARC yet
        gmail, outlook = "jean-emile@gmail.test", "jean-emile@outlook.test"
        assert mail.submit(state.tintin, [gmail, outlook], "Trop tôt", "?").accepted
        fails(grading.final_message, "Trop tôt", match="gmail.test a reçu « Trop tôt » avec spf=pass dkim=neutral "
              "dmarc=none : il faut spf=pass dkim=pass dmarc=pass", capsys=capsys)
        fails(grading.final_message, "Jamais envoyé", timeout=0.5, match="ni dans INBOX ni dans Junk", capsys=capsys)
        fails(grading.audit, match="dkim MISSING", capsys=capsys)
        state = course.prepare(12)
        assert mail.submit(state.tintin, [gmail, outlook], "Enfin", "!").accepted
        passes(grading.final_message, "Enfin", since=state.started, capsys=capsys)
        passes(grading.audit, capsys=capsys)
        later = course.prepare(12)  # a new run of the step: the message of the earlier run does not count
        fails(grading.final_message, "Enfin", since=later.started + 2, timeout=0.5,
              match="depuis le début de l'étape", capsys=capsys)
    finally:
        course.prepare(4)
