"""JupyterLab driven in Debian's Chromium (Selenium + chromedriver), for the tests that use the course as a student does.

:func:`jupyterlab_session` starts JupyterLab on a free loopback port with a random token, on a folder of notebooks,
with Jupyter's and labmail's configuration isolated under a temporary folder and the kernels pointed at a running lab,
and a headless Chromium; :class:`Session` opens notebooks, runs and edits cells, clicks widgets, saves. Nothing is
downloaded: the browser and its driver are the Debian packages ``chromium`` and ``chromium-driver``
(``scripts/system-deps.sh`` installs them as root); without them the tests are skipped, except in CI (``CI`` set).
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

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 30  # seconds, for anything that waits on the kernel (start, imports, a click's round trip)


def missing_tools() -> list[str]:
    missing = [f"{path} (Debian package {pkg})" for path, pkg in ((CHROMIUM, "chromium"),
                                                                  (CHROMEDRIVER, "chromium-driver"))
               if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    return missing


def require_browser() -> None:
    """Skip without the browser tools, as the ``tools`` tests do; in CI they are mandatory (see conftest)."""
    absent = missing_tools()
    if not absent:
        return
    message = f"missing {', '.join(absent)}: run 'make test' as root to install them"
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
            # The toolbar names the kernel; the server says it is idle (whatever the language of the status bar).
            names = [e.text for e in panels[0].find_elements(By.CSS_SELECTOR, ".jp-Toolbar-kernelName")]
            if not (names and "ipykernel" in names[0]):
                return False
            sessions = _api(self.base, self.token, "/api/sessions") or []
            idle = [x for x in sessions if x.get("path", "").endswith(notebook.rsplit("/", 1)[-1])
                    and (x.get("kernel") or {}).get("execution_state") == "idle"]
            return panels[0] if idle else False

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            ready, f"{notebook}: no notebook with an idle kernel")

    def settle(self, quiet: float = 1.5, timeout: float = WAIT) -> None:
        """Wait until the kernel has been idle for ``quiet`` seconds in a row. ipywidgets sends a text field's value
        while the kernel is idle and holds further updates until it is idle again, but a button's click goes at once:
        a student who types then clicks at once on a busy machine can overtake their own typing. Students are slower
        than Selenium; under load, the test lets the typed value reach the kernel before it clicks."""
        import time as _time

        from selenium.webdriver.common.by import By

        since, end = None, _time.monotonic() + timeout
        while _time.monotonic() < end:
            # the notebook toolbar's kernel indicator, as the front end sees it (in any language of the interface)
            status = [e.get_attribute("data-status") for e in
                      self.driver.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status]")
                      if e.is_displayed()]
            if status and status[0] == "idle":
                since = since or _time.monotonic()
                if _time.monotonic() - since >= quiet:
                    return
            else:
                since = None
            _time.sleep(0.1)
        raise AssertionError(f"the kernel was not idle for {quiet} s within {timeout} s")

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

    def cell_by_index(self, panel, index: int):
        """The notebook's cell number ``index`` (0-based, as in the .ipynb file)."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            lambda _d: (panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell") + [None] * (index + 1))[index],
            f"no cell {index}")

    def type_code(self, cell, text: str) -> None:
        """Replace the cell's code by ``text``, typed at the keyboard (select all, then type)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        editor = cell.find_element(By.CSS_SELECTOR, ".jp-InputArea-editor .cm-content")
        editor.click()
        ActionChains(self.driver).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).perform()
        editor.send_keys(Keys.DELETE)
        editor.send_keys(text)

    def output_text(self, cell) -> str:
        from selenium.webdriver.common.by import By

        return "\n".join(o.text for o in cell.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output"))

    def save(self, path: Path, until) -> str:
        """Save the notebook with Ctrl+S, as a student does, and wait until the file on disk satisfies ``until(text)``."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait

        ActionChains(self.driver).send_keys(Keys.ESCAPE).key_down(Keys.CONTROL).send_keys("s").key_up(Keys.CONTROL).perform()
        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            lambda _d: (lambda text: text if until(text) else False)(path.read_text(encoding="utf-8")),
            f"{path.name} was not saved as expected")

    def menu(self, command: str) -> None:
        """Click, in the menu bar, the item that runs JupyterLab's ``command`` (e.g. ``runmenu:restart-and-run-all``),
        whatever the language of the menus; then accept the confirmation dialog if one opens."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait

        for title in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
            ActionChains(self.driver).send_keys(Keys.ESCAPE).perform()  # a click on a title toggles its menu
            title.click()
            items = [i for i in self.driver.find_elements(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]')
                     if i.is_displayed()]
            if items:
                items[0].click()
                break
        else:
            raise AssertionError(f"no menu item runs {command}")
        WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(
            lambda d: [b.click() for b in d.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept")] or True)

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

@contextlib.contextmanager
def jupyterlab_session(root: Path, tmp: Path, cfg, *, extra_env: dict[str, str] | None = None,
                       wrap: list[str] | None = None):
    """JupyterLab serving ``root`` (on a free loopback port, a random token), its kernels on the lab of ``cfg``, with
    ``extra_env`` for the server and its kernels (e.g. ``JUPYTERHUB_USER``), its command prefixed by ``wrap`` if given
    (e.g. ``unshare`` to run it under another user name), and a headless Chromium: a :class:`Session`. Everything is
    stopped on exit, kernels included."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    tmp.mkdir(parents=True, exist_ok=True)
    env = _isolated_env(tmp, cfg)
    env.update(extra_env or {})
    port, token = _free_port(), secrets.token_hex(24)
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               "--LabApp.extension_manager=readonly"]  # nothing asks PyPI
    if os.getuid() == 0 and not wrap:
        command.append("--allow-root")
    command = [*(wrap or []), *command]
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


