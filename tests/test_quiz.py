"""The "Interro !" quizzes: the check, the explanations, the widget."""

from __future__ import annotations

import pytest

from labmail.errors import LabmailError
from labmail.quiz import Question
from labmail.widgets import quiz

MX = Question("À quoi sert la priorité dans un enregistrement MX ?",
              ["à choisir l'ordre des serveurs essayés", "à chiffrer les mails", "à répartir la charge à valeurs égales"],
              correct={0, 2}, why=["la plus petite valeur est essayée d'abord", "non : MX ne chiffre rien",
                                   "à priorité égale, l'expéditeur choisit au hasard"], retain="RFC 5321 §5.1")


def test_check_explains_each_choice():
    right = MX.check({0, 2})
    assert right.correct and "✔ à choisir" in right.text and "À retenir : RFC 5321 §5.1" in right.text
    partial = MX.check({0})
    assert not partial.correct and "Il manque une bonne réponse." in partial.text
    wrong = MX.check({1})
    assert not wrong.correct and "✘ à chiffrer les mails : non : MX ne chiffre rien" in wrong.text
    assert "plusieurs" in MX.check(set()).text
    with pytest.raises(LabmailError, match="mal formée"):
        Question("?", ["a", "b"], correct={2}, why=["", ""])


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
