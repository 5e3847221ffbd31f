"""The whole nbgrader pipeline on the course, as an instructor runs it: generate, validate, autograde three
submissions per step, feedback, export — on a copy of the course, against the session's lab.

Submissions per step: the reference solution (every automatic point), the untouched release (zero automatic
points) and a partly right one (one answer wrong: exactly that test's points lost). The untouched release, as
autograde executed it, is also what a student sees on "Run All" of the student version: it must stop at the first
exercise, and every failure must be one short French line (no traceback through labmail, no English exception).
The circuit through the exchange, with answers given in a browser, is tests/test_grading_circuit.py.
"""

from __future__ import annotations

import builtins
import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kernels
import nbformat
import pytest

pytestmark = [pytest.mark.notebook,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*not in session.*")]  # nbgrader's own SQLAlchemy warnings

ROOT = Path(__file__).resolve().parents[1]
STEPS = sorted(p.name for p in (ROOT / "notebooks").iterdir() if p.is_dir() and p.name[:2].isdigit() and p.name != "99-formateur")
BIN = str(Path(sys.executable).parent)
STUDENTS = {"alice": "référence", "bob": "non modifié", "carol": "en partie juste"}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = tmp_path_factory.mktemp("cours")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    for step in STEPS:
        shutil.copytree(ROOT / "notebooks" / step, root / "notebooks" / step,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "reponses.json"))
    return root


@pytest.fixture
def api(course, lab_env, monkeypatch):
    """nbgrader's API on the copy; alembic (which nbgrader runs) and the kernels find the venv and the lab."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.chdir(course)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(course)
    config.Exchange.root = str(course / "exchange")  # the hub's shared folder; unused here
    config.merge(kernels.config())  # autograde's kernels on this worker's address
    yield NbGraderAPI(config=config), config
    from labmail import course as _course

    _course.prepare(0)


def _graded(nb) -> dict[str, dict]:
    return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata}


def _partial(source: Path) -> tuple[nbformat.NotebookNode, set[str]]:
    """The reference solution with one answer wrong, and the grade ids that must then fail."""
    from labmail import interro

    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if gid.startswith("reponse_"):
            qid = "interro_" + gid[len("reponse_"):]
            question = interro.get(qid)
            wrong = next(i for i in range(len(question.choices)) if i not in question.correct)
            name = cell.source.split("### BEGIN SOLUTION\n")[1].split(".answer(")[0]
            cell.source = f"### BEGIN SOLUTION\n{name}.answer({{{wrong}}})\n### END SOLUTION"
            return nb, {f"test_{qid}"}
        if gid == "ex_12_final":  # no quiz in step 12: the final message sent to Gmail only
            cell.source = cell.source.replace("[GMAIL, OUTLOOK]", "[GMAIL]")
            return nb, {"test_12_final"}
    raise AssertionError(f"{source.name}: no answer to get wrong")


@pytest.mark.parametrize("step", STEPS)
def test_generate_validate_autograde_feedback(step, api, course):
    from nbgrader.api import Gradebook
    from nbgrader.validator import Validator

    nbapi, config = api
    result = nbapi.generate_assignment(step, force=True)
    assert result["success"], result.get("error")
    source = course / "notebooks" / step / f"{step}.ipynb"
    release = course / "release" / step / f"{step}.ipynb"
    text = release.read_text(encoding="utf-8")
    for leak in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS", "quiz_answer(", "MARK SCHEME", "Réponse attendue",
                 "NotImplementedError"):
        assert leak not in text, f"{step}: the release shows {leak!r}"
    assert not (course / "release" / step / "reponses.json").exists()

    # What a student's « Validate » runs: on the blank release, every visible test fails. (That the solutions pass
    # every test is what alice's autograde below asserts: every automatic point.)
    assert Validator(invert=True, config=config).validate(str(release)) == {}, "the blank release must fail every test"

    graded = _graded(nbformat.read(source, as_version=4))
    auto = {gid: m["points"] for gid, m in graded.items() if m["grade"]}
    tasks = {gid: m["points"] for gid, m in graded.items() if m.get("task")}
    if not auto:
        assert step == "00-demarrage"
        return
    partial, wrong = _partial(source)
    submissions = {"alice": nbformat.read(source, as_version=4), "bob": nbformat.read(release, as_version=4),
                   "carol": partial}
    for student, nb in submissions.items():
        folder = course / "submitted" / student / step
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / f"{step}.ipynb")
        result = nbapi.autograde(step, student, force=True)
        assert result["success"], result.get("error")
    expected = {"alice": auto, "bob": dict.fromkeys(auto, 0.0),
                "carol": {gid: (0.0 if gid in wrong else pts) for gid, pts in auto.items()}}
    with Gradebook(f"sqlite:///{course}/gradebook.db") as gradebook:
        for student in submissions:
            notebook = gradebook.find_submission_notebook(step, step, student)
            scores = {g.name: g.auto_score for g in notebook.grades if g.name in auto}
            assert scores == expected[student], f"{step} {student} ({STUDENTS[student]}): {scores}"
            assert notebook.max_score == sum(auto.values()) + sum(tasks.values())
            manual = {g.name for g in notebook.grades if g.needs_manual_grade}
            assert manual == set(tasks), f"{step} {student}: the written answers wait for a human"
    _student_sees_short_french_messages(step, course / "autograded" / "bob" / step / f"{step}.ipynb")
    for student in submissions:
        result = nbapi.generate_feedback(step, student, force=True)
        assert result["success"], result.get("error")
        html = (course / "feedback" / student / step / f"{step}.html").read_text(encoding="utf-8")
        total = sum(auto.values()) + sum(tasks.values())
        assert f"Score: {sum(expected[student].values()):.1f} / {total:.1f}" in html  # what the student reads
        if tasks and student == "alice":
            assert "Barème" in html  # the mark scheme is shown with the grades


_FRENCH = re.compile(r"[àâçéèêëîïôûù«»]|\b(le|la|les|des|du|de|une|votre|vos|faites|est|pas|dans|exercice)\b")
_ENGLISH = re.compile(r"\b(\w*Error|\w*Exception|Traceback|NotImplemented\w*|KeyboardInterrupt)\b")


def _student_sees_short_french_messages(step: str, executed: Path) -> None:
    """The untouched student version, executed to the end: where "Run All" stops, and what every failure says."""
    nb = nbformat.read(executed, as_version=4)
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("name") == "stderr"], step
    for index, error in errors:  # what JupyterLab, Formgrader and the feedback show of an error: its traceback lines
        shown = "\n".join(error.traceback)
        assert len(error.traceback) == 1 and "labmail/" not in shown and ".py" not in shown, (step, index, shown)
        assert not _ENGLISH.search(re.sub(r"\x1b\[[0-9;]*m", "", shown)), (step, index, shown)
        assert shown.startswith("\x1b[0;31m") and _FRENCH.search(shown), (step, index, shown)
        assert error.ename not in dir(builtins) or error.ename == "NameError", (step, index, error.ename)
    assert len({i for i, _ in errors}) == len(errors), f"{step}: one error per cell (nbgrader matches its name)"
    gids = [c.metadata.get("nbgrader", {}).get("grade_id", "") for c in nb.cells]
    exercises = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")
                 and c.cell_type == "code" and not gids[i].startswith("reponse_")]
    assert not [i for i, _ in errors if gids[i].startswith("reponse_")], f"{step}: a quiz answer cell blocks Run All"
    if exercises:  # "Run All" stops at the first exercise, with the stub's message
        assert errors and errors[0][0] == exercises[0], (step, errors[:1], exercises[:1])
        assert errors[0][1].ename == "ExerciceAFaire" and "Exercice à faire" in errors[0][1].traceback[0]
    elif errors:  # no exercise: only the quiz checks fail (a student who clicked passes them)
        assert all(gids[i].startswith("test_interro_") for i, _ in errors), (step, errors)


def test_export_has_every_score(course, api):
    subprocess.run([str(Path(BIN) / "nbgrader"), "export", "--to", "grades.csv"], cwd=course, check=True,
                   capture_output=True, text=True, timeout=300, env=os.environ.copy())
    with (course / "grades.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    graded_steps = {r["assignment"] for r in rows}
    assert {s for s in STEPS if s != "00-demarrage"} <= graded_steps
    by = {(r["assignment"], r["student_id"]): float(r["raw_score"]) for r in rows}
    for step in graded_steps - {"00-demarrage"}:
        assert by[(step, "alice")] > by[(step, "carol")] >= by[(step, "bob")] == 0.0, step
    total = sum(float(r["max_score"]) for r in rows if r["student_id"] == "alice")
    assert 60 <= total <= 100, f"the course's total ({total}) should be a sensible scale"
