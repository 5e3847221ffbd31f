"""The "Interro !" questions — multiple choice with an explanation for every answer — and the student's answers.

The data and the check live here; :func:`labmail.widgets.quiz` is the clickable form. Open questions get a
written-answer cell in the notebook as well.

>>> q = Question("À quoi sert la priorité MX ?", ["à choisir le serveur essayé en premier", "à chiffrer"],
...              correct={0}, why=["la plus petite valeur est essayée d'abord", "non : MX ne chiffre rien"])
>>> q.check({0}).correct
True

**Where an answer lives.** An answer to one of the course's questions is a :class:`Record`: the *first* answer
(the one that is graded), the last one, how many tries, when, who (the JupyterHub user, else the system user),
and a random ``nonce`` drawn at the first answer. It is kept in two places:

* in the notebook itself — the quiz cell shows the record as an output (:func:`bundle`, MIME type
  :data:`MIME_TYPE`), updated at every answer, so that saving the notebook saves the answer and nbgrader's
  circuit (submit, collect, autograde) carries it with the notebook, nothing beside it;
* in ``reponses.json`` beside the notebook (:func:`load`, :func:`record`), a working copy, so that a restart of the
  kernel or "Run All" finds the answers again and shows them in the quiz cell's output; the quiz also reads the
  notebook as last saved (in JupyterLab, and under nbgrader's "Validate"), so an answer saved in the notebook is
  found even without that copy (a notebook moved, downloaded elsewhere).

At autograde, nbgrader re-executes the notebook in a fresh kernel: the course's nbgrader plugin
(:mod:`labmail.nbgrader_plugins`) reads the records in the submitted notebook's outputs and writes them as
``reponses.json`` in the folder where the notebook is re-executed, marked ``"source": "notebook"``.
"""

from __future__ import annotations

import getpass
import html
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

from .errors import LabmailError, UsageError
from .i18n import tr

__all__ = ["Question", "Feedback", "Record", "MIME_TYPE", "ANSWERS_FILE", "load", "flags", "record",
           "records_in", "current_user", "choices_text"]

#: The MIME type of an answer record in a notebook output.
MIME_TYPE = "application/vnd.labmail.reponse+json"
#: The student's answers beside the notebook (the kernel's working directory).
ANSWERS_FILE = "reponses.json"
_FORMAT = "labmail-reponses/2"


@dataclass(frozen=True)
class Feedback:
    """The verdict on an answer and its explanation (one line per chosen answer, then the general point)."""

    correct: bool
    text: str
    answered: bool = True  # False: no choice was made

    def __str__(self) -> str:
        if not self.answered:
            return "⚠ " + self.text
        verdict = (tr("✔ Bonne réponse.", "✔ Right answer.") if self.correct
                   else tr("✘ Ce n'est pas la bonne réponse.", "✘ Not the right answer."))
        return verdict + "\n" + self.text

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython: the explanation as text, never a repr
        printer.text(str(self))

    def _repr_html_(self) -> str:
        colour = "#1b7f3b" if self.correct else "#b00020"
        return f"<div class='labmail-feedback' style='color:{colour};white-space:pre-wrap'>{html.escape(str(self))}</div>"


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
            raise UsageError("Question mal formée : une explication par choix, et au moins une bonne réponse parmi "
                               "les choix.", "Malformed question: one explanation per choice, and at least one right "
                               "answer among the choices.")

    @property
    def multiple(self) -> bool:
        return len(self.correct) > 1

    @property
    def example(self) -> str:
        """An answer to show as an example of the syntax — never the right one: ``"{0, 1}"``, or ``"{0}"``."""
        from itertools import combinations

        size = 2 if self.multiple else 1
        picked = next(set(c) for c in combinations(range(len(self.choices)), size) if set(c) != self.correct)
        return "{" + ", ".join(map(str, sorted(picked))) + "}"

    def check(self, chosen: set[int] | int | None) -> Feedback:
        """Is ``chosen`` (an index or a set of indices) exactly the right answer? With why for each choice."""
        if chosen is None or chosen == set():
            return Feedback(False, "Choisissez une réponse." + (" (plusieurs sont possibles)" if self.multiple else ""),
                            answered=False)
        picked = {chosen} if isinstance(chosen, int) else set(chosen)
        lines = [("✔ " if i in self.correct else "✘ ") + f"{i} — {self.choices[i]} : {self.why[i]}" for i in sorted(picked)]
        missed = self.correct - picked
        if missed and not picked - self.correct:
            lines.append("Il manque une bonne réponse." if len(missed) == 1 else "Il manque des bonnes réponses.")
        if self.retain:
            lines.append("À retenir : " + self.retain)
        return Feedback(picked == self.correct, "\n".join(lines))


def choices_text(choices: Iterable[int]) -> str:
    """Choices as the quiz numbers them (0 = the first choice): ``"0, 2"``, or "aucun choix"."""
    return ", ".join(str(i) for i in sorted(choices)) or tr("aucun choix", "no choice")


# -- answers ----------------------------------------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _os_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid())[0]
    except (ImportError, KeyError):  # no password database entry (some containers), or not Unix
        try:
            return getpass.getuser()
        except Exception:
            return "?"


def current_user() -> str:
    """Who answers, named as nbgrader's exchange names a submission (``nbgrader.utils.get_username``): the system
    user — or, for the ``jovyan`` user that JupyterHub's container images share, ``JUPYTERHUB_USER``."""
    name = _os_user()
    if name == "jovyan":
        return os.environ.get("JUPYTERHUB_USER", "").strip() or name
    return name


def _domain() -> str | None:
    try:
        from .config import load as load_config

        cfg = load_config()
        return cfg.domain if cfg.prenom else None
    except LabmailError:
        return None


@dataclass(frozen=True)
class Record:
    """One question's answers: the first (graded), the last, the number of tries, who, when, and a nonce that
    identifies this answer (copied elsewhere, it is still this student's answer — see the nbgrader plugin)."""

    question: str
    first: tuple[int, ...]
    first_time: str
    last: tuple[int, ...]
    time: str
    attempts: int
    user: str
    nonce: str
    via: str = "code"  # how the first answer was given: "clic" (« Valider ») or "code" (.answer(...))
    domain: str | None = None
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("extra")
        data["first"], data["last"] = list(self.first), list(self.last)
        return data

    @classmethod
    def from_dict(cls, question: str, data: dict) -> "Record":
        """A record read from a file or a notebook output; raises ValueError if it is not one."""
        if not isinstance(data, dict):
            raise ValueError("not a record")

        def indices(value) -> tuple[int, ...]:
            if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                               and 0 <= i < 64 for i in value):
                raise ValueError("bad choices")
            return tuple(sorted(set(value)))

        def text(value, size: int) -> str:  # printable only: it goes into logs and pages
            return "".join(c for c in str(value) if c.isprintable())[:size]

        first = indices(data["first"])
        last = indices(data.get("last", first))
        when = text(data.get("time", ""), 40)
        attempts = data.get("attempts", 1)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts < 10**6:
            raise ValueError("bad attempts")
        return cls(question=text(data.get("question") or question, 80), first=first,
                   first_time=text(data.get("first_time") or when, 40), last=last, time=when, attempts=attempts,
                   user=text(data.get("user") or "?", 100), nonce=text(data.get("nonce") or "", 64),
                   via=text(data.get("via") or "code", 12),
                   domain=text(data["domain"], 255) if data.get("domain") else None)


def _path(folder: str | Path | None) -> Path:
    return Path(folder or Path.cwd()) / ANSWERS_FILE


def _read(folder: str | Path | None) -> dict:
    try:
        data = json.loads(_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    if data.get("format") != _FORMAT:  # the first format: {question: {"first", "last", "attempts", "time"}}
        data = {"format": _FORMAT, "interro": {k: v for k, v in data.items() if isinstance(v, dict)}}
    return data


def _oldest(records: Iterable[Record]) -> dict[str, Record]:
    """For each question, the record whose first answer is the oldest (the first answer is the one that counts)."""
    kept: dict[str, Record] = {}
    for entry in records:
        if entry.question not in kept or entry.first_time < kept[entry.question].first_time:
            kept[entry.question] = entry
    return kept


def _in_saved_notebook() -> list[Record]:
    """The records shown in this kernel's notebook as last saved — the notebook is where answers live, reponses.json
    only a working copy. JupyterLab gives a kernel its notebook's path (``JPY_SESSION_NAME``); nbgrader's
    "Validate" runs the notebook in its folder (the notebooks there are read). At autograde, nothing: the plugin
    gives the submitted answers."""
    mode = os.environ.get("NBGRADER_EXECUTION")
    session = os.environ.get("JPY_SESSION_NAME", "")
    if mode == "validate":
        paths = sorted(Path.cwd().glob("*.ipynb"))
    elif not mode and session.endswith(".ipynb"):
        paths = [Path(session)]
    else:
        return []
    found: list[Record] = []
    for path in paths:
        try:
            if path.stat().st_size <= 64 * 2**20:
                found += records_in(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, RecursionError):
            continue
    return found


def load(folder: str | Path | None = None) -> dict[str, Record]:
    """The recorded answers in ``folder``'s reponses.json; without ``folder``, those of the notebook being run: its
    folder's reponses.json and what the notebook itself shows as last saved (the oldest first answer wins)."""
    out = []
    for question, entry in (_read(folder).get("interro") or {}).items():
        try:
            out.append(Record.from_dict(question, entry))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged entry counts as no answer
    return _oldest(out + (_in_saved_notebook() if folder is None else []))


def flags(folder: str | Path | None = None) -> dict[str, str]:
    """Answers set aside at autograde, with why (``{question: "copiée de …"}``); empty outside autograde."""
    found = _read(folder).get("signalements") or {}
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def from_submission(folder: str | Path | None = None) -> bool | None:
    """Where this folder's answers come from at autograde: True if the course's nbgrader plugin wrote them from the
    submitted notebook, False if not (the plugin is missing from nbgrader's configuration); None outside autograde."""
    if os.environ.get("NBGRADER_EXECUTION") != "autograde":
        return None
    return _read(folder).get("source") == "notebook"


def record(question: str, chosen: Iterable[int], *, via: str = "code",
           folder: str | Path | None = None) -> Record | None:
    """Record an answer: the first one is kept (it is graded), the last one and the count are updated.

    At autograde, the answers are those of the submitted notebook: re-executing an answer cell records nothing
    (nor for an answer set aside as copied, which returns None); a code answer where the submitted notebook showed
    none is recorded with ``via="correction"``, so that the teacher sees it was given at grading time. The file is
    replaced atomically, so a crash never leaves half an answer file.
    """
    from ._files import atomic_write_text

    data = _read(folder)
    answers = data.setdefault("interro", {})
    choice = tuple(sorted({int(i) for i in chosen}))
    now = _now()
    previous = load(folder).get(question)
    grading = from_submission(folder) is not None
    if grading and (previous is not None or question in flags(folder)):
        return previous
    if previous is None:
        entry = Record(question, choice, now, choice, now, 1, current_user(), secrets.token_hex(8),
                       "correction" if grading else via, _domain())
    else:
        entry = replace(previous, last=choice, time=now, attempts=previous.attempts + 1,
                        nonce=previous.nonce or secrets.token_hex(8))
    answers[question] = entry.to_dict()
    data["format"] = _FORMAT
    atomic_write_text(_path(folder), json.dumps(data, ensure_ascii=False, indent=1) + "\n", mode=0o644)
    return entry


def records_in(notebook) -> Iterator[Record]:
    """Every answer record shown in a notebook's outputs (an ``nbformat`` notebook or its JSON as a dict), in
    cell order. What nbgrader's plugin reads in a submitted notebook."""
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    for cell in cells if isinstance(cells, list) else []:
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        outputs = cell.get("outputs")
        for output in outputs if isinstance(outputs, list) else []:
            data = output.get("data") if isinstance(output, dict) else None
            if not isinstance(data, dict) or MIME_TYPE not in data:
                continue
            payload = data[MIME_TYPE]
            if isinstance(payload, str):  # some tools store JSON outputs as text
                try:
                    payload = json.loads(payload)
                except (ValueError, RecursionError):
                    continue
            try:
                yield Record.from_dict(str(payload.get("question", "")), payload)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
