"""The class deployment's files (issue 19, part 2): the Zero to JupyterHub values validate against the chart's own
values schema (tests/vendor/z2jh, chart 4.4.0, as ``helm install`` validates them: the user's values merged over the
chart's defaults), and the students' image is built from the environment the tests use, with the course's JupyterLab
settings."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
VENDOR = ROOT / "tests" / "vendor" / "z2jh"
VALUES = ROOT / "deploy" / "z2jh" / "values.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _merge(base: dict, override: dict) -> dict:
    """Helm's coalescing of values: maps merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _errors(values: dict) -> list[str]:
    schema = json.loads((VENDOR / "values.schema.json").read_text())
    merged = _merge(yaml.safe_load((VENDOR / "values.yaml").read_text()), values)
    return sorted(f"{'/'.join(map(str, e.path))}: {e.message}" for e in Draft7Validator(schema).iter_errors(merged))


def test_the_vendored_schema_is_the_charts():
    source = (VENDOR / "SOURCE.md").read_text()
    assert "5c5f5df751588a68a7781ead01d0f62e88e2e72f" in source and "4.4.0" in source
    assert "BSD 3-Clause" in (VENDOR / "LICENSE").read_text()
    assert _errors({}) == []  # the chart's defaults pass their own schema


def test_the_class_values_validate_against_the_charts_schema():
    values = yaml.safe_load(VALUES.read_text())
    assert _errors(values) == []


@pytest.mark.parametrize("mistake, fragment", [
    ({"singleuser": {"memory": {"garantie": "512M"}}}, "garantie"),
    ({"singleuser": {"cpu": {"limit": "beaucoup"}}}, "cpu/limit"),
    ({"singleuser": {"profileList": {"etudiant": "pas une liste"}}}, "singleuser/profileList"),
    ({"singleuser": {"storgae": {"capacity": "2Gi"}}}, "storgae"),
])
def test_a_wrong_value_is_caught_by_the_schema(mistake, fragment):
    """The check can fail: what a typo or a wrong type in the values would give helm."""
    values = _merge(yaml.safe_load(VALUES.read_text()), mistake)
    assert any(fragment in e for e in _errors(values)), _errors(values)


def _mib(quantity: str) -> float:
    """A memory size as KubeSpawner reads it (JupyterHub's ByteSpecification: K, M, G are powers of 1024)."""
    match = re.fullmatch(r"([\d.]+)([KMG])?", str(quantity))
    assert match, f"{quantity!r}: KubeSpawner takes a number with K, M or G"
    number, unit = match.groups()
    return float(number) * {"K": 1 / 1024, "M": 1, "G": 1024, None: 1 / 2**20}[unit]


def test_the_sizes_cover_the_measured_footprint():
    """The guarantee holds one student after the course as measured (bench/footprint.py, README's table: 360 MiB
    PSS with one kernel) plus a second kernel; the limit is above it."""
    values = yaml.safe_load(VALUES.read_text())["singleuser"]
    readme = (ROOT / "README.md").read_text()
    measured = re.search(r"par étudiant·e \(lab \+ serveur \+ un noyau\) \| (\d+) Mio", readme)
    kernel = re.search(r"noyau après les notebooks 00, 05 et 08 \| (\d+) Mio", readme)
    assert measured and kernel, "the README's sizing table gives the measured figures"
    assert _mib(values["memory"]["guarantee"]) >= int(measured.group(1)) + int(kernel.group(1))
    assert _mib(values["memory"]["limit"]) > _mib(values["memory"]["guarantee"])
    # on the class's shared lab, a student holds their server and kernels only: the lab's share is not theirs
    server = re.search(r"serveur Jupyter \(JupyterLab\) \| (\d+) Mio", readme)
    shared = next(p["kubespawner_override"] for p in values["profileList"] if "lab de la classe" in p["display_name"])
    assert server and _mib(shared["mem_guarantee"]) >= int(server.group(1)) + 2 * int(kernel.group(1))
    assert _mib(shared["mem_guarantee"]) < _mib(values["memory"]["guarantee"]) < _mib(shared["mem_limit"])


def test_the_image_is_built_from_the_tested_environment_with_the_course_settings():
    text = DOCKERFILE.read_text()
    assert "mamba env update -n base -f environment.yml" in text  # the same packages and versions as the tests'
    assert "pip install --no-cache-dir -e '.[grading]'" in text
    for settings in ("jupyter/overrides.json", "jupyter/etudiant/labconfig/page_config.json",
                     "jupyter/etudiant/jupyter_server_config.json"):
        assert f"cp {settings} " in text and (ROOT / settings).exists()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "jupyterlab-language-pack-fr-FR>=4.2" in env["dependencies"]
    assert "umask 077" in text and "/srv/nbgrader/exchange" in text
    mount = yaml.safe_load(VALUES.read_text())["singleuser"]["storage"]["extraVolumeMounts"][0]["mountPath"]
    assert mount == "/srv/nbgrader/exchange"  # where the image's nbgrader_config.py looks
    teacher = next(p for p in yaml.safe_load(VALUES.read_text())["singleuser"]["profileList"]
                   if p["display_name"] == "Enseignant·e")["kubespawner_override"]
    path = teacher["environment"]["JUPYTER_CONFIG_PATH"].replace("/opt/labmail/", "")
    assert json.loads((ROOT / path / "labconfig" / "page_config.json").read_text())["disabledExtensions"] == \
        dict.fromkeys(json.loads((ROOT / "jupyter/etudiant/labconfig/page_config.json").read_text())["disabledExtensions"],
                      False)  # the teacher's profile re-enables exactly what the students' view hides
