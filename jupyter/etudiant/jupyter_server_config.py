"""A student's JupyterLab: what it writes is private (umask 077), and its kernels talk over Unix sockets in the
user's own Jupyter runtime folder, not over TCP.

jupyter_client picks a TCP kernel's five ports by binding port 0 and closing the socket; the kernel binds them a
moment later. Anything starting meanwhile — the student's embedded lab taking its ports, another kernel — can take
one of them, and the kernel dies at start (seen once in ten runs on a JupyterHub). Unix sockets have no such race,
and are private to the user (the runtime folder is 0700). Loaded by JupyterLab from JUPYTER_CONFIG_PATH (make lab)
or from the image's /etc/jupyter (deploy/Dockerfile).
"""

import os

from jupyter_core.paths import jupyter_runtime_dir

c = get_config()  # noqa: F821 - given by Jupyter when it loads this file
os.umask(0o077)  # what the server and its kernels write (notebooks, quiz answers, the lab's state) is the student's alone
_runtime = jupyter_runtime_dir()
os.makedirs(_runtime, mode=0o700, exist_ok=True)
c.KernelManager.transport = "ipc"
c.KernelManager.ip = os.path.join(_runtime, "k")  # jupyter_client appends "-<n>" to each socket's name
