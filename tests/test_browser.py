"""The course's widgets in a real browser: JupyterLab driven by Debian's Chromium (Selenium + chromedriver).

One JupyterLab server for the module, on 127.0.0.1, serving a temporary copy of ``notebooks/`` (the committed
notebooks are never touched), with Jupyter's and labmail's configuration isolated under a temporary folder and
the kernels pointed at the session's running lab. Nothing is downloaded: the browser and its driver are the Debian
packages ``chromium`` and ``chromium-driver`` (``scripts/system-deps.sh`` installs them as root); without them the
tests are skipped, except in CI (``CI`` set) where they must run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
NB00 = "00-demarrage/00-demarrage.ipynb"
NB08 = "08-en-tetes/08-en-tetes.ipynb"
HEADERS = (
    "Authentication-Results: mx.google.com; spf=pass smtp.mailfrom=example.org; dkim=fail header.d=example.org; "
    "dmarc=fail header.from=example.org\n"
    "From: a@example.org\n"
    "To: b@gmail.test\n"
    "Subject: test\n"
)
WAIT = 30  # seconds, for anything that waits on the kernel (start, imports, a click's round trip)


def _missing() -> list[str]:
    missing = [f"{path} (Debian package {pkg})" for path, pkg in ((CHROMIUM, "chromium"),
                                                                  (CHROMEDRIVER, "chromium-driver"))
               if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    return missing


def _require_browser() -> None:
    """Skip without the browser tools, as the ``tools`` tests do; in CI they are mandatory (see conftest)."""
    missing = _missing()
    if not missing:
        return
    message = f"missing {', '.join(missing)}: run 'make test' as root to install them"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {message}", pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET"):
    request = urllib.request.Request(f"{base}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
    return json.loads(body) if body else None


def _isolated_env(tmp: Path, cfg) -> dict[str, str]:
    """The server's (hence the kernels') environment: the running lab's state, a new empty labmail config, no
    LABMAIL_PRENOM (the identity form decides), and Jupyter/IPython/matplotlib dirs of their own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABMAIL_", "JUPYTER", "IPYTHON", "XDG_")) and k not in ("COURSE_LANG", "MPLCONFIGDIR")}
    dirs = {name: tmp / name for name in ("home", "xdg-config", "xdg-data", "xdg-cache", "jupyter-config",
                                          "jupyter-data", "jupyter-runtime", "ipython", "lab-settings",
                                          "lab-workspaces", "mpl")}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    config_file = tmp / "labmail-config.toml"
    config_file.write_text("")
    env.update({
        "HOME": str(dirs["home"]),
        "XDG_CONFIG_HOME": str(dirs["xdg-config"]),
        "XDG_DATA_HOME": str(dirs["xdg-data"]),
        "XDG_CACHE_HOME": str(dirs["xdg-cache"]),
        "JUPYTER_CONFIG_DIR": str(dirs["jupyter-config"]),
        "JUPYTER_DATA_DIR": str(dirs["jupyter-data"]),  # the venv's kernelspec (sys.prefix/share/jupyter) stays
        "JUPYTER_RUNTIME_DIR": str(dirs["jupyter-runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["lab-settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["lab-workspaces"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "MPLCONFIGDIR": str(dirs["mpl"]),
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "LABMAIL_STATE_DIR": str(cfg.state_dir),
        "LABMAIL_CONFIG": str(config_file),
        "LABMAIL_SYSTEM_CONFIG": str(tmp / "no-system-config.toml"),
    })
    settings = dirs["lab-settings"] / "@jupyterlab"
    # No news/update toast (and no request to the Internet); every cell in the DOM (no windowing).
    for rel, value in (("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
                       ("notebook-extension/tracker", {"windowingMode": "none"})):
        (settings / f"{rel}.jupyterlab-settings").parent.mkdir(parents=True, exist_ok=True)
        (settings / f"{rel}.jupyterlab-settings").write_text(json.dumps(value))
    return env


def _stop_server(server: subprocess.Popen, base: str, token: str) -> None:
    """Stop JupyterLab and every process it started (kernels run in sessions of their own)."""
    try:
        import psutil

        children = psutil.Process(server.pid).children(recursive=True)
    except Exception:  # psutil missing, or the server already gone
        children = []
    if server.poll() is None:
        with contextlib.suppress(Exception):
            for kernel in _api(base, token, "/api/kernels"):
                _api(base, token, f"/api/kernels/{kernel['id']}", method="DELETE")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()


class Session:
    """The running JupyterLab, its browser, and the files the kernels write."""

    def __init__(self, driver, base: str, token: str, root: Path, config_file: Path, server_log: Path):
        self.driver, self.base, self.token = driver, base, token
        self.root, self.config_file, self.server_log = root, config_file, server_log

    def open(self, notebook: str):
        """Open a notebook in a fresh workspace; return its panel once its kernel is idle."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.get(f"{self.base}/lab/tree/{notebook}?reset&token={self.token}")

        def ready(driver):
            self.dismiss_dialogs()
            panels = [p for p in driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel") if p.is_displayed()]
            if not panels:
                return False
            # The toolbar names the kernel and the status bar says it is idle ("Python 3 (ipykernel) | Idle").
            names = [e.text for e in panels[0].find_elements(By.CSS_SELECTOR, ".jp-Toolbar-kernelName")]
            status = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".jp-StatusBar-TextItem")
                      if (e.get_attribute("title") or "").startswith("Change kernel")]
            if names and "ipykernel" in names[0] and status and status[0].endswith("| Idle"):
                return panels[0]
            return False

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            ready, f"{notebook}: no notebook with an idle kernel")

    def dismiss_dialogs(self) -> None:
        """Accept any JupyterLab dialog (e.g. kernel selection) that would block the page."""
        from selenium.webdriver.common.by import By

        for button in self.driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):
            with contextlib.suppress(Exception):
                button.click()

    def code_cell(self, panel, text: str):
        """The code cell whose source contains ``text`` (waiting for the editors to be rendered)."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def found(driver):
            try:
                for cell in panel.find_elements(By.CSS_SELECTOR, ".jp-CodeCell"):
                    for source in cell.find_elements(By.CSS_SELECTOR, ".jp-InputArea-editor .cm-content"):
                        if text in driver.execute_script("return arguments[0].innerText", source):
                            return cell
            except StaleElementReferenceException:
                pass
            return False

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(found, f"no code cell contains {text!r}")

    def run(self, cell) -> None:
        """Click into the cell's editor and press Shift+Enter (JupyterLab's "Run cell and select next")."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        editor = cell.find_element(By.CSS_SELECTOR, ".jp-InputArea-editor .cm-content")
        editor.click()
        ActionChains(self.driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()

    def wait_for(self, scope, css: str, text: str = "", timeout: float = WAIT):
        """The first displayed element under ``scope`` matching ``css`` whose text contains ``text``."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def found(_driver):
            try:
                for element in scope.find_elements(By.CSS_SELECTOR, css):
                    if element.is_displayed() and text in element.text:
                        return element
            except StaleElementReferenceException:
                pass
            return False

        return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(
            found, f"no {css!r} showing {text!r} after {timeout} s")

    def button(self, scope, label: str):
        return self.wait_for(scope, "button.jupyter-button", label)

    @contextlib.contextmanager
    def evidence(self, folder: Path, name: str):
        """On failure, keep a screenshot, the page's HTML and the server log in ``folder`` (pytest's tmp dir)."""
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                self.driver.save_screenshot(str(folder / f"{name}.png"))
                (folder / f"{name}.html").write_text(self.driver.page_source)
            print(f"browser evidence: {folder / name}.png, {folder / name}.html; JupyterLab log: {self.server_log}")
            with contextlib.suppress(Exception):
                print(self.server_log.read_text()[-4000:])
            raise


@pytest.fixture(scope="module")
def jupyterlab(running_lab, tmp_path_factory):
    """JupyterLab on a free loopback port with a random token, on a copy of notebooks/, and a headless Chromium."""
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    cfg, _status = running_lab
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    env = _isolated_env(tmp, cfg)
    port, token = _free_port(), secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]  # nothing asks PyPI
    if os.getuid() == 0:
        command.append("--allow-root")
    server_log = tmp / "jupyterlab.log"
    with open(server_log, "wb") as log:
        server = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    driver = None
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited ({server.returncode}):\n{server_log.read_text()[-3000:]}")
            try:
                _api(base, token, "/api/status")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on {base}:\n{server_log.read_text()[-3000:]}")
                time.sleep(0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,1000", "--no-first-run",
                     "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # the browser stays on loopback
            options.add_argument(flag)
        service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp / "chromedriver.log"),
                          env=env)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(WAIT)
        yield Session(driver, base, token, root, Path(env["LABMAIL_CONFIG"]), server_log)
    finally:
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()
        _stop_server(server, base, token)


def test_identity_form_in_notebook_00(jupyterlab, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    session = jupyterlab
    assert session.config_file.read_text() == ""  # a new, empty configuration: the form decides
    with session.evidence(tmp_path, "notebook-00"):
        panel = session.open(NB00)
        cell = session.code_cell(panel, "formulaire = identity_form()")
        session.run(cell)
        output = session.wait_for(cell, ".jp-OutputArea-output")
        field = session.wait_for(output, '.widget-text input[placeholder="Jean-Émile"]')
        label = output.find_element(By.CSS_SELECTOR, ".widget-text .widget-label")
        assert label.text == "Prénom"
        save = session.button(output, "Enregistrer")

        field.click()
        field.send_keys("jean.pierre")  # refused: a dot, with the French explanation, as soon as it is typed
        session.wait_for(output, ".labmail-error", "« jean.pierre » contient un point")

        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys("Jean-Émile")
        session.wait_for(output, ".widget-html-content", "Votre domaine sera : jean-emile.labmail.cloud")
        assert not output.find_elements(By.CSS_SELECTOR, ".labmail-error")
        save.click()
        session.wait_for(output, ".labmail-ok", "Configuration enregistrée : votre domaine est jean-emile.labmail.cloud")
    assert 'prenom = "jean-emile"' in session.config_file.read_text()


def test_header_analyzer_in_notebook_08(jupyterlab, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    session = jupyterlab
    with session.evidence(tmp_path, "notebook-08"):
        panel = session.open(NB08)
        session.code_cell(panel, "analyseur = header_analyzer(")  # the notebook's own analyzer cell is there
        # Rather than run the notebook (which sends mail on the lab), add a cell at the top and run only it.
        first = panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")[0]
        first.find_element(By.CSS_SELECTOR, ".jp-InputPrompt").click()  # select it, command mode
        count = len(panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        ActionChains(session.driver).send_keys(Keys.ESCAPE, "a").perform()  # command mode: insert a cell above
        WebDriverWait(session.driver, WAIT).until(
            lambda _d: len(panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")) == count + 1,
            "the new cell was not inserted")
        cells = panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")
        assert "jp-CodeCell" in cells[0].get_attribute("class")
        editor = cells[0].find_element(By.CSS_SELECTOR, ".cm-content")
        editor.click()
        editor.send_keys("from labmail.widgets import header_analyzer\nheader_analyzer()")
        cell = session.code_cell(panel, "from labmail.widgets import header_analyzer")
        source = session.driver.execute_script("return arguments[0].innerText",
                                               cell.find_element(By.CSS_SELECTOR, ".cm-content"))
        assert source.strip() == "from labmail.widgets import header_analyzer\nheader_analyzer()"
        session.run(cell)

        output = session.wait_for(cell, ".jp-OutputArea-output")
        area = session.wait_for(output, ".widget-textarea textarea")
        assert area.get_attribute("placeholder").startswith("Collez ici les en-têtes")
        area.click()
        area.send_keys(HEADERS)
        session.button(output, "Analyser").click()
        report = session.wait_for(output, ".labmail-report", "spf=")
        text = report.text
        for field in ("spf=", "dkim=", "dmarc=", "header.from=example.org"):
            assert field in text, f"{field!r} missing from the report:\n{text}"
        table = report.find_element(By.TAG_NAME, "table")
        headings = [th.text for th in table.find_elements(By.TAG_NAME, "th")]
        assert headings[1:] == ["constat", "pourquoi", "correction", "RFC"], headings
        findings = table.find_elements(By.CSS_SELECTOR, "tr td")
        assert findings, f"no findings in the report:\n{text}"
