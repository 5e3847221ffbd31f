"""How the tests' own kernel clients (nbclient, nbgrader, nbconvert) reach their kernels: IPC sockets, not TCP ports.

jupyter_client chooses a TCP kernel's five ports by binding port 0 and closing the socket; the kernel binds them a
moment later. With two pytest-xdist workers, the other worker (its kernel, its lab, any connection's ephemeral port)
can take one of those ports in between, and the kernel dies at start with "Address already in use": nbclient and
nbgrader's autograde do not restart it. Kernels they start here talk over Unix sockets named ``<dir>/k-<n>`` in a
short folder of this worker's own (a Unix socket path is limited to 107 bytes), numbered past any file that exists,
so two kernels never share one. One worker starts such kernels one at a time (``subprocess.run`` and nbclient block).

The tests' JupyterLab servers keep TCP unless they load the students' view (``jupyter/etudiant``, whose
``jupyter_server_config.py`` puts the students' kernels on Unix sockets too, for the same reason).

- :func:`config` for in-process clients (``NotebookClient(config=…)``, nbgrader's API);
- :data:`ARGS` for the command line of ``jupyter nbconvert --execute`` and ``nbgrader autograde``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
_DIR = tempfile.mkdtemp(prefix=f"lmk-{_WORKER}-", dir="/tmp" if os.path.isdir("/tmp") else None)
atexit.register(shutil.rmtree, _DIR, True)
PREFIX = os.path.join(_DIR, "k")
ARGS = ["--KernelManager.transport=ipc", f"--KernelManager.ip={PREFIX}"]


def config():
    """A traitlets configuration for IPC kernels in this worker's folder (merge it into another one)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": PREFIX}})
