"""A class roster: the CSV an instructor gives (``prenom``, ``nom``, ``email``), read into students with unique labels.

Each first name becomes the student's label by :func:`labmail.config.to_label`; when two students share it, the
initial of the last name is added (``jean-d``). Used by the lab (provisioning a class) and by the instructor's
view (:mod:`labmail.classroom`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .config import to_label
from .errors import ConfigError

__all__ = ["Student", "read_roster"]


@dataclass(frozen=True)
class Student:
    first_name: str
    last_name: str
    email: str
    label: str

    def domain(self, parent: str) -> str:
        return f"{self.label}.{parent}"


def read_roster(path: str | Path) -> list[Student]:
    """Read a roster CSV; labels are made unique (see the module doc). Bad lines are reported, not skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"Impossible de lire la liste de classe {path} ({exc.strerror}).",
                          f"Cannot read the class roster {path} ({exc.strerror}).") from None
    rows = list(csv.DictReader(text.splitlines()))
    students: list[Student] = []
    used: set[str] = set()
    for number, row in enumerate(rows, 2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        first = row.get("prenom") or row.get("prénom") or row.get("first_name") or ""
        last = row.get("nom") or row.get("last_name") or ""
        try:
            label = to_label(first)
        except ConfigError as exc:
            raise ConfigError(f"{path}, ligne {number} : {exc.text.fr}", f"{path}, line {number}: {exc.text.en}") from None
        if label in used:
            label = to_label(f"{first} {last[:1]}") if last else label
            suffix = 2
            while label in used:
                label = f"{to_label(first)}-{suffix}"
                suffix += 1
        used.add(label)
        students.append(Student(first, last, row.get("email", ""), label))
    if not students:
        raise ConfigError(f"{path} ne contient aucun étudiant (colonnes attendues : prenom, nom, email).",
                          f"{path} holds no student (expected columns: prenom, nom, email).")
    return students
