"""Run every benchmark of bench/ and print one table (``make bench``).

Each script prints its details and records its headline figures (bench/_report.py), with the peer measured in the
same run where one exists — BIND for DNS, pyspf for SPF, checkdmarc for the class audit — as a ratio
(> 1: labmail better). ``--quick`` skips the slow ones (class load, whole course).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["dns_bench.py", "auth_bench.py", "mail_bench.py", "checks_bench.py", "course_bench.py", "class_load.py",
           "footprint.py"]
QUICK = ["dns_bench.py", "auth_bench.py", "mail_bench.py", "checks_bench.py"]


def import_time(runs: int = 9) -> float:
    """``import labmail`` in a fresh interpreter, the interpreter's own start subtracted (median, ms)."""
    def run(code: str) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - started

    base = statistics.median(run("pass") for _ in range(runs))
    full = statistics.median(run("import labmail") for _ in range(runs))
    return (full - base) * 1000


def table(rows: list[dict]) -> str:
    lines = ["| measure | labmail | peer (same run) | ratio | target |", "|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['value']:,} {r['unit']}" if isinstance(r["value"], int) else f"{r['value']} {r['unit']}"
        peer, ratio = r.get("peer") or "—", "—"
        if r.get("peer_value"):
            peer = f"{r['peer']}: {r['peer_value']:,} {r['unit']}"
            ratio = r["value"] / r["peer_value"] if r["higher_is_better"] else r["peer_value"] / r["value"]
            ratio = f"{ratio:.2f}×"
        note = f" ({r['note']})" if r.get("note") else ""
        lines.append(f"| {r['measure']} | {value}{note} | {peer} | {ratio} | {r.get('target') or '—'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    status = 0
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        env = dict(os.environ, LABMAIL_BENCH_JSON=str(report))
        # As on a user's machine after a first use: labmail's bytecode compiled, as pip compiled the peers' libraries.
        # (Hosted sandboxes may set PYTHONDONTWRITEBYTECODE: labmail's sources would then be compiled at every start.)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(HERE.parent / "labmail")], check=True, env=env)
        for name in QUICK if args.quick else BENCHES:
            print(f"== {name}", flush=True)
            status |= subprocess.run([sys.executable, str(HERE / name)], env=env).returncode
        rows = json.loads(report.read_text()) if report.exists() else []
    rows.append({"measure": "import labmail (interpreter start excluded)", "value": round(import_time(), 1),
                 "unit": "ms", "target": "", "peer": "", "peer_value": None, "higher_is_better": False, "note": ""})
    print(f"\n## labmail — benchmarks ({os.cpu_count()} cores, Python {sys.version.split()[0]})\n")
    print(table(rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
