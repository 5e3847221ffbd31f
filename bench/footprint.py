"""Per-student footprint (issue 19, part 4): the memory a student's environment holds after the course's notebooks.

One embedded lab, one Jupyter server (JupyterLab, as the hub spawns it), one kernel that has run notebooks 00, 05 and
08 (each a fresh kernel, as a student opening them one after the other: the last one is measured alive). PSS
(proportional set size: shared pages divided among the processes sharing them) and RSS from /proc/<pid>/smaps_rollup.

Run: ``.venv/bin/python bench/footprint.py``. The figures feed the README's sizing table and deploy/z2jh/values.yaml.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def memory(pid: int) -> tuple[float, float]:
    """(PSS, RSS) in MiB of ``pid`` and its children."""
    pids = [pid]
    try:
        import psutil

        pids += [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        pass
    pss = rss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return pss / 1024, rss / 1024


def main() -> int:
    import nbformat
    from nbclient import NotebookClient

    from labmail import config, lab

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LABMAIL_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ["LABMAIL_CONFIG"] = str(Path(tmp) / "config.toml")
        os.environ["LABMAIL_PRENOM"] = "jean-emile"
        cfg = config.load()
        status = lab.start(cfg)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        token = secrets.token_hex(16)
        server = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                                   f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
                                   f"--ServerApp.root_dir={tmp}", "--allow-root"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            kernel_pss = kernel_rss = 0.0
            for name in ("00-demarrage", "05-boites-mail", "08-en-tetes"):
                nb = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
                client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": tmp}})
                with client.setup_kernel():
                    for index, cell in enumerate(nb.cells):
                        client.execute_cell(cell, index)
                    kernel_pss, kernel_rss = memory(client.km.provisioner.process.pid)
            lab_pss, lab_rss = memory(status.pid)
            server_pss, server_rss = memory(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=10)
            lab.stop(cfg)
    total = lab_pss + server_pss + kernel_pss
    print(f"embedded lab        PSS {lab_pss:6.1f} MiB   RSS {lab_rss:6.1f} MiB")
    print(f"Jupyter server      PSS {server_pss:6.1f} MiB   RSS {server_rss:6.1f} MiB")
    print(f"kernel (after 08)   PSS {kernel_pss:6.1f} MiB   RSS {kernel_rss:6.1f} MiB")
    print(f"per student         PSS {total:6.1f} MiB (one kernel open at a time)")
    from _report import record

    record("per student after notebooks 00, 05, 08: lab + server + one kernel (PSS)", round(total), "MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
