"""Fuzzing scale: the suite runs a short fuzz; ``make fuzz`` multiplies every fuzz test's examples.

``LABMAIL_FUZZ_SCALE`` (default 1) multiplies ``examples(n)``; every fuzz example calls :func:`count`, and the
session prints the total (conftest), so the long run can show it reached its target.
"""

from __future__ import annotations

import os

CASES = {"total": 0}


def examples(n: int) -> int:
    return max(1, int(n * float(os.environ.get("LABMAIL_FUZZ_SCALE", "1"))))


def count() -> None:
    CASES["total"] += 1
