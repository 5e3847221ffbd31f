"""The "Interro !" questions: multiple choice with an explanation for every answer.

The data and the check live here; :func:`labmail.widgets.quiz` is the clickable form. Open questions get a
written-answer cell in the notebook as well.

>>> q = Question("À quoi sert la priorité MX ?", ["à choisir le serveur essayé en premier", "à chiffrer"],
...              correct={0}, why=["la plus petite valeur est essayée d'abord", "non : MX ne chiffre rien"])
>>> q.check({0}).correct
True
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LabmailError

__all__ = ["Question", "Feedback"]


@dataclass(frozen=True)
class Feedback:
    """The verdict on an answer and its explanation (one line per chosen answer, then the general point)."""

    correct: bool
    text: str

    def __str__(self) -> str:
        return ("✔ " if self.correct else "✘ ") + self.text


@dataclass(frozen=True)
class Question:
    """A question, its choices, the set of right ones, why each choice is right or wrong, and what to retain."""

    text: str
    choices: list[str]
    correct: set[int]
    why: list[str]
    retain: str = ""

    def __post_init__(self) -> None:
        if len(self.why) != len(self.choices) or not self.correct or not self.correct <= set(range(len(self.choices))):
            raise LabmailError("Question mal formée : une explication par choix, et au moins une bonne réponse parmi "
                               "les choix.", "Malformed question: one explanation per choice, and at least one right "
                               "answer among the choices.")

    @property
    def multiple(self) -> bool:
        return len(self.correct) > 1

    def check(self, chosen: set[int] | int | None) -> Feedback:
        """Is ``chosen`` (an index or a set of indices) exactly the right answer? With why for each choice."""
        if chosen is None or chosen == set():
            return Feedback(False, "Choisissez une réponse." + (" (plusieurs sont possibles)" if self.multiple else ""))
        picked = {chosen} if isinstance(chosen, int) else set(chosen)
        lines = [("✔ " if i in self.correct else "✘ ") + f"{self.choices[i]} : {self.why[i]}" for i in sorted(picked)]
        missed = self.correct - picked
        if missed and not picked - self.correct:
            lines.append("Il manque une bonne réponse." if len(missed) == 1 else "Il manque des bonnes réponses.")
        if self.retain:
            lines.append("À retenir : " + self.retain)
        return Feedback(picked == self.correct, "\n".join(lines))
