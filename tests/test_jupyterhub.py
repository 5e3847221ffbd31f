"""A class on a real JupyterHub (issue 19, part 1): the hub of deploy/jupyterhub_config.py — one system account per
student, each server run as its student by LocalProcessSpawner — with the built-in test authenticator and
configurable-http-proxy on loopback. Three students log in through the hub's API, start their servers and run the
course's notebooks 00 and 04 in a kernel of their server, each on their own embedded lab; isolation is asserted at
the operating system's level; the teacher's server has nbgrader's Formgrader, the students' do not.

The hub's Python is .venv-hub (made by ``make test`` from the system's python3: the students' accounts cannot reach
an interpreter under /root). Needs root and the accounts lm-eleve1..3 and lm-prof (scripts/system-deps.sh);
mandatory in CI, skipped elsewhere with the reason.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB_BIN = ROOT / ".venv-hub" / "bin"
PROXY = ROOT / "tests" / "js" / "node_modules" / ".bin" / "configurable-http-proxy"
STUDENTS = ["lm-eleve1", "lm-eleve2", "lm-eleve3"]
TEACHER = "lm-prof"

pytestmark = [pytest.mark.tools, pytest.mark.notebook]


def _require() -> None:
    lacking = [str(p) for p in (HUB_BIN / "jupyterhub", PROXY) if not p.exists()]
    lacking += [f"account {u}" for u in [*STUDENTS, TEACHER] if not _exists(u)]
    if os.geteuid() != 0:
        lacking.append("root (the hub runs each server as its student)")
    if lacking:
        message = "JupyterHub test: missing " + ", ".join(lacking) + " (make test, as root, sets them up)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
        return True
    except KeyError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(url: str, token: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    request = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
        return answer.status, (json.loads(text) if text else None)


def _stop_accounts() -> None:
    """Whatever the students' servers and labs left (their labs run as them, in sessions of their own)."""
    for user in [*STUDENTS, TEACHER]:
        subprocess.run(["pkill", "-KILL", "-u", user], check=False)


@pytest.fixture(scope="module")
def hub():
    _require()
    base = Path(tempfile.mkdtemp(prefix="labmail-hub-"))
    port, hub_port, api_port = _free_port(), _free_port(), _free_port()
    token, password = secrets.token_hex(32), secrets.token_urlsafe(16)
    for user in [*STUDENTS, TEACHER]:  # every student starts the course from nothing
        home = Path(pwd.getpwnam(user).pw_dir)
        for leftover in (".local/share/labmail", ".config/labmail", "essai-prive.txt"):
            shutil.rmtree(home / leftover, ignore_errors=True) if (home / leftover).is_dir() else (home / leftover).unlink(missing_ok=True)
        os.chmod(home, 0o755)  # as Debian makes homes: the hub's pre-spawn hook must close them
    (base / "jupyterhub_config.py").write_text(
        f"exec(open({str(ROOT / 'deploy' / 'jupyterhub_config.py')!r}).read())  # the shipped configuration, then the test bed's\n"
        f"c.JupyterHub.ip = '127.0.0.1'\nc.JupyterHub.port = {port}\n"
        f"c.JupyterHub.hub_ip = '127.0.0.1'\nc.JupyterHub.hub_port = {hub_port}\n"
        f"c.ConfigurableHTTPProxy.command = [{str(PROXY)!r}]\n"
        f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{api_port}'\n"
        "c.JupyterHub.authenticator_class = 'dummy'\n"
        f"c.DummyAuthenticator.password = {password!r}\n"
        f"c.Authenticator.allowed_users = {set([*STUDENTS, TEACHER])!r}\n"
        f"c.JupyterHub.db_url = 'sqlite:///{base}/hub.sqlite'\n"
        f"c.JupyterHub.cookie_secret_file = '{base}/cookie_secret'\n"
        f"c.JupyterHub.pid_file = '{base}/hub.pid'\n"
        f"c.JupyterHub.services = [{{'name': 'test', 'api_token': {token!r}}}]\n"
        "c.JupyterHub.load_roles = [{'name': 'test-admin', 'services': ['test'], 'scopes': "
        "['admin:users', 'admin:servers', 'tokens', 'access:servers', 'list:users', 'read:users']}]\n"
        "c.Spawner.start_timeout = 120\nc.Spawner.http_timeout = 120\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("LABMAIL_", "JUPYTER", "PYTHONPATH"))},
           "LABMAIL_HOME": str(ROOT), "LABMAIL_TEACHERS": TEACHER,
           "PATH": f"{HUB_BIN}:{PROXY.parent}:{os.environ.get('PATH', '')}"}
    log = open(base / "hub.log", "wb")
    process = subprocess.Popen([str(HUB_BIN / "jupyterhub"), "-f", str(base / "jupyterhub_config.py")], cwd=base,
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _call(f"{url}/hub/api/", token)
                break
            except (OSError, urllib.error.URLError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterHub did not start:\n" + (base / "hub.log").read_text(errors="replace")[-3000:])
                time.sleep(0.3)
        yield url, token, base
    finally:
        for user in [*STUDENTS, TEACHER]:
            try:
                _call(f"{url}/hub/api/users/{user}/server", token, "DELETE")
            except Exception:
                pass
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
        _stop_accounts()
        shutil.rmtree(base, ignore_errors=True)


def _start(url: str, token: str, user: str) -> str:
    """Log ``user`` in (a token of theirs, from the hub's API), start their server, wait until it is ready."""
    try:
        _call(f"{url}/hub/api/users/{user}/server", token, "POST")
    except urllib.error.HTTPError as exc:
        if exc.code != 400:  # 400: already running (an earlier test of the module started it)
            raise
    deadline = time.monotonic() + 120
    while True:
        _status, model = _call(f"{url}/hub/api/users/{user}", token)
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            break
        assert time.monotonic() < deadline, f"{user}'s server did not start: {model}"
        time.sleep(0.5)
    _status, answer = _call(f"{url}/hub/api/users/{user}/tokens", token, "POST", {"note": "test", "expires_in": 3600})
    return answer["token"]


_OPEN: list["_Kernel"] = []


@pytest.fixture(autouse=True)
def _close_kernels():
    """Each test's websockets are closed when it ends (left to the garbage collector, tornado would warn in whichever
    test of this worker runs then, and fail it)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


class _Kernel:
    """A kernel of a user's server, reached through the hub's proxy over its websocket (Jupyter's protocol)."""

    def __init__(self, url: str, user: str, token: str) -> None:
        from tornado.httpclient import HTTPRequest
        from tornado.ioloop import IOLoop
        from tornado.websocket import websocket_connect

        self.loop = IOLoop.current()
        _status, kernel = _call(f"{url}/user/{user}/api/kernels", token, "POST", {"name": "python3"})
        self.id, self.session = kernel["id"], uuid.uuid4().hex
        ws_url = f"{url.replace('http', 'ws')}/user/{user}/api/kernels/{self.id}/channels?session_id={self.session}"
        self.ws = self.loop.run_sync(lambda: websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"})))
        _OPEN.append(self)

    def close(self) -> None:
        """Close the websocket (left to the garbage collector, tornado warns in whichever test runs then)."""
        self.ws.close()

    def run(self, code: str, timeout: float = 120) -> tuple[str, str]:
        """Execute ``code``; (status, text of the outputs and errors)."""
        msg_id = uuid.uuid4().hex
        self.ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": self.session, "msg_type": "execute_request",
                       "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        # Done when both the reply (shell channel) and the kernel's "idle" (IOPub, after every output of the request)
        # are in: the two channels are not ordered with each other, and an output can arrive after the reply (a CI run
        # saw a cell's printed lines missing when the reply alone ended the wait).
        texts, deadline, reply, idle = [], time.monotonic() + timeout, None, False
        while reply is None or not idle:
            raw = self.loop.run_sync(self.ws.read_message, timeout=max(1.0, deadline - time.monotonic()))
            assert raw is not None, "the kernel's websocket closed"
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                texts.append(content["text"])
            elif kind == "error":
                texts.append(f"{content['ename']}: {content['evalue']}")
            elif kind in ("execute_result", "display_data"):
                texts.append(content.get("data", {}).get("text/plain", ""))
            elif kind == "status" and content.get("execution_state") == "idle":
                idle = True
            elif kind == "execute_reply":
                reply = content["status"]
        return reply, "".join(texts)


def _run_notebook(kernel: _Kernel, name: str) -> None:
    nb = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            status, text = kernel.run(cell.source)
            assert status == "ok", f"{name}: {cell.source[:80]!r} → {text[-600:]}"


def test_three_students_do_the_course_on_their_own_labs_isolated(hub):
    url, token, _base = hub
    kernels = {}
    for user in STUDENTS:
        kernels[user] = _Kernel(url, user, _start(url, token, user))
    for user, kernel in kernels.items():
        _run_notebook(kernel, "00-demarrage")
        _run_notebook(kernel, "04-dns-mx")
    first, second = STUDENTS[0], STUDENTS[1]
    other_home = pwd.getpwnam(second).pw_dir
    status, text = kernels[first].run(
        "import os, pathlib, stat\n"
        "from labmail import config, lab\n"
        "print(os.getuid() == os.stat(os.path.expanduser('~')).st_uid, oct(os.stat(os.path.expanduser('~')).st_mode & 0o777))\n"
        "print(lab.status().running, config.load().domain)\n"
        "pathlib.Path('essai-prive.txt').write_text('à moi')\n"
        "print(oct(os.stat('essai-prive.txt').st_mode & 0o777))\n"
        "import shutil; print(shutil.which('labmail'))\n"
        f"for target in ({other_home!r}, {other_home + '/.local/share/labmail/lab/keys'!r},"
        f" {other_home + '/.local/share/labmail/lab/run.json'!r}):\n"
        "    try:\n"
        "        os.listdir(target) if os.path.isdir(target) else open(target).read()\n"
        "        print('LU', target)\n"
        "    except PermissionError:\n"
        "        print('refusé', target)\n")
    assert status == "ok", text
    lines = text.splitlines()
    assert lines[0] == "True 0o700"  # the hub closed the student's home (Debian makes it 0755)
    assert lines[1] == "True jean-emile.labmail.cloud"  # their own lab, started by notebook 00, running
    assert lines[2] == "0o600"  # what the student's kernel writes is theirs alone (umask 077)
    assert lines[3] == str(HUB_BIN / "labmail")  # labmail on the PATH
    assert lines[4:] and all(line.startswith("refusé") for line in lines[4:]), lines  # nothing of another student's
    for user in STUDENTS:  # no student server offers the teacher's tools
        student_token = _call(f"{url}/hub/api/users/{user}/tokens", token, "POST", {"note": "t"})[1]["token"]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _call(f"{url}/user/{user}/formgrader", student_token)


def test_the_teachers_server_has_nbgraders_formgrader(hub):
    url, token, _base = hub
    teacher_token = _start(url, token, TEACHER)
    status, _answer = _call(f"{url}/user/{TEACHER}/formgrader/api/assignments", teacher_token)
    assert status == 200


def _shell(kernel: _Kernel, *commands: str) -> str:
    """Run shell commands in a kernel of the user's server (as a JupyterLab terminal would), failing on an error."""
    code = ("import subprocess\n" + "".join(
        f"_r = subprocess.run({c!r}, shell=True, capture_output=True, text=True)\n"
        "print(_r.stdout[-2000:], _r.stderr[-2000:])\n"
        f"assert _r.returncode == 0, {c!r}\n" for c in commands))
    status, text = kernel.run(code, timeout=300)
    assert status == "ok", text[-3000:]
    return text


def test_the_nbgrader_circuit_through_the_hub(hub):
    """The teacher releases step 04 over nbgrader's exchange, two students fetch it in their servers — one answers
    (the reference solution), one hands it in untouched — both submit; the teacher collects and autogrades: the
    points follow the answers. Every command runs in a kernel of the user's own server, as that user."""
    url, token, base = hub
    os.chmod(base, 0o755)
    exchange = base / "exchange"
    exchange.mkdir()
    os.chmod(exchange, 0o777)  # nbgrader's exchange: everyone writes, nbgrader sets the modes inside
    opts = f"--Exchange.root={exchange} --CourseDirectory.course_id=labmail"
    teacher = _Kernel(url, TEACHER, _start(url, token, TEACHER))
    _run_notebook(teacher, "00-demarrage")  # the teacher's own lab: autograde re-executes the notebooks there
    _shell(teacher, f"rm -rf ~/cours && mkdir -p ~/cours/notebooks && cp {ROOT}/nbgrader_config.py ~/cours/ && "
                    f"cp -r {ROOT}/notebooks/04-dns-mx ~/cours/notebooks/",
           f"cd ~/cours && nbgrader generate_assignment 04-dns-mx --force && nbgrader release_assignment 04-dns-mx {opts}")
    answered, untouched = STUDENTS[0], STUDENTS[1]
    for user in (answered, untouched):
        kernel = _Kernel(url, user, _start(url, token, user))
        commands = [f"cd ~ && rm -rf 04-dns-mx && nbgrader fetch_assignment 04-dns-mx {opts}"]
        if user == answered:  # the reference solution stands for the student's work
            commands.append(f"cp {ROOT}/notebooks/04-dns-mx/04-dns-mx.ipynb ~/04-dns-mx/04-dns-mx.ipynb")
        commands.append(f"cd ~ && nbgrader submit 04-dns-mx {opts}")
        _shell(kernel, *commands)
    text = _shell(teacher, f"cd ~/cours && nbgrader collect 04-dns-mx {opts} && nbgrader autograde 04-dns-mx --force",
                  "cd ~/cours && python -c \"from nbgrader.api import Gradebook\n"
                  "with Gradebook('sqlite:///gradebook.db') as gb:\n"
                  f"    for s in ({answered!r}, {untouched!r}):\n"
                  "        sub = gb.find_submission('04-dns-mx', s)\n"
                  "        print('SCORE', s, sub.score, sub.max_score)\"")
    scores = {line.split()[1]: (float(line.split()[2]), float(line.split()[3]))
              for line in text.splitlines() if line.strip().startswith("SCORE")}
    source = nbformat.read(ROOT / "notebooks" / "04-dns-mx" / "04-dns-mx.ipynb", as_version=4)
    graded = [c.metadata["nbgrader"] for c in source.cells if c.metadata.get("nbgrader", {}).get("points")]
    auto = sum(m["points"] for m in graded if m.get("grade"))
    total = auto + sum(m["points"] for m in graded if m.get("task"))
    assert scores[answered] == (auto, total), scores  # every automatic point; the written answer waits for a human
    assert scores[untouched] == (0, total), scores
