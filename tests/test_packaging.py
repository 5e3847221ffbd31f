"""The package as installed: dependencies declared once, a light import, a public surface that holds."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib"}


def _name(requirement: str) -> tuple[str, str]:
    match = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def test_environment_yml_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = dict(_name(r) for r in pyproject["project"]["dependencies"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    python = [d for d in deps if d.startswith("python")]
    assert python == ["python=3.11"], "environment.yml must pin Python"
    conda = {}
    for dep in deps:
        name, spec = _name(dep)
        if name in ("python", "pip"):
            continue
        conda[CONDA_TO_PYPI.get(name, name)] = spec
    assert conda == declared
    pip = [d for d in env["dependencies"] if isinstance(d, dict)]
    assert pip == [{"pip": ["-e ."]}]
    assert pyproject["project"]["requires-python"] == ">=3.11"


def test_import_labmail_is_light():
    code = "import sys, labmail, labmail.lab.server; print(sorted(m for m in ('pandas','matplotlib','ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lab_process_imports_no_display_libraries():
    code = ("import runpy, sys; sys.argv=['x','--help']\n"
            "import labmail.lab.server as s\n"
            "import labmail.lab.dnsserver, labmail.lab.zones, labmail.lab.world\n"
            "print(sorted(m for m in ('pandas','matplotlib','ipywidgets','labmail.dns','labmail.widgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api():
    import labmail
    import labmail.dns
    import labmail.errors
    import labmail.lab

    assert labmail.__version__
    for module in (labmail.dns, labmail.errors, labmail.lab):
        for name in module.__all__:
            assert hasattr(module, name), (module.__name__, name)
    assert issubclass(labmail.errors.InvalidName, labmail.errors.LabmailError)
    assert set(labmail.__all__) >= {"config", "dns", "lab", "errors", "world"}
    try:
        labmail.nope  # noqa: B018
    except AttributeError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("unknown attribute must raise")


def test_console_script_declared():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["labmail"] == "labmail.cli:main"


def test_make_lab_opens_the_students_french_jupyterlab_with_labmail_on_the_terminals_path():
    """make lab: the student's view (jupyter/etudiant), the venv's bin first on the PATH that JupyterLab's terminals
    inherit (labmail), and the venv's overrides.json (French, no news) installed by make install."""
    out = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if "jupyter lab" in l)
    assert f'JUPYTER_CONFIG_PATH="{ROOT}/jupyter/etudiant"' in line
    assert f'PATH="{ROOT}/.venv/bin:' in line
    assert "overrides.json" in subprocess.run(["make", "-n", "-B", ".venv/.installed"], cwd=ROOT, capture_output=True,
                                              text=True, check=True).stdout
    import json

    overrides = json.loads((ROOT / "jupyter" / "overrides.json").read_text())
    assert overrides["@jupyterlab/translation-extension:plugin"]["locale"] == "fr_FR"
    assert overrides["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false", "checkForUpdates": False}
