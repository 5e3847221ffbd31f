"""A class working at once on one lab: no error, nothing lost, nothing duplicated (bench/class_load.py: 200)."""

from __future__ import annotations

import shutil

import pytest

from labmail import config, lab
from labmail.loadtest import simulate


@pytest.fixture(scope="module")
def class_lab(tmp_path_factory, world_template):
    base = tmp_path_factory.mktemp("classlab")
    shutil.copytree(world_template, base / "state")
    roster = base / "classe.csv"
    names = [f"Eleve{n:02d}" for n in range(20)]
    roster.write_text("prenom,nom,email\n" + "".join(f"{n},Test,\n" for n in names), encoding="utf-8")
    cfg = config.Config(prenom="eleve00", state_dir=base / "state")
    lab.start(cfg)
    lab.provision_class(roster, cfg)
    yield cfg
    lab.stop(cfg)


def test_twenty_students_at_once(class_lab, monkeypatch):
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(class_lab.state_dir))
    result = simulate(class_lab, workers=20)
    assert result.students == 20
    assert not result.errors and not result.lost and not result.duplicated, str(result)
    latency = result.latency()
    assert set(latency) == {"dns", "mailboxes", "submit", "imap", "pop3", "provider"}
    assert all(count == 20 for _p50, _p99, count in latency.values()), latency
