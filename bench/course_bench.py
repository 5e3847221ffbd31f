"""The whole course, executed (issue 7): every notebook of notebooks/, in course order, each in a fresh kernel
(as nbgrader runs them), on a fresh lab started by the benchmark — the time a class machine needs to run the
course end to end. Target ≤ 3 minutes on 2 cores.

Run: ``.venv/bin/python bench/course_bench.py`` (``--order random`` to shuffle; ``--repeat N``).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_course(order: str, seed: int) -> tuple[float, float, list[tuple[str, float]]]:
    import nbformat
    from nbclient import NotebookClient

    from labmail import config, lab

    notebooks = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if order == "random":
        random.Random(seed).shuffle(notebooks)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"LABMAIL_STATE_DIR": f"{tmp}/state", "LABMAIL_CONFIG": f"{tmp}/config.toml",
                           "LABMAIL_SYSTEM_CONFIG": f"{tmp}/system.toml", "LABMAIL_PRENOM": "jean-emile"})
        cfg = config.load()
        started = time.perf_counter()
        lab.start(cfg)
        try:
            lab_start = time.perf_counter() - started
            timings = []
            for path in notebooks:
                nb = nbformat.read(path, as_version=4)
                t0 = time.perf_counter()
                NotebookClient(nb, timeout=300, kernel_name="python3",
                               resources={"metadata": {"path": tmp}}).execute()
                timings.append((path.parent.name, time.perf_counter() - t0))
            total = time.perf_counter() - started
        finally:
            lab.stop(cfg)
    return lab_start, total, timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--order", choices=["course", "random"], default="course")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    totals = []
    for run in range(args.repeat):
        lab_start, total, timings = run_course(args.order, seed=run)
        totals.append(total)
        print(f"run {run + 1}: lab start {lab_start:.2f} s")
        for name, seconds in timings:
            print(f"  {name:<22} {seconds:6.1f} s")
        print(f"  {'whole course':<22} {total:6.1f} s  ({len(timings)} notebooks, fresh kernel each)")
    print(f"whole course (lab start + every notebook): median {statistics.median(totals):.1f} s over {len(totals)} run(s)"
          f"   target ≤ 180 s   on {os.cpu_count()} cores")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import record

    record("whole course executed (15 notebooks, fresh kernels)", round(statistics.median(totals), 1), "s",
           target="≤ 180 s", higher_is_better=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
