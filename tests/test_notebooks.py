"""The course notebooks: committed without outputs, and each runs top to bottom in a fresh kernel on the lab."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import kernels

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _secrets(state_dir: Path) -> list[str]:
    """Every secret of the lab: TSIG keys, API keys, the course's and the providers' mailbox passwords."""
    from labmail.lab.apikeys import api_keys

    def read(path: Path) -> dict:
        return json.loads(path.read_text()) if path.exists() else {}

    found = [entry["secret"] for entry in read(state_dir / "keys" / "tsig.json").values()]
    keys = api_keys(state_dir)
    found += [keys["admin"], *keys["domains"].values()]
    found += list(read(state_dir / "course-passwords.json").values())
    found += list(read(state_dir / "keys" / "provider-passwords.json").values())
    return [secret for secret in found if secret]


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ must hold the course"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: run 'Clear All Outputs' before committing"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_notebook_runs_on_the_lab(path, lab_env, tmp_path):
    cfg, _status = lab_env
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            config=kernels.config())
    try:
        client.execute()
    finally:
        from labmail import course

        course.prepare(0, config=cfg)  # the next notebook, and the next test module, start from the course's start
    outputs = json.dumps([cell.get("outputs", []) for cell in nb.cells])
    assert "Traceback" not in outputs and "Error" not in outputs.replace("errors", "")
    secrets = _secrets(cfg.state_dir)
    assert len(secrets) >= 4  # TSIG, admin and student API keys, provider passwords at least
    assert not any(secret in outputs for secret in secrets), "a notebook output shows a secret"
    stderr = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr


_NBGRADER_KEYS = {"schema_version", "grade", "solution", "locked", "grade_id", "points", "task"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_nbgrader_source_format(path):
    import re

    nb = nbformat.read(path, as_version=4)
    ids = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        if "BEGIN SOLUTION" in cell.source or "END SOLUTION" in cell.source:
            assert meta and meta["solution"], f"{path.name}: a solution region outside a solution cell"
            assert cell.source.count("### BEGIN SOLUTION") == cell.source.count("### END SOLUTION") == 1
        if not meta:
            continue
        assert set(meta) <= _NBGRADER_KEYS and meta["schema_version"] == 3
        assert {"grade", "solution", "locked", "grade_id"} <= set(meta)
        assert re.fullmatch(r"[a-zA-Z0-9_\-]+", meta["grade_id"])
        if meta["grade"] or meta.get("task"):
            assert meta.get("points", 0) > 0, f"{meta['grade_id']}: graded without points"
        if meta.get("task"):  # a manually graded task: a locked question with its mark scheme, not a grade cell
            assert cell.cell_type == "markdown" and meta["locked"] and not meta["grade"] and not meta["solution"]
            assert "=== BEGIN MARK SCHEME ===" in cell.source and "=== END MARK SCHEME ===" in cell.source
        if cell.cell_type == "markdown" and not meta.get("task"):
            assert meta["grade"] == meta["solution"], f"{meta['grade_id']}: markdown answers are graded solutions"
        ids.append(meta["grade_id"])
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "99-formateur" not in str(p)], ids=lambda p: p.parent.name)
def test_every_exercise_guides_the_student(path):
    """A heading, a one-sentence goal, the stub's import, an open question stated in its task cell, a quiz answer cell
    after its quiz — what the student version needs to guide (the stub itself is nbgrader's, see nbgrader_config.py)."""
    import re

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    solutions = [i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")]
    if solutions:
        assert "grading" in code[0].source, f"{path.name}: the first cell must import grading (the stub calls it)"
    for i in solutions:
        gid = nb.cells[i].metadata["nbgrader"]["grade_id"]
        before = [c for c in nb.cells[:i] if c.cell_type == "markdown"]
        if gid.startswith("reponse_"):
            qid = "interro_" + gid[len("reponse_"):]
            assert any(f'quiz("{qid}")' in c.source for c in nb.cells[:i] if c.cell_type == "code"), gid
            continue
        heading = next(c.source for c in reversed(before) if re.search(r"^##.*Exercice", c.source, re.M))
        assert "**But :**" in heading, f"{gid}: the exercise states its goal in one sentence"
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("task"):
            question = cell.source.split("=== BEGIN MARK SCHEME ===")[0]
            assert "?" in question and not question.startswith("Avec vos mots"), f"{meta['grade_id']}: state the question"


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "99-formateur" not in str(p)], ids=lambda p: p.parent.name)
def test_quiz_examples_show_the_syntax_never_the_answer(path):
    import re

    from labmail.interro import QUESTIONS

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        found = re.search(r'(\w+) = quiz\("(interro_\w+)"\)', cell.source)
        if found:
            question = QUESTIONS[found.group(2)]
            assert f"`{found.group(1)}.answer({question.example})`" in nb.cells[i + 1].source, found.group(2)


@pytest.mark.notebook
def test_test_kernels_talk_over_this_workers_unix_sockets():
    """The kernels the tests start themselves use IPC (tests/kernels.py): two workers cannot race for a TCP port."""
    import os

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"import os; print(sorted(os.listdir({os.path.dirname(kernels.PREFIX)!r})))")]
    NotebookClient(nb, timeout=60, kernel_name="python3", config=kernels.config()).execute()
    assert nb.cells[0].outputs[0]["text"].strip() == str([f"k-{n}" for n in range(1, 6)])
    assert not os.listdir(os.path.dirname(kernels.PREFIX)), "the sockets are removed with the kernel"


@pytest.mark.notebook
@pytest.mark.parametrize("teacher", ["capitaine", "zoe"])
def test_the_teachers_notebook_works_for_any_teacher(teacher, tmp_path_factory, world_template, monkeypatch, tmp_path):
    """Notebook 99 builds its demonstration class around the teacher's own first name (hub run: KeyError when the
    teacher was not in the example roster), and leaves out an example student who has the teacher's name."""
    from labs import private_lab, use_lab

    with private_lab(tmp_path_factory, world_template, f"teacher-{teacher}", prenom=teacher) as (cfg, _passwords):
        use_lab(monkeypatch, cfg, prenom=teacher)
        path = ROOT / "notebooks" / "99-formateur" / "99-formateur.ipynb"
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                       config=kernels.config()).execute()
        roster = (tmp_path / "classe.csv").read_text(encoding="utf-8").splitlines()
        assert roster[1].startswith(f"{teacher},") and len(roster) == 4
        assert sum(line.lower().startswith(("zoë", "zoe")) for line in roster) == 1  # the teacher is the one Zoé
