"""The "Interro !" quizzes: the check, the explanations, the widget, and where an answer is recorded."""

from __future__ import annotations

import json

import pytest
from IPython.lib.pretty import pretty

from labmail import interro
from labmail import quiz as answers
from labmail import errors
from labmail.quiz import Question
from labmail.widgets import quiz

MX = Question("À quoi sert la priorité dans un enregistrement MX ?",
              ["à choisir l'ordre des serveurs essayés", "à chiffrer les mails", "à répartir la charge à valeurs égales"],
              correct={0, 2}, why=["la plus petite valeur est essayée d'abord", "non : MX ne chiffre rien",
                                   "à priorité égale, l'expéditeur choisit au hasard"], retain="RFC 5321 §5.1")


def test_check_explains_each_choice_with_the_numbers_the_widget_shows():
    right = MX.check({0, 2})
    assert right.correct and "✔ 0 — à choisir" in right.text and "À retenir : RFC 5321 §5.1" in right.text
    partial = MX.check({0})
    assert not partial.correct and "Il manque une bonne réponse." in partial.text
    wrong = MX.check({1})
    assert not wrong.correct and "✘ 1 — à chiffrer les mails : non : MX ne chiffre rien" in wrong.text
    assert "plusieurs" in MX.check(set()).text
    with pytest.raises(errors.UsageError, match="mal formée"):
        Question("?", ["a", "b"], correct={2}, why=["", ""])
    widget = quiz(MX)
    assert [box.description.split(" — ")[0] for box in widget.boxes] == ["0", "1", "2"]  # the same numbers


def test_feedback_prints_as_text_never_as_a_repr():
    feedback = MX.check({1})
    assert pretty(feedback) == str(feedback) and "Feedback(" not in pretty(feedback)
    assert pretty(feedback).startswith("✘ Ce n'est pas la bonne réponse.\n✘ 1 — à chiffrer")
    assert str(MX.check({0, 2})).startswith("✔ Bonne réponse.\n✔ 0 — à choisir")
    assert str(MX.check(set())) == "⚠ Choisissez une réponse. (plusieurs sont possibles)"
    assert "#b00020" in feedback._repr_html_() and "à chiffrer" in feedback._repr_html_()


def test_widget_single_and_multiple():
    single = Question("Protocole d'envoi ?", ["SMTP", "IMAP"], correct={0}, why=["oui", "non : consultation"])
    form = quiz(single)
    form.button.click()
    assert form.result.correct is False and "Choisissez" in form.feedback.value
    form.radio.value = 1
    form.button.click()
    assert "#b00020" in form.feedback.value and "consultation" in form.feedback.value
    form.radio.value = 0
    assert form.submit().correct and "#1b7f3b" in form.feedback.value
    multi = quiz(MX)
    multi.boxes[0].value = multi.boxes[2].value = True
    multi.button.click()
    assert multi.result.correct


@pytest.mark.parametrize("bad", [True, "0", 3.0, [[0]], {7}, set(), None, {0: 1}, 10 ** 30, -1])
def test_an_answer_in_code_that_cannot_be_one_is_refused_in_french(bad, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    widget = quiz("interro_04_priorite")
    with pytest.raises(errors.UsageError, match="impossible : donnez les numéros de vos choix, de 0 à 3"):
        widget.answer(bad)
    assert answers.load() == {}  # nothing recorded
    single = quiz("interro_09_protege")
    with pytest.raises(errors.UsageError, match="Une seule réponse"):
        single.answer({0, 1})


def test_the_first_answer_is_kept_with_who_when_how_and_a_nonce(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(answers, "_os_user", lambda: "jovyan")  # JupyterHub's container images: one system user…
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")  # …and the hub's user name, as nbgrader's exchange names submissions
    widget = quiz("interro_04_priorite")
    assert not (tmp_path / answers.ANSWERS_FILE).exists()  # building the widget records nothing
    widget.boxes[3].value = True
    widget.button.click()  # a click on "Valider"
    assert "✘" in widget.feedback.value
    widget.answer({1, 2})  # then the right answer, in code
    assert "✔" in widget.feedback.value and "la note reste celle de la première réponse (3)" in widget.status.value
    entry = answers.load()["interro_04_priorite"]
    assert entry.first == (3,) and entry.last == (1, 2) and entry.attempts == 2
    assert entry.user == "alice" and entry.via == "clic" and len(entry.nonce) == 16
    assert entry.domain == "jean-emile.labmail.cloud" or entry.domain is None
    again = quiz("interro_04_priorite")  # the cell re-run (Run All, a restart): the answer is shown again
    assert again.record == entry and {i for i, b in enumerate(again.boxes) if b.value} == {1, 2}
    assert "✘" in again.feedback.value and "réponse enregistrée (la première compte) : 3 — " in again._bundle()["text/plain"]
    saved = json.loads((tmp_path / answers.ANSWERS_FILE).read_text())
    assert saved["format"] == "labmail-reponses/2" and saved["interro"]["interro_04_priorite"]["nonce"] == entry.nonce


def test_who_answers_is_who_nbgrader_files_the_submission_under(monkeypatch):
    import pwd

    from nbgrader.utils import get_username

    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    assert answers.current_user() == get_username() == pwd.getpwuid(__import__("os").getuid())[0]  # not jovyan here
    monkeypatch.setattr(answers, "_os_user", lambda: "jovyan")
    assert answers.current_user() == "alice"


def test_a_damaged_or_old_answers_file(tmp_path):
    (tmp_path / answers.ANSWERS_FILE).write_text("{pas du json")
    assert answers.load(tmp_path) == {}
    (tmp_path / answers.ANSWERS_FILE).write_text(json.dumps({"interro_02_zone": {"first": [0], "last": [0], "attempts": 1,
                                                                                 "time": "2026-11-30T10:00:00"},
                                                             "interro_04_priorite": {"first": ["x"]}}))
    old = answers.load(tmp_path)  # the first format, and a damaged entry that counts as no answer
    assert set(old) == {"interro_02_zone"} and old["interro_02_zone"].first == (0,)
    entry = answers.record("interro_02_zone", [1], folder=tmp_path)
    assert entry.first == (0,) and entry.last == (1,) and entry.nonce  # upgraded, the first kept


def test_the_record_as_a_notebook_output_and_read_back(tmp_path):
    entry = answers.record("interro_04_priorite", [1, 2], via="clic", folder=tmp_path)
    data = interro.bundle("interro_04_priorite", entry)
    assert data[answers.MIME_TYPE]["first"] == [1, 2]
    assert "2 — à choisir l'ordre" in data["text/plain"] and "✔" in data["text/plain"]
    assert "labmail-reponse" in data["text/html"]
    unanswered = interro.bundle("interro_04_priorite", None)
    assert answers.MIME_TYPE not in unanswered and "pas encore de réponse" in unanswered["text/plain"]
    flagged = interro.bundle("interro_04_priorite", entry, flag="copiée")
    assert answers.MIME_TYPE not in flagged and "réponse ignorée — copiée" in flagged["text/plain"]
    nb = {"cells": [{"cell_type": "markdown", "source": "x"},
                    {"cell_type": "code", "outputs": [{"output_type": "display_data", "data": data}]},
                    {"cell_type": "code", "outputs": [{"output_type": "display_data",
                                                       "data": {answers.MIME_TYPE: json.dumps(entry.to_dict())}}]},
                    {"cell_type": "code", "outputs": [{"output_type": "display_data",
                                                       "data": {answers.MIME_TYPE: {"first": "0"}}}, "garbage"]}]}
    found = list(answers.records_in(nb))
    assert found == [entry, entry]  # a dict or its JSON text; a malformed record is skipped
    assert list(answers.records_in({"cells": "nope"})) == [] and list(answers.records_in([])) == []


def test_the_quiz_cell_shows_the_record_and_updates_it_at_each_answer(tmp_path, monkeypatch):
    """In a notebook, the quiz displays its record under it with a display id, and updates that output on answer."""
    import IPython.display

    monkeypatch.chdir(tmp_path)
    shown, updates = [], []

    class Handle:
        def update(self, data, raw=False):
            updates.append(data)

    def display(data, raw=False, display_id=None):
        shown.append((data, display_id))
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", display)
    widget = quiz("interro_02_zone")
    widget._ipython_display_()
    assert "application/vnd.jupyter.widget-view+json" in shown[0][0] and shown[1][1] is True
    assert answers.MIME_TYPE not in shown[1][0]  # not answered yet
    widget.radio.value = 0
    widget.button.click()
    assert updates[-1][answers.MIME_TYPE]["first"] == [0] and updates[-1][answers.MIME_TYPE]["via"] == "clic"


def test_the_saved_notebook_is_where_the_answer_lives(tmp_path, monkeypatch):
    """Without reponses.json (a notebook moved, downloaded elsewhere), the quiz finds the answer the notebook shows."""
    monkeypatch.chdir(tmp_path)
    first = answers.record("interro_02_zone", [1], via="clic", folder=tmp_path / "ailleurs")
    notebook = tmp_path / "02-ressources.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "data": interro.bundle("interro_02_zone", first)}]}]}))
    assert quiz("interro_02_zone").record is None
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # what JupyterLab gives the notebook's kernel
    widget = quiz("interro_02_zone")
    assert widget.record == first and widget.radio.value == 1
    widget.answer(0)  # a new try: the first answer stays the notebook's
    entry = answers.load()["interro_02_zone"]
    assert entry.first == (1,) and entry.last == (0,) and entry.attempts == 2 and entry.nonce == first.nonce
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # grading reads only what its plugin gives
    assert answers._in_saved_notebook() == []
    monkeypatch.setenv("NBGRADER_EXECUTION", "validate")  # nbgrader's "Validate", in the notebook's folder
    monkeypatch.delenv("JPY_SESSION_NAME")
    (tmp_path / answers.ANSWERS_FILE).unlink()
    assert answers.load()["interro_02_zone"] == first
