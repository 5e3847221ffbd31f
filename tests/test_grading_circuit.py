"""nbgrader's whole circuit, as a class lives it: release → fetch → work → submit → collect → autograde → feedback.

The instructor (this test) keeps the course in a folder of its own and an nbgrader exchange on disk, as on a
JupyterHub. The students work as JupyterHub's container images run them: system user ``jovyan``, told apart by
``JUPYTERHUB_USER`` (nbgrader's exchange files a submission under that name), with their own embedded lab. Their
processes — nbgrader's fetch and submit, JupyterLab and its kernels — run in a user namespace where they are jovyan
(``unshare --user --map-user``; files stay reachable, as the test's Python lives in a private folder). Three of them
work in JupyterLab in Chromium — clicking quiz choices and « Valider », filling a form, typing code, restarting the
kernel, saving with Ctrl+S — and two in code. Another copy is handed in the "no hub" way (dropped into
``submitted/``). Every expected score is asserted exactly, and what the students and the teacher read.

Who does what (steps 02, 03 and 04 of the course):

* alice, 04 (browser): uses the DNS form, copies the code it shows into the exercise cell, ticks the right answer and
  clicks « Valider »; 03 (code): does everything in code.
* bob, 04 (browser): clicks a wrong answer first, then answers right in code — the first answer counts: 0.
* carol, 02 (browser): clicks the right answer, then restarts the kernel and runs all: nothing stops at the quiz's
  answer cell, and the answer is kept.
* dave, 03 (code): does the exercise, but hands in alice's recorded answer (her file and the quiz output it shows):
  set aside, and the teacher is told why.
* frank, 02 ("no hub"): his notebook, answered on his own machine, is dropped into submitted/ by the teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kernels
import nbformat
import pytest
from jupyter_browser import WAIT, jupyterlab_session

pytestmark = [pytest.mark.browser, pytest.mark.notebook,
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*not in session.*")]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STEPS = ("02-ressources", "03-domaine-mailcow", "04-dns-mx")
STUDENT = "jovyan"
MIME = "application/vnd.labmail.reponse+json"


def _as_jovyan() -> list[str]:
    """The command prefix that runs a process under the name jovyan (created by scripts/system-deps.sh, as root)."""
    import pwd

    try:
        entry = pwd.getpwnam(STUDENT)
    except KeyError:
        problem = "no system user jovyan: run 'make test' as root (scripts/system-deps.sh creates it)"
    else:
        wrap = ["unshare", "--user", f"--map-user={entry.pw_uid}", f"--map-group={entry.pw_gid}", "--"]
        check = subprocess.run([*wrap, sys.executable, "-c", "import nbgrader.utils; print(nbgrader.utils.get_username())"],
                               capture_output=True, text=True)
        if check.returncode == 0 and check.stdout.strip() == STUDENT:
            return wrap
        problem = f"cannot run a process as jovyan with unshare ({(check.stderr or check.stdout).strip()[-200:]})"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the grading circuit: {problem}", pytrace=False)
    pytest.skip(problem)


class Circuit:
    """The instructor's course and exchange, the students' homes, and how to run nbgrader as either."""

    def __init__(self, course: Path, base: Path, cfg, wrap: list[str]) -> None:
        self.course, self.base, self.cfg, self.wrap = course, base, cfg, wrap
        self.exchange = base / "exchange"
        self.state = base / "student-lab" / "state"

    def instructor(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "LABMAIL_STATE_DIR": str(self.cfg.state_dir),
               "LABMAIL_PRENOM": "jean-emile"}
        result = subprocess.run([str(BIN / "nbgrader"), *args, f"--Exchange.root={self.exchange}", *kernels.ARGS],
                                cwd=self.course, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result

    def home(self, student: str) -> Path:
        home = self.base / "homes" / student
        home.mkdir(parents=True, exist_ok=True)
        return home

    def env(self, student: str) -> dict[str, str]:
        """A student's environment: the hub's user name, their own lab, Jupyter's folders in their home."""
        home = self.home(student)
        return {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), "JUPYTERHUB_USER": student,
                "LABMAIL_STATE_DIR": str(self.state), "LABMAIL_PRENOM": "jean-emile",
                "LABMAIL_CONFIG": str(home / ".labmail.toml"), "LABMAIL_SYSTEM_CONFIG": str(home / "none.toml"),
                "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "JUPYTER_DATA_DIR": str(home / ".local/share/jupyter"),
                "JUPYTER_RUNTIME_DIR": str(home / ".local/share/jupyter/runtime"), "IPYTHONDIR": str(home / ".ipython"),
                "MPLCONFIGDIR": str(home / ".mpl"), "PYDEVD_DISABLE_FILE_VALIDATION": "1", "LANG": "C.UTF-8"}

    def student(self, student: str, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run ``command`` in the student's home, as jovyan with their environment."""
        result = subprocess.run([*self.wrap, *command], cwd=self.home(student), env=self.env(student),
                                capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"{student}: {' '.join(command)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return result

    def nbgrader(self, student: str, *args: str) -> subprocess.CompletedProcess:
        return self.student(student, str(BIN / "nbgrader"), *args, "--course=labmail", f"--Exchange.root={self.exchange}")

    def notebook(self, student: str, step: str) -> Path:
        return self.home(student) / step / f"{step}.ipynb"

    def execute(self, student: str, step: str) -> None:
        """Run the student's notebook top to bottom in a kernel of their own and save it with its outputs, as
        "Run All" then "Save" do (errors allowed: an unanswered check may fail)."""
        self.student(student, str(BIN / "jupyter"), "nbconvert", "--to=notebook", "--execute", "--inplace",
                     "--allow-errors", "--ExecutePreprocessor.timeout=120", *kernels.ARGS, str(self.notebook(student, step)))


@pytest.fixture(scope="module")
def circuit(running_lab, world_template, tmp_path_factory):
    wrap = _as_jovyan()
    cfg, _status = running_lab
    base = tmp_path_factory.mktemp("circuit")
    course = base / "cours"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    for step in STEPS:
        shutil.copytree(ROOT / "notebooks" / step, course / "notebooks" / step,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "reponses.json"))
    made = Circuit(course, base, cfg, wrap)
    made.exchange.mkdir(mode=0o777)
    made.exchange.chmod(0o777)
    shutil.copytree(world_template, made.state)  # the students' own lab (started on first use, in their namespace)
    for step in STEPS:
        made.instructor("generate_assignment", step, "--force")
        made.instructor("release_assignment", step, "--force")
    try:
        yield made
    finally:
        subprocess.run([str(BIN / "labmail"), "lab", "stop"], env=made.env("alice"), cwd=base, capture_output=True,
                       timeout=60)


def _quiz_choices(session, cell, indices: set[int]) -> None:
    """Tick the choices numbered ``indices`` in the quiz shown by ``cell``, then click « Valider »."""
    from selenium.webdriver.common.by import By

    output = session.wait_for(cell, ".jp-OutputArea-output", "Interro !")
    session.wait_for(output, ".widget-checkbox, .widget-radio-box")
    for box in output.find_elements(By.CSS_SELECTOR, ".widget-checkbox"):
        number = int(box.text.split(" — ")[0])
        tick = box.find_element(By.CSS_SELECTOR, "input")
        if tick.is_selected() != (number in indices):
            tick.click()
    for label in output.find_elements(By.CSS_SELECTOR, ".widget-radio-box label"):
        if int(label.text.split(" — ")[0]) in indices:
            label.find_element(By.CSS_SELECTOR, "input").click()
    session.button(output, "Valider").click()


def _recorded(text: str, question: str) -> list[list[int]]:
    """The first answers to ``question`` recorded in a notebook file's outputs."""
    nb = json.loads(text)
    return [o["data"][MIME]["first"] for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
            if MIME in o.get("data", {}) and o["data"][MIME].get("question") == question]


def _work_in_the_browser(circuit: Circuit, student: str, step: str, tmp: Path, work) -> None:
    with jupyterlab_session(circuit.home(student), circuit.base / "browsers" / student, circuit.cfg,
                            extra_env=circuit.env(student), wrap=circuit.wrap) as session:
        with session.evidence(tmp, f"{student}-{step}"):
            panel = session.open(f"{step}/{step}.ipynb")
            work(session, panel, circuit.notebook(student, step))


def _alice_04(session, panel, path: Path) -> None:
    from selenium.webdriver.common.by import By

    session.menu("runmenu:run-all")  # "Run All" stops at the exercise, with the stub's French message
    exercise = session.code_cell(panel, "grading.a_faire()")
    session.wait_for(exercise, ".jp-OutputArea-output", "Exercice à faire : remplacez les lignes")
    form = session.code_cell(panel, "panneau = dns_panel()")
    session.run(form)
    output = session.wait_for(form, ".jp-OutputArea-output")
    session.wait_for(output, '.widget-text input[placeholder="@ ou _dmarc"]').send_keys("@")
    session.wait_for(output, '.widget-text input[placeholder="10 mailcow.labmail.cloud."]').send_keys(
        "10 mailcow.labmail.cloud.")
    session.settle()
    session.button(output, "Ajouter").click()
    note = session.wait_for(output, ".labmail-form-note", "c'est la cellule de code de l'exercice qui compte")
    code = note.find_element(By.CSS_SELECTOR, "code").text
    assert code == 'zone.add("@", "MX", "10 mailcow.labmail.cloud.")'
    session.type_code(exercise, code)  # the code the form showed, copied into the exercise cell
    session.menu("runmenu:run-all")
    check = session.code_cell(panel, "grading.mx()")
    session.wait_for(check, ".jp-OutputArea-output", "Fait aussi avec un formulaire")  # and it still passes
    quiz = session.code_cell(panel, 'interro = quiz("interro_04_priorite")')
    session.wait_for(quiz, ".jp-OutputArea-output", "pas encore de réponse enregistrée")
    _quiz_choices(session, quiz, {1, 2})
    session.wait_for(quiz, ".jp-OutputArea-output", "réponse enregistrée (la première compte) : 1 — ")
    saved = session.save(path, lambda text: _recorded(text, "interro_04_priorite") == [[1, 2]])
    assert "grading.a_faire()" not in saved


def _bob_04(session, panel, path: Path) -> None:
    session.menu("runmenu:run-all")
    exercise = session.code_cell(panel, "grading.a_faire()")
    session.wait_for(exercise, ".jp-OutputArea-output", "Exercice à faire")
    session.type_code(exercise, 'zone.add("@", "MX", "10 mailcow.labmail.cloud.")')
    session.menu("runmenu:run-all")  # now it stops at the quiz's check: no answer yet
    check = session.code_cell(panel, 'grading.answered("interro_04_priorite")')
    session.wait_for(check, ".jp-OutputArea-output", "Pas encore de réponse à l'Interro")
    quiz = session.code_cell(panel, 'interro = quiz("interro_04_priorite")')
    _quiz_choices(session, quiz, {3})  # wrong…
    session.wait_for(quiz, ".jp-OutputArea-output", "réponse enregistrée (la première compte) : 3 — ")
    answer = session.code_cell(panel, "# interro.answer({0, 1})")
    session.type_code(answer, "interro.answer({1, 2})")  # …then right, in code
    session.run(answer)
    session.wait_for(answer, ".jp-OutputArea-output", "✔ Bonne réponse.\n✔ 1 — à répartir")
    session.wait_for(quiz, ".jp-OutputArea-output", "la note reste celle de la première réponse (3)")
    session.save(path, lambda text: _recorded(text, "interro_04_priorite") == [[3]] and "interro.answer({1, 2})" in text)


def _carol_02(session, panel, path: Path) -> None:
    from selenium.webdriver.common.by import By

    session.menu("runmenu:run-all")
    exercise = session.code_cell(panel, "grading.a_faire()")
    session.wait_for(exercise, ".jp-OutputArea-output", "Exercice à faire")
    session.type_code(exercise, 'serveur_ns = dns.lookup(etat.domain, "NS").values[0]\nserveur_ns')
    session.menu("runmenu:run-all")
    quiz = session.code_cell(panel, 'interro = quiz("interro_02_zone")')
    session.wait_for(quiz, ".jp-OutputArea-output", "pas encore de réponse enregistrée")
    _quiz_choices(session, quiz, {2})
    session.wait_for(quiz, ".jp-OutputArea-output", "réponse enregistrée (la première compte) : 2 — ")
    session.menu("runmenu:restart-and-run-all")  # a new kernel, every cell again: the answer cell does not stop it
    check = session.code_cell(panel, 'grading.answered("interro_02_zone")')
    session.wait_for(check, ".jp-OutputArea-output", "réponse enregistrée (la première compte) : 2 — ", timeout=2 * WAIT)
    session.wait_for(quiz, ".jp-OutputArea-output", "réponse enregistrée (la première compte) : 2 — ")
    last = panel.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-CodeCell")[-1]
    errors = panel.find_elements(By.CSS_SELECTOR, "[data-mime-type='application/vnd.jupyter.stderr']")
    assert "[*]" not in last.text and errors == [], [e.text for e in errors]
    session.save(path, lambda text: _recorded(text, "interro_02_zone") == [[2], [2]])


def _fill(path: Path, cells: dict[str, str]) -> None:
    """Write code into the cells whose grade_id is given, as a student does in an editor."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in cells:
            cell.source = cells[gid]
    nbformat.write(nb, path)


def _as_a_class(circuit: Circuit, command: str, work: tuple[tuple[str, str], ...]) -> None:
    """Every student runs nbgrader's ``command`` at the same moment, as a class does (one student's two steps in
    turn): the exchange must keep each one apart."""
    from concurrent.futures import ThreadPoolExecutor

    by_student: dict[str, list[str]] = {}
    for student, step in work:
        by_student.setdefault(student, []).append(step)
    with ThreadPoolExecutor(len(by_student)) as pool:
        done = [pool.submit(lambda s=student, steps=steps: [circuit.nbgrader(s, command, step) for step in steps])
                for student, steps in by_student.items()]
        for future in done:
            future.result()


def test_the_whole_circuit_grades_what_the_students_did(circuit, tmp_path):
    from nbgrader.api import Gradebook

    work = (("alice", "04-dns-mx"), ("bob", "04-dns-mx"), ("carol", "02-ressources"), ("alice", "03-domaine-mailcow"),
            ("dave", "03-domaine-mailcow"))
    _as_a_class(circuit, "fetch_assignment", work)  # the class fetches at the start of the lesson, all at once
    for student, step in work:
        assert circuit.notebook(student, step).exists()
    # -- in the browser
    _work_in_the_browser(circuit, "alice", "04-dns-mx", tmp_path, _alice_04)
    _work_in_the_browser(circuit, "bob", "04-dns-mx", tmp_path, _bob_04)
    _work_in_the_browser(circuit, "carol", "02-ressources", tmp_path, _carol_02)
    # -- in code: alice does step 03 herself; dave does the exercise and takes alice's recorded answer
    dkim = 'ligne = audit.row("dkim")\nnom_dkim, valeur_dkim = ligne.name, ligne.expected\nprint(nom_dkim)'
    _fill(circuit.notebook("alice", "03-domaine-mailcow"), {"ex_03_dkim": dkim,
                                                           "reponse_03_recommandations": "interro.answer({1, 2, 3, 4})"})
    circuit.execute("alice", "03-domaine-mailcow")
    _fill(circuit.notebook("dave", "03-domaine-mailcow"), {"ex_03_dkim": dkim})
    shutil.copy(circuit.notebook("alice", "03-domaine-mailcow").parent / "reponses.json",
                circuit.notebook("dave", "03-domaine-mailcow").parent / "reponses.json")
    circuit.execute("dave", "03-domaine-mailcow")  # his quiz cell now shows alice's record
    assert _recorded(circuit.notebook("dave", "03-domaine-mailcow").read_text(), "interro_03_recommandations")
    _as_a_class(circuit, "submit", work)  # and hands in at the bell, all at once
    # -- frank, without a hub: answered on his own machine (in code, then the cell put back as released, as if he
    #    had clicked), his notebook dropped into submitted/ by the teacher
    frank = circuit.home("frank") / "02-ressources"
    shutil.copytree(circuit.course / "release" / "02-ressources", frank)
    released = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(frank / "02-ressources.ipynb", 4).cells
                if "nbgrader" in c.metadata}
    _fill(frank / "02-ressources.ipynb", {"ex_02_ns": 'serveur_ns = dns.lookup(etat.domain, "NS").values[0]',
                                          "reponse_02_zone": "interro.answer({2})"})
    circuit.execute("frank", "02-ressources")
    _fill(frank / "02-ressources.ipynb", {"reponse_02_zone": released["reponse_02_zone"]})
    dropped = circuit.course / "submitted" / "frank" / "02-ressources"
    dropped.mkdir(parents=True)
    shutil.copy(frank / "02-ressources.ipynb", dropped)

    # -- the teacher: collect, autograde, feedback
    for step in STEPS:
        circuit.instructor("collect", step)
    assert (circuit.course / "submitted" / "bob" / "04-dns-mx" / "04-dns-mx.ipynb").exists()
    assert not list((circuit.course / "submitted").rglob("reponses.json"))  # the answers travel in the notebooks
    logs = {step: circuit.instructor("autograde", step, "--force") for step in STEPS}
    for step in STEPS:
        circuit.instructor("generate_feedback", step, "--force")

    expected = {
        ("04-dns-mx", "alice"): {"test_04_mx": 3, "test_interro_04_priorite": 1},
        ("04-dns-mx", "bob"): {"test_04_mx": 3, "test_interro_04_priorite": 0},
        ("02-ressources", "carol"): {"test_02_ns": 2, "test_interro_02_zone": 1},
        ("02-ressources", "frank"): {"test_02_ns": 2, "test_interro_02_zone": 1},
        ("03-domaine-mailcow", "alice"): {"test_03_dkim": 2, "test_interro_03_recommandations": 1},
        ("03-domaine-mailcow", "dave"): {"test_03_dkim": 2, "test_interro_03_recommandations": 0},
    }
    with Gradebook(f"sqlite:///{circuit.course}/gradebook.db") as gradebook:
        for (step, student), scores in expected.items():
            notebook = gradebook.find_submission_notebook(step, step, student)
            got = {g.name: g.auto_score for g in notebook.grades if g.name in scores}
            assert got == scores, f"{step} {student}: {got}"

    def feedback(step: str, student: str) -> str:
        return (circuit.course / "feedback" / student / step / f"{step}.html").read_text(encoding="utf-8")

    assert "votre première réponse (3) n&#39;est pas la bonne (1, 2)" in feedback("04-dns-mx", "bob") or \
        "votre première réponse (3) n'est pas la bonne (1, 2)" in feedback("04-dns-mx", "bob")
    assert "réponse enregistrée (la première compte) : 2 — " in feedback("02-ressources", "carol")
    dave = feedback("03-domaine-mailcow", "dave")
    assert "enregistrée par « alice » et rendue par « dave »" in dave and "signalée à l" in dave
    assert "réponse ignorée" in logs["03-domaine-mailcow"].stderr  # nbgrader's log tells the teacher too
    graded = json.loads((circuit.course / "autograded" / "carol" / "02-ressources" / "reponses.json").read_text())
    assert graded["source"] == "notebook" and graded["interro"]["interro_02_zone"]["user"] == "carol"
