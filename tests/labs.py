"""Private labs for test modules that must not share the session's lab (lockouts, SIGKILL, a class of students)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path


@contextlib.contextmanager
def private_lab(tmp_path_factory, world_template, name: str, *, addresses=(), students=None, prenom="jean-emile",
                listen=None):
    """Start a lab on a copy of the session's world (on ``listen``, else loopback); create ``addresses`` with
    generated passwords.

    Yields (config, {address: password}); the lab is stopped afterwards, whatever happened.
    """
    from labmail import config, lab

    base = tmp_path_factory.mktemp(name)
    shutil.copytree(world_template, base / "state")
    cfg = config.Config(prenom=prenom, state_dir=base / "state")
    lab.start(cfg, listen=listen)
    try:
        if students:
            lab.provision(cfg, students=list(students))
        # never a leading "-": command-line clients (swaks) would read the password as an option (1 run in 64 failed)
        passwords = {address: "p" + secrets.token_urlsafe(12) for address in addresses}
        for address, password in passwords.items():
            lab.add_mailbox(address, password, config=cfg)
        yield cfg, passwords
    finally:
        lab.stop(cfg)


def use_lab(monkeypatch, cfg, prenom: str = "jean-emile") -> None:
    """Point labmail's configuration (and the notebooks' kernels) at ``cfg``'s lab for one test."""
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(cfg.state_dir))
    monkeypatch.setenv("LABMAIL_PRENOM", prenom)


def listening_addresses(pid: int) -> set[str]:
    """The local addresses (as /proc/net writes them: hex, little-endian) of every listening TCP socket and bound UDP
    socket of process ``pid``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, listen in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == listen:
                local = fields[1].split(":")[0]
                found.add(local)
    return found
