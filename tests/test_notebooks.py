"""The course notebooks: committed without outputs, and each runs top to bottom in a fresh kernel on the lab."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


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
    client.execute()
    outputs = json.dumps([cell.get("outputs", []) for cell in nb.cells])
    assert "Traceback" not in outputs and "Error" not in outputs.replace("errors", "")
    secrets = [entry["secret"] for entry in json.loads((cfg.state_dir / "keys" / "tsig.json").read_text()).values()]
    assert not any(secret in outputs for secret in secrets), "a notebook output shows a secret"
    stderr = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, stderr
