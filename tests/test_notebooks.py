"""The course notebooks: committed without outputs, and each runs top to bottom in a fresh kernel on the lab."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

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
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
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


def _student_version(nb):
    """What nbgrader's ClearSolutions makes of a source notebook (French stubs), for the student-version run."""
    import re

    student = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in student.cells:
        if "BEGIN SOLUTION" not in cell.source:
            continue
        stub = "# VOTRE CODE ICI\nraise NotImplementedError()" if cell.cell_type == "code" else "VOTRE RÉPONSE ICI"
        cell.source = re.sub(r"(?ms)^[ \t]*### BEGIN SOLUTION.*?### END SOLUTION[^\n]*", stub, cell.source)
    return student


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


@pytest.mark.notebook
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "BEGIN SOLUTION" in p.read_text()], ids=lambda p: p.parent.name)
def test_student_version_stops_at_the_first_exercise(path, lab_env, tmp_path):
    from nbclient.exceptions import CellExecutionError

    from labmail import course

    cfg, _status = lab_env
    student = _student_version(nbformat.read(path, as_version=4))
    client = NotebookClient(student, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    first = next(i for i, c in enumerate(student.cells) if c.cell_type == "code" and "VOTRE CODE ICI" in c.source) \
        if any(c.cell_type == "code" and "VOTRE CODE ICI" in c.source for c in student.cells) else None
    try:
        if first is None:
            client.execute()
        else:
            with pytest.raises(CellExecutionError) as failure:
                client.execute()
            assert failure.value.ename == "NotImplementedError"
            ran = [i for i, c in enumerate(student.cells) if c.cell_type == "code" and c.get("execution_count")]
            assert max(ran) == first, "the student version must stop at its first exercise, not before"
    finally:
        course.prepare(0, config=cfg)
