"""The instructor's class view: roster, one lab for a class, every domain audited, table, heat map, CLI."""

from __future__ import annotations

import csv
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labmail import classroom, config, lab
from labmail.classroom import read_roster
from labmail.errors import ConfigError

ROSTER = Path(__file__).resolve().parents[1] / "data" / "roster-example.csv"


def test_roster_labels_are_unique_and_valid(tmp_path):
    students = read_roster(ROSTER)
    assert [s.label for s in students] == ["jean-emile", "zoe", "anne-sophie", "jean", "jean-d", "francois"]
    bad = tmp_path / "bad.csv"
    bad.write_text("prenom,nom\nJean,Dupont\njean.pierre,X\n")
    with pytest.raises(ConfigError, match="ligne 3"):
        read_roster(bad)
    empty = tmp_path / "empty.csv"
    empty.write_text("prenom,nom\n")
    with pytest.raises(ConfigError, match="aucun étudiant"):
        read_roster(empty)


@pytest.fixture(scope="module")
def class_lab(tmp_path_factory, world_template):
    base = tmp_path_factory.mktemp("classlab")
    shutil.copytree(world_template, base / "state")
    cfg = config.Config(prenom="jean-emile", state_dir=base / "state")
    lab.start(cfg)
    yield cfg
    lab.stop(cfg)


@pytest.fixture
def env(class_lab, monkeypatch):
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(class_lab.state_dir))
    monkeypatch.setenv("LABMAIL_PRENOM", "jean-emile")
    return class_lab


def test_one_lab_for_a_class_and_its_credentials_file(env):
    path = lab.provision_class(ROSTER, env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert [r["domaine"] for r in rows][:2] == ["jean-emile.labmail.cloud", "zoe.labmail.cloud"]
    assert all(r["cle_api"] and r["tsig_secret"] and r["mdp_gmail"] for r in rows)
    status = lab.status(env)
    assert {"zoe", "anne-sophie", "jean", "jean-d", "francois"} <= set(status.students)


def test_classroom_table_heatmap_and_csv(env, tmp_path):
    lab.provision_class(ROSTER, env)
    from labmail.dns import ZonePanel
    from labmail.world import current

    panel = ZonePanel(world=current())  # jean-emile does the MX step
    panel.add("@", "MX", "10 mailcow.labmail.cloud.")
    seen = []
    report = classroom.classroom(ROSTER, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (6, 6)
    frame = report.to_dataframe()
    assert list(frame.columns) == ["étudiant", "domaine", "MX", "SPF", "DKIM", "DMARC", "autodiscover", "SRV autodiscover",
                                   "autoconfig", "score"]
    by_domain = frame.set_index("domaine")
    assert by_domain.loc["jean-emile.labmail.cloud", "MX"] == "OK" and by_domain.loc["zoe.labmail.cloud", "MX"] == "MISSING"
    assert by_domain.loc["jean-emile.labmail.cloud", "score"] > by_domain.loc["zoe.labmail.cloud", "score"]
    out = report.to_csv(tmp_path / "classe.csv")
    assert out.read_text().startswith("étudiant,domaine,MX")
    import matplotlib

    matplotlib.use("Agg")
    ax = report.plot()
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["MX", "SPF"]
    assert {t.get_text() for t in ax.texts} <= {"OK", "WRONG", "MISSING", "OPTIONAL", "INFO"} and len(ax.texts) == 6 * 7
    panel.delete("@", "MX")


def test_cli_class(env, tmp_path):
    lab.provision_class(ROSTER, env)
    out = subprocess.run([sys.executable, "-m", "labmail.cli", "class", str(ROSTER), "--csv", str(tmp_path / "c.csv"),
                          "--png", str(tmp_path / "c.png")], capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "6/6" in out.stderr and "zoe.labmail.cloud" in out.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "c.csv").exists()
