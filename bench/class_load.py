"""A class on one lab (issue 9): 200 students at once against one lab started for the class.

Each student publishes MX and SPF, creates tintin and milou, sends tintin → milou and → their Gmail-like mailbox,
reads milou over IMAP and POP3 and the provider mailbox over IMAP (labmail.loadtest). Reports errors, lost and
duplicated messages (all must be 0) and the p50/p99 latency of each operation.

Run: ``.venv/bin/python bench/class_load.py [--students 200] [--workers 50]``.
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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roster = Path(tmp) / "classe.csv"
        roster.write_text("prenom,nom,email\n" + "".join(f"Eleve{n:03d},Test,\n" for n in range(args.students)),
                          encoding="utf-8")
        os.environ.update({"LABMAIL_STATE_DIR": f"{tmp}/state", "LABMAIL_CONFIG": f"{tmp}/config.toml",
                           "LABMAIL_SYSTEM_CONFIG": f"{tmp}/system.toml", "LABMAIL_PRENOM": "eleve000"})
        cfg = config.load()
        lab.start(cfg)
        try:
            started = time.perf_counter()
            lab.provision_class(roster, cfg)
            print(f"provisioning {args.students} students: {time.perf_counter() - started:.1f} s")
            result = simulate(cfg, workers=args.workers)
        finally:
            lab.stop(cfg)
    print(result)
    from _report import record

    latency = result.latency()
    record(f"class of {result.students}: submit p50 / p99", round(latency["submit"][0]), "ms",
           note=f"p99 {latency['submit'][1]:.0f} ms; errors {len(result.errors)}, lost {len(result.lost)}, "
                f"duplicated {len(result.duplicated)}", higher_is_better=False)
    print(f"class load: {result.students} students, {args.workers} at once, {os.cpu_count()} cores — "
          f"errors {len(result.errors)}, lost {len(result.lost)}, duplicated {len(result.duplicated)}")
    return 0 if not (result.errors or result.lost or result.duplicated) else 1


if __name__ == "__main__":
    sys.exit(main())
