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
        assert question.example.strip("{}").split(", ") != sorted(map(str, question.correct)), qid  # no hint
    # the numbers are shown (0 = the first): "always tick 0" must not be a strategy
    assert sum(0 in q.correct for q in interro.QUESTIONS.values()) <= len(interro.QUESTIONS) // 3
    with pytest.raises(Exception, match="inconnue"):
        interro.get("interro_99_rien")


def test_quiz_answers_are_recorded_on_answer_only_and_the_first_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    widget = quiz("interro_04_priorite")
    assert not (tmp_path / grading.ANSWERS_FILE).exists()  # building the widget records nothing
    fails(grading.answered, "interro_04_priorite", match="Pas encore de réponse.*Valider", capsys=capsys)
    widget.boxes[3].value = True
    widget.button.click()  # a click on "Valider"
    widget.answer({1, 2})  # then the right answer, in code
    passes(grading.answered, "interro_04_priorite", capsys=capsys)
    # the numbers are the widget's (0 = the first choice), in the grading message too
    fails(grading.quiz_answer, "interro_04_priorite", {1, 2},
          match="votre première réponse \\(3\\) n'est pas la bonne \\(1, 2\\)", capsys=capsys)
    second = quiz("interro_02_zone")
    second.answer(2)
    passes(grading.quiz_answer, "interro_02_zone", [2], capsys=capsys)
    fails(grading.quiz_answer, "interro_05_protocoles", {0, 1}, match="Pas encore de réponse", capsys=capsys)


def test_at_autograde_only_the_answers_read_in_the_submitted_notebook_count(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    quiz("interro_02_zone").answer(2)  # a reponses.json beside the notebook…
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # …but no answers written by labmail's nbgrader plugin
    fails(grading.answered, "interro_02_zone", match="greffon de labmail", capsys=capsys)
    entry = json.loads((tmp_path / grading.ANSWERS_FILE).read_text())["interro"]["interro_02_zone"]
    (tmp_path / grading.ANSWERS_FILE).write_text(json.dumps({
        "format": "labmail-reponses/2", "source": "notebook", "interro": {"interro_02_zone": entry},
        "signalements": {"interro_04_priorite": "enregistrée par « alice » et rendue par « bob »"}}))
    passes(grading.quiz_answer, "interro_02_zone", {2}, capsys=capsys)
    fails(grading.answered, "interro_04_priorite", match="réponse ignorée — enregistrée par « alice »", capsys=capsys)
    restored = quiz("interro_04_priorite")  # the quiz cell, re-executed, says so too
    assert "Réponse ignorée à la correction" in restored.status.value


def test_a_check_failure_is_one_french_line_and_a_stub_says_what_to_do():
    from labmail.errors import ExerciceAFaire, VerificationEchouee

    with pytest.raises(ExerciceAFaire) as stub:
        grading.a_faire()
    assert stub.value._render_traceback_() == [
        "\x1b[0;31m✋ Exercice à faire : remplacez les lignes « # VOTRE CODE ICI » et « grading.a_faire() » par votre code "
        "(la consigne est juste au-dessus), puis exécutez la cellule.\x1b[0m"]
    with pytest.raises(VerificationEchouee) as check:
        grading.expect(1 == 2, "Le MX manque : faites d'abord l'exercice.", "The MX is missing.")
    assert isinstance(check.value, AssertionError) and len(check.value._render_traceback_()) == 1
    from labmail import i18n

    i18n.set_language("en")
    assert "The MX is missing." in check.value._render_traceback_()[0]
    assert grading.expect(True, "jamais affiché") is None


def test_answers_read_from_the_exercises(lab_env, capsys):
    course.prepare(3)
    fails(grading.ns, "", match="Pas de nom de serveur", capsys=capsys)
    fails(grading.ns, "ns1.labmail.cloud.", match="n'est pas le serveur qui fait autorité.*dns.labmail.cloud", capsys=capsys)
    passes(grading.ns, "DNS.labmail.cloud.", capsys=capsys)
    fails(grading.dkim_location, "", "", match="nom_dkim est vide", capsys=capsys)
    fails(grading.dkim_location, f"_domainkey.{DOMAIN}", "v=DKIM1", match="soit dkim._domainkey", capsys=capsys)
    fails(grading.dkim_location, f"dkim._domainkey.{DOMAIN}.", "v=DKIM1; p=MIIB", match="clé publique du serveur",
          capsys=capsys)
    row = __import__("labmail").checks.domain(DOMAIN).row("dkim")
    passes(grading.dkim_location, row.name, row.expected, capsys=capsys)
    source = ("Authentication-Results: mx.google.com; spf=pass smtp.mailfrom=a.example; dkim=none; dmarc=fail "
              "header.from=a.example\r\nFrom: a@a.example\r\n\r\nx\r\n").encode()
    fails(grading.verdict, {}, source, match="doit être un dictionnaire", capsys=capsys)
    fails(grading.verdict, {"spf": "pass", "dkim": "none"}, source, match="Il manque dmarc", capsys=capsys)
    fails(grading.verdict, {"spf": "pass", "dkim": "pass", "dmarc": "fail"}, source,
          match="dkim='pass' au lieu de none", capsys=capsys)
    passes(grading.verdict, {"spf": "PASS", "dkim": "none", "dmarc": "fail"}, source, capsys=capsys)


@pytest.mark.parametrize("table, match", [
    ([], "configuration est vide"),
    ([("SMTP", 587)], "triplet"),
    ([("FTP", 21, "STARTTLS")], "SMTP \\(envoi\\), IMAP ou POP3"),
    ([("IMAP", "993", "SSL/TLS")], "le port est un nombre"),
    ([("IMAP", 993, "chiffré")], "« SSL/TLS »"),
    ([("IMAP", 995, "SSL/TLS")], "sur le port 995, le serveur parle POP3, pas IMAP"),
    ([("IMAP", 143, "SSL/TLS")], "sur le port 143, la sécurité est STARTTLS, pas SSL/TLS"),
    ([("SMTP", 25, "STARTTLS")], "Le port 25 sert entre serveurs"),
    ([("SMTP", 587, "STARTTLS"), ("IMAP", 993, "SSL/TLS")], "Il manque POP3"),
])
def test_ports_table_is_checked_against_the_server(table, match, lab_env, capsys):
    fails(grading.ports, table, match=match, capsys=capsys)


def test_ports_table_right_either_way(lab_env, capsys):
    passes(grading.ports, [("SMTP", 587, "STARTTLS"), ("IMAP", 993, "SSL/TLS"), ("POP3", 995, "SSL/TLS")], capsys=capsys)
    passes(grading.ports, [["smtp", 465, "ssl/tls"], ("IMAP", 143, "STARTTLS"), ("POP", 110, "starttls")], capsys=capsys)


# -- the world --------------------------------------------------------------------------------------------------------
def test_mx(zone, capsys):
    fails(grading.mx, match=f'{DOMAIN} ne publie aucun MX.*zone.add\\("@", "MX", "10 {HOST}."\\)', capsys=capsys)
    zone.add("@", "MX", "10 autre.labmail.cloud.")
    fails(grading.mx, match="doit désigner le serveur de l'école", capsys=capsys)
    zone.replace("@", "MX", f"10 {HOST}.")
    passes(grading.mx, capsys=capsys)
    assert "formulaire" not in capsys.readouterr().out


def test_a_form_says_the_code_it_ran_and_the_check_reminds_it(zone, capsys, monkeypatch):
    from labmail import actions
    from labmail.widgets import dns_panel

    monkeypatch.setattr(actions, "_FORM_ACTIONS", [])
    panel = dns_panel()
    panel.name.value, panel.type.value, panel.value.value = "@", "MX", f"10 {HOST}."
    panel.add_button.click()
    note = panel.message.value
    assert f'zone.add(&quot;@&quot;, &quot;MX&quot;, &quot;10 {HOST}.&quot;)' in note
    assert "c&#x27;est la cellule de code de l&#x27;exercice qui compte" in note
    assert grading.mx() is None
    out = capsys.readouterr()
    assert f'zone.add("@", "MX", "10 {HOST}.")' in out.out and "seule la cellule de l'exercice" in out.out and not out.err
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # nothing printed under nbgrader
    assert grading.mx() is None and capsys.readouterr().out == ""


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
    head, _, key = record.partition("p=")
    other = head + "p=" + key[:100] + ("A" if key[100] != "A" else "B") + key[101:]  # another key, never a prefix
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


def test_at_autograde_a_re_executed_answer_changes_nothing_and_a_late_one_is_marked(tmp_path, monkeypatch, capsys):
    """Grading re-executes the answer cells: a submitted answer stays as it was (no extra try), a copied one stays set
    aside, and an answer given only in code — the submitted notebook showed none — is graded but marked for the
    teacher (cells never run, or outputs cleared: a wrong first answer could have been erased)."""
    from labmail import quiz as answers

    monkeypatch.chdir(tmp_path)
    submitted = answers.record("interro_04_priorite", [3], via="clic", folder=tmp_path / "copie")
    (tmp_path / grading.ANSWERS_FILE).write_text(json.dumps({
        "format": "labmail-reponses/2", "source": "notebook", "interro": {"interro_04_priorite": submitted.to_dict()},
        "signalements": {"interro_05_protocoles": "copiée de « alice »"}}))
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    quiz("interro_04_priorite").answer({1, 2})  # the answer cell, re-executed
    assert answers.load()["interro_04_priorite"] == submitted  # first (3), one try
    fails(grading.quiz_answer, "interro_04_priorite", {1, 2}, match="première réponse \\(3\\)", capsys=capsys)
    copied = quiz("interro_05_protocoles")
    copied.answer({1, 3})
    assert "interro_05_protocoles" not in answers.load() and "Réponse ignorée" in copied.status.value
    fails(grading.answered, "interro_05_protocoles", match="réponse ignorée — copiée de « alice »", capsys=capsys)
    late = quiz("interro_02_zone")
    late.answer(2)
    assert late.record.via == "correction" and "donnée en code à la correction" in late._bundle()["text/plain"]
    assert grading.quiz_answer("interro_02_zone", {2}) is None
    assert grading.answered("interro_02_zone") is None
    out = capsys.readouterr()
    assert "Réponse donnée en code à la correction" in out.out and out.err == ""
