"""The course's widgets in a real browser: JupyterLab driven by Debian's Chromium (Selenium + chromedriver).

One JupyterLab server for the module, on 127.0.0.1, serving a temporary copy of ``notebooks/`` (the committed
notebooks are never touched), with Jupyter's and labmail's configuration isolated under a temporary folder and
the kernels pointed at the session's running lab (see ``tests/jupyter_browser.py``). Without Chromium and its driver
the tests are skipped, except in CI (``CI`` set) where they must run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jupyter_browser import WAIT, jupyterlab_session

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NB00 = "00-demarrage/00-demarrage.ipynb"
NB08 = "08-en-tetes/08-en-tetes.ipynb"
HEADERS = (
    "Authentication-Results: mx.google.com; spf=pass smtp.mailfrom=example.org; dkim=fail header.d=example.org; "
    "dmarc=fail header.from=example.org\n"
    "From: a@example.org\n"
    "To: b@gmail.test\n"
    "Subject: test\n"
)


@pytest.fixture(scope="module")
def jupyterlab(running_lab, tmp_path_factory):
    """JupyterLab on a copy of notebooks/, a new empty labmail configuration (the identity form decides)."""
    cfg, _status = running_lab
    tmp = tmp_path_factory.mktemp("browser")
    root = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    with jupyterlab_session(root, tmp, cfg) as session:
        yield session


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


def _new_cell_on_top(session, panel, code: str):
    """Rather than run the notebook (which sends mail on the lab), add a cell at the top, type ``code`` and return it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

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
    editor.send_keys(code)
    cell = session.code_cell(panel, code.splitlines()[0])
    source = session.driver.execute_script("return arguments[0].innerText", cell.find_element(By.CSS_SELECTOR, ".cm-content"))
    assert source.strip() == code
    return cell


def test_header_analyzer_in_notebook_08(jupyterlab, tmp_path):
    from selenium.webdriver.common.by import By

    session = jupyterlab
    with session.evidence(tmp_path, "notebook-08"):
        panel = session.open(NB08)
        session.code_cell(panel, "analyseur = header_analyzer(")  # the notebook's own analyzer cell is there
        cell = _new_cell_on_top(session, panel, "from labmail.widgets import header_analyzer\nheader_analyzer()")
        session.run(cell)

        output = session.wait_for(cell, ".jp-OutputArea-output")
        area = session.wait_for(output, ".widget-textarea textarea")
        assert area.get_attribute("placeholder").startswith("Collez ici les en-têtes")
        area.click()
        area.send_keys(HEADERS)
        session.settle()
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


RECEIVED = ("Received: from mailcow.labmail.cloud (mailcow.labmail.cloud [203.0.113.10]) by mx.google.com with ESMTPS "
            "id x1; Tue, 1 Dec 2026 10:00:00 +0000\n"
            "Authentication-Results: mx.google.com; dkim=pass header.i=@jean-emile.labmail.cloud header.s=dkim; "
            "spf=pass smtp.mailfrom=tintin@jean-emile.labmail.cloud; dmarc=pass (p=QUARANTINE sp=QUARANTINE dis=NONE) "
            "header.from=jean-emile.labmail.cloud\n"
            "From: Tintin <tintin@jean-emile.labmail.cloud>\nTo: jean.dupont@gmail.com\nSubject: Validation finale\n\nBonjour !\n")


def test_paste_message_keeps_a_received_source_beside_notebook_12(jupyterlab, tmp_path):
    """The live world's paste form, clicked and filled as a student does: the source is kept beside the notebook
    (where nbgrader takes it with the submission), in CRLF, with the folder chosen; a wrong paste is said."""
    from selenium.webdriver.support.ui import Select

    session = jupyterlab
    folder = session.root / "12-validation" / "messages-colles"
    with session.evidence(tmp_path, "notebook-12-paste"):
        panel = session.open("12-validation/12-validation.ipynb")
        cell = _new_cell_on_top(session, panel, 'from labmail.widgets import paste_message\npaste_message("jean.dupont@gmail.com")')
        session.run(cell)
        output = session.wait_for(cell, ".jp-OutputArea-output")
        area = session.wait_for(output, ".widget-textarea textarea")
        assert area.get_attribute("placeholder").startswith("Collez ici toute la source du message")
        area.click()
        area.send_keys("Subject: pas la source\n\ncoucou")
        session.settle()
        session.button(output, "Enregistrer").click()
        session.wait_for(output, ".labmail-error", "pas la source complète")
        assert not list(folder.glob("*.eml"))
        area.clear()
        area.send_keys(RECEIVED)
        Select(session.wait_for(output, ".widget-dropdown select")).select_by_visible_text("Spam / courrier indésirable")
        session.settle()
        session.button(output, "Enregistrer").click()
        session.wait_for(output, ".labmail-ok", "dmarc=pass")
    saved = list(folder.glob("*.eml"))
    assert len(saved) == 1 and saved[0].read_bytes() == RECEIVED.replace("\n", "\r\n").encode()
    assert '"folder": "Junk"' in saved[0].with_suffix(".json").read_text()


def _menus(session) -> tuple[list[str], set[str]]:
    """The menu bar's titles and every command its menus offer (each menu opened in turn, as a user would)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    titles, commands = [], set()
    for title in session.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item"):
        ActionChains(session.driver).send_keys(Keys.ESCAPE).perform()
        titles.append(title.text.strip())
        title.click()
        commands |= {i.get_attribute("data-command") for i in
                     session.driver.find_elements(By.CSS_SELECTOR, ".lm-Menu-item[data-command]") if i.is_displayed()}
    ActionChains(session.driver).send_keys(Keys.ESCAPE).perform()
    return titles, commands


def test_the_students_jupyterlab_is_french_without_the_teachers_tools(jupyterlab, running_lab, tmp_path):
    """As make lab opens it (JUPYTER_CONFIG_PATH=jupyter/etudiant, the venv's overrides.json): menus in French, the
    language chosen by overrides.json; nbgrader's teacher tools (Formgrader, course list, Create Assignment) absent
    from the menus and their server routes, which the teacher's view (this module's other server) still has; kernels
    on Unix sockets (a hub run saw a kernel die at start, a TCP port taken by a lab starting at the same time)."""
    import json
    import urllib.error
    import urllib.request

    from jupyter_browser import jupyterlab_session

    cfg, _status = running_lab
    _titles, teacher_commands = _menus_after_open(jupyterlab, NB08)
    with jupyterlab_session(jupyterlab.root, tmp_path / "etudiant", cfg,
                            extra_env={"JUPYTER_CONFIG_PATH": str(ROOT / "jupyter" / "etudiant")}) as student:
        with student.evidence(tmp_path, "student-view"):
            titles, commands = _menus_after_open(student, NB08)
            assert {"Fichier", "Édition", "Affichage", "Exécution", "Noyau"} <= set(titles), titles
            teacher_only = {c for c in teacher_commands if "formgrader" in c or "course-list" in c or "create" in c.lower()
                            and "assignment" in c}
            assert teacher_only and not teacher_only & commands, (teacher_only, commands)
            settings = urllib.request.Request(f"{student.base}/lab/api/settings/@jupyterlab/translation-extension:plugin",
                                              headers={"Authorization": f"token {student.token}"})
            with urllib.request.urlopen(settings, timeout=10) as answer:
                found = json.loads(answer.read())  # overrides.json becomes the schema's default; the user set nothing
                assert found["schema"]["properties"]["locale"]["default"] == "fr_FR" and found["raw"] == "{}"
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(urllib.request.Request(f"{student.base}/formgrader",
                                                              headers={"Authorization": f"token {student.token}"}),
                                       timeout=10)
            # its kernel (idle: the notebook opened) talks over Unix sockets in the runtime folder, no TCP port to race for
            runtime = tmp_path / "etudiant" / "jupyter-runtime"
            connections = [json.loads(p.read_text()) for p in runtime.glob("kernel-*.json")]
            assert connections and all(c["transport"] == "ipc" and c["ip"].startswith(str(runtime)) for c in connections)
    teacher_runtime = [json.loads(p.read_text()) for p in (jupyterlab.root.parent / "jupyter-runtime").glob("kernel-*.json")]
    assert teacher_runtime and all(c["transport"] == "tcp" for c in teacher_runtime)  # without the student's config


def _menus_after_open(session, notebook: str):
    session.open(notebook)
    return _menus(session)
