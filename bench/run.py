"""Run every benchmark of bench/ and print their figures (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["dns_bench.py", "auth_bench.py", "mail_bench.py", "checks_bench.py", "course_bench.py"]


def main() -> int:
    status = 0
    for name in BENCHES:
        print(f"== {name}")
        status |= subprocess.run([sys.executable, str(HERE / name)]).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
