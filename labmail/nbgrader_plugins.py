"""labmail's plugins for nbgrader: quiz answers travel inside the submitted notebook and reach the grading.

The course's ``nbgrader_config.py`` adds three preprocessors to nbgrader's own (the lists below keep nbgrader's
defaults and insert ours; nbgrader 0.9):

* :class:`QuizAnswerCells` (``generate_assignment``, after ``ClearSolutions``) — a quiz's answer cell is
  released as comments saying how to answer (click « Valider », or ``interro.answer({…})`` in code), not as
  the stub that raises: a student who clicked can "Run All" without being stopped there.
* :class:`CollectAnswers` (``autograde``, first, before ``ClearOutput`` erases the outputs) — reads the answer
  records the quiz cells showed (:data:`labmail.quiz.MIME_TYPE`) in the *submitted* notebook, keeps for each
  question the one whose first answer is the oldest, and sets aside — with the reason, in the graded notebook and
  nbgrader's log, for the teacher — an answer recorded by another student of the course, or the very same record
  (same nonce, drawn at random at the first answer) found in another student's submission: if the record names
  the other student, this copy took it; if each names its own submitter, one was renamed and both are set aside
  for the teacher to decide. The result goes into the notebook's metadata (``labmail``).
* :class:`ProvideAnswers` (``autograde``, just before ``Execute``) — writes those answers as ``reponses.json``
  in the folder where nbgrader re-executes the notebook, marked ``"source": "notebook"``: the quiz cells show
  them again and the hidden tests grade the first answer. A ``reponses.json`` handed in beside the notebook is
  never used.

Limit, said plainly: the notebook is the student's file. A student who edits the JSON of an output can still
forge an answer of their own; what cannot pass unseen is someone else's recorded answer.

>>> # nbgrader_config.py
>>> from labmail import nbgrader_plugins as plugins                        # doctest: +SKIP
>>> c.GenerateAssignment.preprocessors = plugins.generate_preprocessors()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from nbgrader.preprocessors import NbGraderPreprocessor

from . import interro, quiz

__all__ = ["QuizAnswerCells", "CollectAnswers", "ProvideAnswers", "generate_preprocessors", "sanitize_preprocessors",
           "autograde_preprocessors", "answers_of"]

_QUIZ = re.compile(r"""^\s*([A-Za-z_]\w*)\s*=\s*quiz\(\s*["'](interro_\w+)["']""", re.M)


class QuizAnswerCells(NbGraderPreprocessor):
    """Release a quiz's answer cell (grade id ``reponse_<id>``) as how-to-answer comments, not as a stub that raises."""

    def preprocess(self, nb, resources):
        names = {qid: name for cell in nb.cells if cell.cell_type == "code" for name, qid in _QUIZ.findall(cell.source)}
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            gid = str(meta.get("grade_id", ""))
            if cell.cell_type != "code" or not meta.get("solution") or not gid.startswith("reponse_"):
                continue
            qid = "interro_" + gid[len("reponse_"):]
            name = names.get(qid, "interro")
            question = interro.QUESTIONS.get(qid)
            several = question is None or question.multiple
            example = question.example if question else "{0, 1}"
            cell.source = (
                f"# Répondez en cochant {'vos choix' if several else 'votre choix'} dans le quiz ci-dessus, puis "
                "« Valider » : c'est enregistré, et votre\n"
                "# première réponse est celle qui compte. Ou bien, en code : enlevez le # de la ligne suivante, mettez\n"
                f"# {'les numéros affichés devant vos choix' if several else 'le numéro affiché devant votre choix'} "
                "(0 = le premier) et exécutez la cellule.\n"
                f"# {name}.answer({example})")
        return nb, resources


def answers_of(nb) -> dict[str, quiz.Record]:
    """The answer to grade for each question shown in a notebook: the record whose first answer is the oldest."""
    return quiz._oldest(quiz.records_in(nb))


def _known_students(db_url: str | None) -> set[str]:
    if not db_url:
        return set()
    try:
        from nbgrader.api import Gradebook

        with Gradebook(db_url) as gradebook:
            return {student.id for student in gradebook.students}
    except Exception:  # no gradebook yet: nobody to compare with
        return set()


class CollectAnswers(NbGraderPreprocessor):
    """Read the quiz answers shown in the submitted notebook, set aside copied ones, keep the rest in its metadata."""

    def preprocess(self, nb, resources):
        info = resources.get("nbgrader", {})
        student, assignment, notebook = info.get("student", ""), info.get("assignment", ""), info.get("notebook", "")
        answers = answers_of(nb)
        known = _known_students(info.get("db_url"))
        shared = self._others(Path(resources.get("metadata", {}).get("path") or "."), student, assignment, notebook)
        flags: dict[str, str] = {}
        for qid, entry in answers.items():
            holders = shared.get((qid, entry.nonce), set()) if entry.nonce else set()
            others = sorted(other for other, _user in holders)
            if entry.user != student and (entry.user in known or entry.user in others):
                flags[qid] = (f"elle a été enregistrée par « {entry.user} » et rendue par « {student} » : copiée, elle "
                              "est ignorée et signalée à l'enseignant·e")
            elif holders and (entry.user != student or any(user != student for _other, user in holders)):
                flags[qid] = (f"le même enregistrement (même identifiant {entry.nonce}) est aussi dans la copie de "
                              f"« {', '.join(others)} » : l'une des copies l'a pris à l'autre ; réponse ignorée, à "
                              "vérifier par l'enseignant·e")
        for qid, why in flags.items():
            self.log.warning("labmail : %s/%s, Interro %s : réponse ignorée — %s", student, assignment, qid, why)
        nb.metadata["labmail"] = {"reponses": {q: e.to_dict() for q, e in answers.items() if q not in flags},
                                  "signalements": flags}
        return nb, resources

    @staticmethod
    def _others(folder: Path, student: str, assignment: str, notebook: str) -> dict[tuple[str, str], set[tuple[str, str]]]:
        """(question, nonce) → {(other student, user the record names)} for the other submissions that show that
        record (nbgrader's default layout: ``submitted/<student>/<assignment>/<notebook>.ipynb``)."""
        found: dict[tuple[str, str], set[tuple[str, str]]] = {}
        if folder.name != assignment or folder.parent.name != student:
            return found
        for path in folder.parent.parent.glob(f"*/{assignment}/{notebook}.ipynb"):
            other = path.parent.parent.name
            if other == student:
                continue
            try:  # another student's file, whatever it holds, never stops this one's grading
                if path.stat().st_size > 64 * 2**20:
                    continue
                for entry in quiz.records_in(json.loads(path.read_text(encoding="utf-8"))):
                    if entry.nonce:
                        found.setdefault((entry.question, entry.nonce), set()).add((other, entry.user))
            except Exception:  # noqa: BLE001 - unreadable, not JSON, too deep: no records from it
                continue
        return found


class ProvideAnswers(NbGraderPreprocessor):
    """Write the submitted answers where nbgrader is about to re-execute the notebook (``reponses.json``)."""

    def preprocess(self, nb, resources):
        from ._files import atomic_write_text

        folder = Path(resources.get("metadata", {}).get("path") or ".")
        target = folder / quiz.ANSWERS_FILE
        target.unlink(missing_ok=True)  # never a file handed in beside the notebook
        collected = nb.metadata.get("labmail")
        if isinstance(collected, dict):
            data = {"format": quiz._FORMAT, "source": "notebook", "interro": collected.get("reponses") or {},
                    "signalements": collected.get("signalements") or {}}
            atomic_write_text(target, json.dumps(data, ensure_ascii=False, indent=1) + "\n", mode=0o644)
        return nb, resources


def _default(converter: str, trait: str) -> list:
    from nbgrader import converters

    return list(getattr(converters, converter).class_traits()[trait].default())


def generate_preprocessors() -> list:
    """nbgrader's ``GenerateAssignment.preprocessors`` with :class:`QuizAnswerCells` right after ``ClearSolutions``."""
    from nbgrader.preprocessors import ClearSolutions

    steps = _default("GenerateAssignment", "preprocessors")
    steps.insert(steps.index(ClearSolutions) + 1, QuizAnswerCells)
    return steps


def sanitize_preprocessors() -> list:
    """nbgrader's ``Autograde.sanitize_preprocessors`` with :class:`CollectAnswers` first (before ``ClearOutput``)."""
    return [CollectAnswers, *_default("Autograde", "sanitize_preprocessors")]


def autograde_preprocessors() -> list:
    """nbgrader's ``Autograde.autograde_preprocessors`` with :class:`ProvideAnswers` just before ``Execute``."""
    from nbgrader.preprocessors import Execute

    steps = _default("Autograde", "autograde_preprocessors")
    steps.insert(steps.index(Execute), ProvideAnswers)
    return steps

