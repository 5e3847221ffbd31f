"""JupyterHub on one school machine for a labmail class (the Kubernetes version is deploy/z2jh/values.yaml).

One system account per student (PAM: the school's logins), each server run as its student by LocalProcessSpawner,
in the students' view of the course (jupyter/etudiant: French, nbgrader's teacher tools hidden, kernels on Unix
sockets, files private). Install labmail in /opt/labmail (``make install``) and run as root:
``jupyterhub -f /opt/labmail/deploy/jupyterhub_config.py``. tests/test_jupyterhub.py runs this very file (with test
logins and ports on loopback).
"""

import os
import sys
from pathlib import Path

c = get_config()  # noqa: F821 - given by JupyterHub when it loads this file

LABMAIL = Path(os.environ.get("LABMAIL_HOME", "/opt/labmail"))
BIN = Path(sys.executable).parent  # the environment labmail is installed in

c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.environment = {
    "JUPYTER_CONFIG_PATH": str(LABMAIL / "jupyter" / "etudiant"),  # the students' view (and umask, IPC kernels)
    "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",  # labmail in the terminals
}
# The teacher: nbgrader's Formgrader and course list (jupyter/formateur re-enables them).
TEACHERS = {name for name in os.environ.get("LABMAIL_TEACHERS", "formateur").split(",") if name}
c.Authenticator.admin_users = TEACHERS


def _pre_spawn(spawner):
    """A student's home is theirs alone (Debian makes homes 0755: others could read notebooks and quiz answers)."""
    import pwd

    home = Path(pwd.getpwnam(spawner.user.name).pw_dir)
    if home.is_dir():
        os.chmod(home, 0o700)
    if spawner.user.name in TEACHERS:
        spawner.environment = {**spawner.environment,
                               "JUPYTER_CONFIG_PATH": f"{LABMAIL / 'jupyter' / 'formateur'}{os.pathsep}"
                                                      f"{LABMAIL / 'jupyter' / 'etudiant'}"}


c.Spawner.pre_spawn_hook = _pre_spawn
