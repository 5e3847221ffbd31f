"""Shared fixtures: a network guard, an isolated configuration, a DNS engine and a running lab."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
from pathlib import Path

import pytest

# ---------------------------------------------------------------------------
# No traffic beyond loopback: any connect/sendto to another address fails the test.
# ---------------------------------------------------------------------------
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


class NetworkGuardError(RuntimeError):
    """A test tried to reach an address outside loopback."""


def _check_address(sock: socket.socket, address) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    host = address[0] if isinstance(address, tuple) else address
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raise NetworkGuardError(f"tests may only use numeric loopback addresses, not {host!r}") from None
    if not ip.is_loopback and not (ip.version == 6 and ip.ipv4_mapped and ip.ipv4_mapped.is_loopback):
        raise NetworkGuardError(f"a test tried to reach {host}: only loopback is allowed")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _real_connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    _check_address(self, args[-1])
    return _real_sendto(self, data, *args)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]


# ---------------------------------------------------------------------------
# Configuration isolated from the user's files and environment.
# ---------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def isolated_config(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith("LABMAIL_") or key == "COURSE_LANG":
            monkeypatch.delenv(key)
    monkeypatch.setenv("LABMAIL_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("LABMAIL_SYSTEM_CONFIG", str(home / "system.toml"))
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(home / "state"))
    from labmail import i18n

    i18n.set_language(None)
    yield home
    i18n.set_language(None)


# ---------------------------------------------------------------------------
# The DNS engine on a fresh world (no process, no socket).
# ---------------------------------------------------------------------------
def _world(path: Path, students: list[str]) -> Path:
    """A state folder with these students (RSA keys and scrypt hashes are the slow part: done once, then copied)."""
    from labmail.lab.server import Lab

    lab = Lab(path)
    lab.open("labmail.cloud", "mailcow.labmail.cloud")
    lab.provision(students)
    return path


@pytest.fixture(scope="session")
def world_lab_template(tmp_path_factory):
    """A state folder with students alice and bob, built once per session."""
    return _world(tmp_path_factory.mktemp("world-lab-template") / "state", ["alice", "bob"])


@pytest.fixture
def world_lab(tmp_path, world_lab_template):
    """A state folder of its own with students alice and bob (zones, keys): a copy of the session's template."""
    from labmail.lab.server import Lab

    shutil.copytree(world_lab_template, tmp_path / "state")
    lab = Lab(tmp_path / "state")
    lab.open("labmail.cloud", "mailcow.labmail.cloud")
    return lab


@pytest.fixture
def engine(world_lab):
    """The lab's resolver: every zone, recursion available, no AA."""
    return world_lab.engine("resolver")


@pytest.fixture
def registry(world_lab):
    """ns1.labmail.cloud: root, TLDs, labmail.cloud (delegating the students' zones), providers."""
    return world_lab.engine("registry")


@pytest.fixture
def students(world_lab):
    """dns.labmail.cloud: the students' zones; the only server that takes UPDATE and AXFR."""
    return world_lab.engine("students")


@pytest.fixture(scope="session")
def world_template(tmp_path_factory):
    """A world created once (key generation is the slow part); copied for each lab that needs one."""
    return _world(tmp_path_factory.mktemp("template") / "state", ["jean-emile", "milou"])


# ---------------------------------------------------------------------------
# A running lab process (one per session), with the student jean-emile.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def running_lab(tmp_path_factory, world_template):
    from labmail import config, lab

    base = tmp_path_factory.mktemp("runlab")
    state = base / "state"
    shutil.copytree(world_template, state)
    saved = {k: os.environ.get(k) for k in ("LABMAIL_STATE_DIR", "LABMAIL_CONFIG", "LABMAIL_PRENOM")}
    os.environ.update({"LABMAIL_STATE_DIR": str(state), "LABMAIL_CONFIG": str(base / "config.toml"),
                       "LABMAIL_PRENOM": "jean-emile"})
    cfg = config.load()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    status = lab.start(cfg)
    yield cfg, status
    lab.stop(cfg)


@pytest.fixture
def lab_env(running_lab, monkeypatch):
    """Point the configuration at the session's running lab (student jean-emile)."""
    cfg, status = running_lab
    monkeypatch.setenv("LABMAIL_STATE_DIR", str(cfg.state_dir))
    monkeypatch.setenv("LABMAIL_PRENOM", "jean-emile")
    return cfg, status


#: The longest modules start first, one on each worker, so that two workers (make test: pytest -n 2 --dist loadscope
#: --no-loadscope-reorder: xdist would otherwise put the modules with the most tests first and the one-test browser
#: circuit last) finish together. xdist hands a worker its next module as soon as two tests or fewer are left on
#: it: the circuit, one test, takes the next module at once — a short one (the class lab) rather than a long one.
#: Measured with --durations=0: pipeline ≈ 135 s, circuit ≈ 145 s, live tier ≈ 72 s, JupyterHub ≈ 70 s,
#: browser ≈ 53 s, notebooks ≈ 40 s, class lab ≈ 36 s; the other modules ≈ 150 s together.
_SLOW_FIRST = ("test_grading_pipeline.py", "test_grading_circuit.py", "test_class_lab.py", "test_live_tier.py",
               "test_jupyterhub.py", "test_browser.py", "test_notebooks.py", "test_real_clients.py", "test_security.py")


def pytest_collection_modifyitems(config, items):
    """Slow modules first (see _SLOW_FIRST). Tests marked ``tools`` need Debian's dig/nsupdate/named: in CI they
    must run, elsewhere they may skip."""
    items.sort(key=lambda item: next((i for i, name in enumerate(_SLOW_FIRST) if item.path.name == name), len(_SLOW_FIRST)))
    missing = [t for t in ("dig", "nsupdate", "named", "named-checkzone", "swaks", "mbsync", "msmtp", "thunderbird",
                           "xvfb-run", "certutil") if shutil.which(t) is None
               and not Path(f"/usr/sbin/{t}").exists()]
    if not missing:
        return
    if os.environ.get("CI"):
        return  # let them fail loudly: CI installs the tools (.ci/run → make test)
    skip = pytest.mark.skip(reason=f"missing {', '.join(missing)}: run 'make test' as root to install them")
    for item in items:
        if "tools" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def dns_thread(world_lab):
    """The lab's resolver engine served on a loopback UDP/TCP port from a background thread.

    Yields ``(host, port)``. Zones added to ``world_lab.zones`` are visible at once.
    """
    from labmail.lab.dnsserver import ThreadedDNS

    with ThreadedDNS(world_lab.engine("resolver")) as address:
        yield address


def pytest_sessionfinish(session):
    """Under pytest-xdist, each worker hands its fuzz count to the controller (summed in pytest_testnodedown)."""
    from fuzzing import CASES

    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fuzz_cases"] = CASES["total"]


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: unknown (and unused) under -p no:xdist
def pytest_testnodedown(node, error):
    from fuzzing import CASES

    CASES["total"] += getattr(node, "workeroutput", {}).get("fuzz_cases", 0)


def pytest_terminal_summary(terminalreporter):
    """How many fuzz cases ran (make fuzz reports it against its target)."""
    from fuzzing import CASES

    if CASES["total"]:
        terminalreporter.write_line(f"fuzz cases run: {CASES['total']:,}")
