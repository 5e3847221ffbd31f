"""One table for ``make bench``: each benchmark records its headline figures here (when run by bench/run.py,
which sets LABMAIL_BENCH_JSON), with the peer measured in the same run where one exists."""

from __future__ import annotations

import json
import os
from pathlib import Path


def record(measure: str, value: float, unit: str, *, target: str = "", peer: str = "", peer_value: float | None = None,
           higher_is_better: bool = True, note: str = "") -> None:
    """Add one row: labmail's figure, and the peer's (same run) if any; the ratio says how labmail compares."""
    path = os.environ.get("LABMAIL_BENCH_JSON")
    if not path:
        return
    rows = json.loads(Path(path).read_text()) if Path(path).exists() else []
    rows.append({"measure": measure, "value": value, "unit": unit, "target": target, "peer": peer,
                 "peer_value": peer_value, "higher_is_better": higher_is_better, "note": note})
    Path(path).write_text(json.dumps(rows, indent=1))
