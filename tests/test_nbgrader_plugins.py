"""labmail's nbgrader plugins, one by one, on small notebooks (the whole circuit is in test_grading_circuit.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from fuzzing import count, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

nbgrader = pytest.importorskip("nbgrader")

from labmail import nbgrader_plugins as plugins  # noqa: E402
from labmail import interro, quiz  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*not in session.*")]


def _cell(source: str, gid: str | None = None, solution: bool = False, outputs=None):
    cell = nbformat.v4.new_code_cell(source)
    if gid:
        cell.metadata["nbgrader"] = {"schema_version": 3, "grade": False, "solution": solution, "locked": not solution,
                                     "grade_id": gid}
    cell.outputs = [nbformat.v4.new_output("display_data", data=d) for d in (outputs or [])]
    return cell


def _record(question: str, first, user: str, when: str, nonce: str) -> quiz.Record:
    first = tuple(first)
    return quiz.Record(question, first, when, first, when, 1, user, nonce, "clic", "x.labmail.cloud")


def test_quiz_answer_cells_are_released_as_how_to_answer_not_as_a_stub_that_raises():
    nb = nbformat.v4.new_notebook(cells=[
        _cell('ports = quiz("interro_06_ports")\nports'),
        _cell("# VOTRE CODE ICI\ngrading.a_faire()", "reponse_06_ports", solution=True),
        _cell("# VOTRE CODE ICI\ngrading.a_faire()", "ex_06_ports", solution=True),
    ])
    out, _ = plugins.QuizAnswerCells().preprocess(nb, {})
    answer = out.cells[1].source
    assert all(line.startswith("#") for line in answer.splitlines()) and "# ports.answer({0, 1})" in answer
    assert "« Valider »" in answer
    assert out.cells[2].source.endswith("grading.a_faire()")  # a real exercise keeps its stub


def test_the_preprocessor_lists_keep_nbgraders_own_steps():
    from nbgrader.preprocessors import ClearOutput, ClearSolutions, Execute

    generate = plugins.generate_preprocessors()
    assert generate[generate.index(ClearSolutions) + 1] is plugins.QuizAnswerCells and len(generate) == 13
    sanitize = plugins.sanitize_preprocessors()
    assert sanitize[:2] == [plugins.CollectAnswers, ClearOutput]
    graded = plugins.autograde_preprocessors()
    assert graded[graded.index(Execute) - 1] is plugins.ProvideAnswers


def test_the_oldest_first_answer_wins():
    late = _record("interro_02_zone", [1], "carol", "2026-12-01T10:05:00Z", "b" * 16)
    early = _record("interro_02_zone", [0], "carol", "2026-12-01T10:00:00Z", "a" * 16)
    nb = nbformat.v4.new_notebook(cells=[_cell("q", outputs=[interro.bundle("interro_02_zone", late)]),
                                         _cell("t", outputs=[interro.bundle("interro_02_zone", early)])])
    assert plugins.answers_of(nb)["interro_02_zone"] == early


@pytest.fixture
def submitted(tmp_path, monkeypatch):
    """submitted/<student>/02-ressources/02-ressources.ipynb for a class, and a gradebook knowing its students."""
    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    db = f"sqlite:///{tmp_path / 'gradebook.db'}"
    with Gradebook(db) as gradebook:
        for student in ("alice", "bob", "carol", "dave"):
            gradebook.add_student(student)

    def hand_in(student: str, *records: quiz.Record) -> tuple[nbformat.NotebookNode, dict]:
        folder = tmp_path / "submitted" / student / "02-ressources"
        folder.mkdir(parents=True, exist_ok=True)
        nb = nbformat.v4.new_notebook(cells=[_cell("q", outputs=[interro.bundle(r.question, r) for r in records])])
        nb.metadata["labmail"] = {"reponses": {"interro_02_zone": {"first": [0]}}}  # forged: replaced by the plugin
        nbformat.write(nb, folder / "02-ressources.ipynb")
        resources = {"nbgrader": {"student": student, "assignment": "02-ressources", "notebook": "02-ressources",
                                  "db_url": db}, "metadata": {"path": str(folder)}}
        return nbformat.read(folder / "02-ressources.ipynb", as_version=4), resources

    return hand_in


def test_an_answer_copied_from_another_student_is_set_aside(submitted, caplog):
    own = _record("interro_02_zone", [0], "alice", "2026-12-01T10:00:00Z", "1" * 16)
    other = _record("interro_04_priorite", [0, 1], "alice", "2026-12-01T10:00:00Z", "2" * 16)
    submitted("alice", own, other)
    nb, resources = submitted("bob", other, _record("interro_02_zone", [1], "bob", "2026-12-01T10:01:00Z", "3" * 16))
    out, _ = plugins.CollectAnswers().preprocess(nb, resources)
    kept, flags = out.metadata["labmail"]["reponses"], out.metadata["labmail"]["signalements"]
    assert set(kept) == {"interro_02_zone"} and kept["interro_02_zone"]["first"] == [1]  # the forged metadata is gone
    assert "enregistrée par « alice » et rendue par « bob »" in flags["interro_04_priorite"]
    # the same record with the name changed: the nonce gives it away
    renamed = _record("interro_04_priorite", [0, 1], "dave", "2026-12-01T10:00:00Z", "2" * 16)
    nb, resources = submitted("dave", renamed)
    out, _ = plugins.CollectAnswers().preprocess(nb, resources)
    assert out.metadata["labmail"]["reponses"] == {}
    assert "même identifiant 2222222222222222" in out.metadata["labmail"]["signalements"]["interro_04_priorite"]
    assert "alice" in out.metadata["labmail"]["signalements"]["interro_04_priorite"]
    # both now claim the record: the teacher decides (Formgrader shows why)
    nb, resources = submitted("alice", own, other)
    flags = plugins.CollectAnswers().preprocess(nb, resources)[0].metadata["labmail"]["signalements"]
    assert set(flags) == {"interro_04_priorite"} and "« bob, dave »" in flags["interro_04_priorite"]
    # a copy under the original's name leaves the original alone; a user unknown to the course (no hub) is accepted
    shutil.rmtree(Path(resources["metadata"]["path"]).parents[1] / "dave")
    nb, resources = submitted("alice", own, other)
    assert plugins.CollectAnswers().preprocess(nb, resources)[0].metadata["labmail"]["signalements"] == {}
    nb, resources = submitted("carol", _record("interro_02_zone", [0], "jovyan", "2026-12-01T10:00:00Z", "4" * 16))
    assert plugins.CollectAnswers().preprocess(nb, resources)[0].metadata["labmail"]["signalements"] == {}


def test_the_answers_are_given_to_the_grading_kernel_and_nothing_handed_in_beside(tmp_path):
    planted = tmp_path / quiz.ANSWERS_FILE
    planted.write_text(json.dumps({"interro_02_zone": {"first": [0]}}))
    nb = nbformat.v4.new_notebook()
    plugins.ProvideAnswers().preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    assert not planted.exists()  # no labmail metadata (the sanitizing plugin did not run): nothing to grade with
    nb.metadata["labmail"] = {"reponses": {"interro_02_zone": _record("interro_02_zone", [0], "a", "t", "n").to_dict()},
                              "signalements": {"interro_04_priorite": "copiée"}}
    plugins.ProvideAnswers().preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    data = json.loads(planted.read_text())
    assert data["source"] == "notebook" and quiz.load(tmp_path)["interro_02_zone"].first == (0,)
    assert quiz.flags(tmp_path) == {"interro_04_priorite": "copiée"}


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20)
_RECORDISH = st.fixed_dictionaries({}, optional={k: _JSON | st.lists(st.integers(-5, 100), max_size=5)
                                                for k in ("question", "first", "last", "attempts", "time", "user", "nonce",
                                                          "via", "domain", "first_time")})


@pytest.mark.fuzz
@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_JSON, st.fixed_dictionaries({"cell_type": st.just("code"), "outputs": st.lists(
    st.one_of(_JSON, st.fixed_dictionaries({"data": st.fixed_dictionaries({quiz.MIME_TYPE: _RECORDISH | _JSON})})),
    max_size=3)})), max_size=5))
def test_a_hostile_notebook_gives_records_or_nothing_never_a_crash(cells):
    """What a student hands in is their file: any JSON in the outputs yields valid records or none."""
    count()
    for entry in plugins.answers_of({"cells": cells}).values():
        assert isinstance(entry, quiz.Record) and entry.attempts >= 1
        assert all(isinstance(i, int) and 0 <= i < 64 for i in entry.first + entry.last)
        assert len(entry.user) <= 100 and len(entry.nonce) <= 64 and len(entry.question) <= 80


def test_a_malformed_submission_never_stops_the_others_grading(submitted, tmp_path):
    for name, text in (("eve", json.dumps({"cells": [{"cell_type": "code", "outputs": 5}]})),
                       ("mallory", "[" * 100000 + "]" * 100000), ("trudy", json.dumps({"cells": 5}))):
        folder = tmp_path / "submitted" / name / "02-ressources"
        folder.mkdir(parents=True)
        (folder / "02-ressources.ipynb").write_text(text)
    nb, resources = submitted("alice", _record("interro_02_zone", [2], "alice", "2026-12-01T10:00:00Z", "5" * 16))
    out, _ = plugins.CollectAnswers().preprocess(nb, resources)
    assert out.metadata["labmail"]["reponses"]["interro_02_zone"]["first"] == [2]
