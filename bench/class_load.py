"""A class on one lab (issue 9): 200 students at once against one lab started for the class.

Each student publishes MX and SPF, creates tintin and milou, sends tintin → milou and → their Gmail-like mailbox,
reads milou over IMAP and POP3 and the provider mailbox over IMAP (labmail.loadtest). Reports errors, lost and
duplicated messages (all must be 0) and the p50/p99 latency of each operation.

With ``--adresse 127.0.0.2`` the lab listens where a class reaches a shared lab (``lab start --class --adresse``).
The class lab's own footprint is reported too (issue 19, part 4): its memory (PSS and RSS, from
/proc/<pid>/smaps_rollup) once the class is enrolled and after the load, and the CPU time the load cost it.

Run: ``.venv/bin/python bench/class_load.py [--students 200] [--workers 50] [--adresse 127.0.0.2]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labmail import config, lab  # noqa: E402
from labmail.loadtest import simulate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--adresse", default=None, help="the address the class lab listens on (default: loopback)")
    args = parser.parse_args()
    from footprint import memory
    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "classe.csv"
        roster.write_text("prenom,nom,email\n" + "".join(f"Eleve{n:03d},Test,\n" for n in range(args.students)),
                          encoding="utf-8")
        os.environ.update({"LABMAIL_STATE_DIR": f"{tmp}/state", "LABMAIL_CONFIG": f"{tmp}/config.toml",
                           "LABMAIL_SYSTEM_CONFIG": f"{tmp}/system.toml", "LABMAIL_PRENOM": "eleve000"})
        cfg = config.load()
        pid = lab.start(cfg, listen=args.adresse).pid
        try:
            started = time.perf_counter()
            lab.provision_class(roster, cfg)
            print(f"provisioning {args.students} students: {time.perf_counter() - started:.1f} s")
            enrolled, cpu = memory(pid), _cpu_seconds(pid)
            result = simulate(cfg, workers=args.workers)
            loaded, cpu = memory(pid), _cpu_seconds(pid) - cpu
        finally:
            lab.stop(cfg)
    print(result)
    print(f"class lab ({args.students} students, on {args.adresse or '127.0.0.1'}): PSS {enrolled[0]:.0f} MiB enrolled, "
          f"{loaded[0]:.0f} MiB after the load (RSS {loaded[1]:.0f}); the load cost it {cpu:.1f} s of CPU "
          f"in {result.seconds:.1f} s")
    from _report import record

    record(f"class lab of {result.students}: memory after the load (PSS)", round(loaded[0]), "MiB",
           note=f"{enrolled[0]:.0f} MiB once enrolled; {cpu:.1f} s CPU for the load", higher_is_better=False)
    latency = result.latency()
    record(f"class of {result.students}: submit p50 / p99", round(latency["submit"][0]), "ms",
           note=f"p99 {latency['submit'][1]:.0f} ms; errors {len(result.errors)}, lost {len(result.lost)}, "
                f"duplicated {len(result.duplicated)}", higher_is_better=False)
    print(f"class load: {result.students} students, {args.workers} at once, {os.cpu_count()} cores — "
          f"errors {len(result.errors)}, lost {len(result.lost)}, duplicated {len(result.duplicated)}")
    return 0 if not (result.errors or result.lost or result.duplicated) else 1


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    sys.exit(main())
