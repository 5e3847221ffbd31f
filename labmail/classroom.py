"""The instructor's view of a class: a roster, every student's domain audited, a table and a heat map.

Roster: a CSV file with a header line and the columns ``prenom`` (or ``first_name``), ``nom`` (or
``last_name``) and optionally ``email`` — an example is ``data/roster-example.csv``. Each first name becomes
the student's label by :func:`labmail.config.to_label`; when two students share it, the initial of the last
name is added (``jean-d``).

>>> report = classroom("data/roster-example.csv")    # doctest: +SKIP
>>> report.to_dataframe()                            # doctest: +SKIP
"""

from __future__ import annotations

import os

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .i18n import frame
from .roster import Student, read_roster

if TYPE_CHECKING:  # pragma: no cover
    import pandas

    from .checks import DomainAudit

__all__ = ["Student", "read_roster", "classroom", "ClassReport", "COLUMNS"]

#: The audit rows shown for each student, in order (role → column title).
COLUMNS = {"mx": "MX", "spf": "SPF", "dkim": "DKIM", "dmarc": "DMARC", "autodiscover": "autodiscover",
           "autodiscover-srv": "SRV autodiscover", "autoconfig": "autoconfig"}
_SCORE = {"OK": 2, "INFO": 2, "OPTIONAL": 1, "WRONG": 0, "MISSING": 0}


@dataclass(frozen=True)
class ClassReport:
    students: tuple[Student, ...]
    audits: tuple["DomainAudit", ...]

    def to_dataframe(self) -> "pandas.DataFrame":
        """Students × checks: the status of each row (OK, WRONG, MISSING…), plus a score."""

        records = []
        for student, audit in zip(self.students, self.audits):
            statuses = {r.role: r.status for r in audit.rows}
            record = {"étudiant": f"{student.first_name} {student.last_name}".strip(), "domaine": audit.domain}
            record.update({title: statuses.get(role, "MISSING") for role, title in COLUMNS.items()})
            record["score"] = sum(_SCORE[record[t]] for t in COLUMNS.values())
            records.append(record)
        return frame(records, columns=["étudiant", "domaine", *COLUMNS.values(), "score"])

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.to_dataframe().to_csv(path, index=False)
        return path

    def plot(self, ax=None):
        from .plots import class_heatmap

        return class_heatmap(self.to_dataframe(), ax=ax)


def classroom(roster: str | Path | list[Student], *, world=None, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> ClassReport:
    """Audit every student's domain concurrently; ``progress(done, total)`` is called as audits finish.

    ``workers`` defaults to twice the cores: each audit asks its zone's ~20 names together and waits for the
    answers, while another parses (measured on 2 cores against the lab, 200 domains: 1 worker 0.61–0.69 s,
    2 workers 0.38 s, 4 workers 0.36 s, 8 workers 0.36 s)."""
    from .checks import domain
    from .world import current

    students = read_roster(roster) if not isinstance(roster, list) else roster
    world = world or current()
    parent = world.config.parent_domain
    done = 0
    results: dict[int, object] = {}
    shared: dict = {}  # the server's addresses, PTR, DNSBL…: the same for every student, asked once

    def one(index: int):
        return index, domain(students[index].domain(parent), world=world, shared=shared)

    if workers is None:
        workers = 2 * (os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for index, audit in pool.map(one, range(len(students))):
            results[index] = audit
            done += 1
            if progress is not None:
                progress(done, len(students))
    return ClassReport(tuple(students), tuple(results[i] for i in range(len(students))))
