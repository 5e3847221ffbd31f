"""The live world against real servers (issue 18, part 2): a school's BIND, Postfix, OpenDKIM and Dovecot from
Debian's packages (tests/school_stack.py), set up from ``labmail provision-live``'s files, with the embedded lab's
providers as the outside world. The student's configuration is the live one a school hands out; nothing here
knows it is a test bed except the ports (``ports = "587=…"``) and the CA (``ca_file``).

Skipped with a clear message where Debian's packages or root are missing; mandatory in CI (``CI`` set).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import school_stack

STUDENT = "jean-emile"  # does the course with the reference answers
BLANK = "anne"  # hands in the unmodified student version
DOMAIN = f"{STUDENT}.{school_stack.PARENT}"

pytestmark = pytest.mark.tools


def _require() -> None:
    lacking = school_stack.missing()
    if lacking:
        if os.environ.get("CI"):
            pytest.fail("live tier: missing " + ", ".join(lacking) + " (scripts/system-deps.sh installs them)")
        pytest.skip("live tier: missing " + ", ".join(lacking) + " — run scripts/system-deps.sh as root")


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """The embedded lab as the outside world (its Gmail and Outlook, with the student's mailboxes there), asking the
    school's BIND for the school's zones."""
    _require()
    from labmail import config, lab
    from labmail.world import current

    base = tmp_path_factory.mktemp("outside")
    dns_port = _free_udp_port()
    cfg = config.Config(prenom=STUDENT, state_dir=base / "state", lab_forward=f"{school_stack.PARENT}=127.0.0.1:{dns_port},"
                                                              f"0.0.127.in-addr.arpa=127.0.0.1:{dns_port}")
    lab.start(cfg)
    try:
        lab.provision(cfg, students=[STUDENT, BLANK])  # their mailboxes at the lab's Gmail and Outlook
        yield cfg, current(cfg), dns_port
    finally:
        lab.stop(cfg)


def _free_udp_port() -> int:
    while True:
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()
        return port


@pytest.fixture(scope="module")
def school(outside):
    from labmail.liveclass import provision_live

    import shutil
    import tempfile

    _cfg, world, dns_port = outside
    base = Path(tempfile.mkdtemp(prefix="labmail-school-"))  # not under pytest's 0700 folder: the daemons' users
    base.chmod(0o755)                                         # (postfix, dovecot, opendkim) must reach their files
    roster = base / "classe.csv"
    roster.write_text(f"prenom,nom\n{STUDENT},Dupont\n{BLANK},Martin\n", encoding="utf-8")
    provision_live(roster, base / "classe-live", parent_domain=school_stack.PARENT, nameserver=school_stack.NS_HOST,
                   nameserver_address="127.0.0.1")
    providers = {}
    for domain in ("gmail.test", "outlook.test"):
        mx = world.resolver().resolve(domain, "MX")[0].exchange.to_text()
        address = world.resolver().resolve(mx, "A")[0].address
        providers[domain] = world.endpoint(address, 25)
    stack = school_stack.configure(base / "stack", base / "classe-live", [STUDENT, BLANK], providers, dns_port=dns_port)
    school_stack.start(stack)
    try:
        yield stack, base / "classe-live"
    finally:
        stack.stop()
        left = school_stack.leftovers(stack)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"a daemon of the school's stack outlived stop(): {left}"


def test_the_school_stack_answers_and_the_lab_sees_its_zones(school, outside):
    import dns.resolver

    stack, _files = school
    _cfg, world, _port = outside
    resolver = world.resolver()
    assert resolver.resolve(school_stack.MAIL_HOST, "A")[0].address == "127.0.0.1"  # through the lab's forward
    assert resolver.resolve("1.0.0.127.in-addr.arpa", "PTR")[0].target.to_text() == school_stack.MAIL_HOST + "."
    assert resolver.resolve(DOMAIN, "SOA")  # the student's zone, as provision-live wrote it
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"personne.{school_stack.PARENT}", "A")
    assert stack.students[STUDENT]["passwords"]
    time.sleep(0)


def _as_student(label: str, school, outside, monkeypatch, folder: Path):
    """This process configured as ``label``'s live world: the files the teacher handed out (provision-live's
    config.toml and tsig.key, a credentials file with the mailbox passwords and the DKIM record), the school's CA,
    the student's external addresses (the lab's Gmail and Outlook), and the name of the mail host resolved as the
    school's DNS would (the test bed's one stand-in for the system resolver)."""
    import json
    import tomllib

    from labmail import mail
    from labmail.world import current

    stack, files = school
    _lab_cfg, lab_world, dns_port = outside
    given = tomllib.loads((files / "etudiants" / label / "config.toml").read_text(encoding="utf-8"))
    credentials = folder / "credentials.json"
    credentials.write_text(json.dumps({"passwords": stack.students[label]["passwords"],
                                       "dkim_txt": stack.students[label]["dkim_txt"]}))
    credentials.chmod(0o600)
    bundle = folder / "ca.pem"
    bundle.write_text(Path(stack.ca_file).read_text() + Path(lab_world.ca_file).read_text())
    imap = {d.split(".")[0]: lab_world.connect_address(h, 993) for d, h in course_imap().items()}
    env = {"config": str(folder / "config.toml"), "world": given["world"], "prenom": given["prenom"],
           "parent_domain": given["parent_domain"], "mail_host": school_stack.MAIL_HOST,
           "dns_server": f"127.0.0.1:{dns_port}", "resolver": "{}:{}".format(*lab_world.resolvers[0]),
           "tsig_secret_file": str(files / "etudiants" / label / "tsig.key"), "tsig_algorithm": given["tsig_algorithm"],
           "credentials_file": str(credentials), "ca_file": str(bundle), "ports": stack.port_map(),
           "gmail_address": f"{label}@gmail.test", "outlook_address": f"{label}@outlook.test",
           "imap_gmail": "{}:{}".format(*imap["gmail"]), "imap_outlook": "{}:{}".format(*imap["outlook"]),
           "state_dir": str(folder / "state")}
    for key, value in env.items():
        monkeypatch.setenv(f"LABMAIL_{key.upper()}", value)
    real = socket.getaddrinfo

    def school_names(host, *args, **kwargs):  # the school's names, as its DNS answers them
        if isinstance(host, str) and host.rstrip(".").endswith(school_stack.PARENT):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", school_names)
    from labmail import course

    monkeypatch.setattr(course, "_TYPED", {})  # passwords typed for another test's lab are not this one's
    provider_passwords = {a: mail.stored_password(a, None, lab_world) for a in (env["gmail_address"], env["outlook_address"])}
    world = current()
    assert world.kind == "live" and world.config.domain == f"{label}.{school_stack.PARENT}"
    return world, provider_passwords


@pytest.fixture
def student(school, outside, monkeypatch, tmp_path):
    return _as_student(STUDENT, school, outside, monkeypatch, tmp_path)


def course_imap() -> dict[str, str]:
    from labmail.course import PROVIDER_IMAP

    return PROVIDER_IMAP


def test_step_7_through_the_real_postfix_reaches_the_outside_untrusted(student, monkeypatch):
    """Tintin submits on the school's Postfix (587, STARTTLS, SASL by Dovecot); OpenDKIM signs; Postfix relays to the
    lab's Gmail and Outlook, which judge it with the school's DNS (nothing published yet: spam); the student reads it
    back the live way (IMAP to the external mailbox, password typed)."""
    import getpass

    from labmail import course, grading, headers, mail

    world, provider_passwords = student
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(p for a, p in provider_passwords.items() if a in prompt))
    gmail, outlook = course.external_mailboxes()
    started = time.time() - 1
    sent = mail.submit(f"tintin@{DOMAIN}", [gmail, outlook], "Bonjour de l'étape 7", "Bonjour !")
    assert sent.accepted, sent.transcript
    assert "STARTTLS" in sent.transcript and "AUTH" in sent.transcript
    found = [course.find(a, "Bonjour de l'étape 7", since=started, timeout=30) for a in (gmail, outlook)]
    grading.untrusted_delivery(*found)
    report = headers.analyze(found[0][1], recompute=False)
    assert report.from_domain == DOMAIN
    assert b"DKIM-Signature:" in found[0][1] and b"d=" + DOMAIN.encode() in found[0][1]  # OpenDKIM signed it
    assert report.spf == "none" and report.dmarc == "none"  # the student has published nothing yet


#: The course's notebooks that run, unchanged, in the live world against the school's real servers, in the order a
#: student takes them (each starts where the previous left the zone and the mailboxes).
LIVE_COURSE = ["00-demarrage", "01-flux", "02-ressources", "03-domaine-mailcow", "04-dns-mx", "05-boites-mail", "06-pop-imap", "07-envoi-exterieur", "08-en-tetes", "09-spf", "10-dkim", "11-dmarc", "12-validation", "13-autodiscover"]


def _run_live_notebook(name: str, folder: Path) -> str:
    import json

    import kernels
    import nbformat
    from nbclient import NotebookClient

    path = Path(__file__).resolve().parents[1] / "notebooks" / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}},
                            config=kernels.config(), allow_errors=bool(os.environ.get("SHOW_NOTEBOOK_OUTPUTS")))
    client.execute()
    outputs = json.dumps([cell.get("outputs", []) for cell in nb.cells])
    if os.environ.get("SHOW_NOTEBOOK_OUTPUTS"):
        print(name, outputs[:6000])
    assert "Traceback" not in outputs and "Error" not in outputs.replace("errors", ""), name
    return outputs


def _live_kernels(monkeypatch, folder: Path, provider_passwords: dict[str, str]) -> None:
    """Kernels started from now on carry the live tier's stand-ins (tests/live_kernel): the school's names, the
    passwords the student types, no network beyond loopback."""
    import json

    typed = folder / "typed.json"
    typed.write_text(json.dumps(provider_passwords))
    typed.chmod(0o600)
    monkeypatch.setenv("LABMAIL_TEST_TYPED", str(typed))
    monkeypatch.setenv("LABMAIL_TEST_SCHOOL_PARENT", school_stack.PARENT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent / "live_kernel"),
                                                      os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


@pytest.mark.notebook
def test_the_course_runs_in_the_live_world(student, monkeypatch, tmp_path):
    """The course's own notebooks, unchanged, one after the other in kernels configured as the student's live world:
    every cell runs and every check passes against the school's real BIND, Postfix, OpenDKIM and Dovecot."""
    import json

    _world, provider_passwords = student
    _live_kernels(monkeypatch, tmp_path, provider_passwords)
    secrets = list(provider_passwords.values()) + list(json.loads(Path(os.environ["LABMAIL_CREDENTIALS_FILE"])
                                                                  .read_text())["passwords"].values())
    for name in LIVE_COURSE:
        outputs = _run_live_notebook(name, tmp_path)
        assert not any(secret in outputs for secret in secrets), f"{name}: a password shows in the notebook"


#: Every step whose checks a student can fail in the live world. Not 05: in a school without Mailcow's API the
#: teacher creates the mailboxes, so its check passes before the student does anything (said in the notebook).
LIVE_GRADED = ["01-flux", "02-ressources", "03-domaine-mailcow", "04-dns-mx", "06-pop-imap", "07-envoi-exterieur",
               "08-en-tetes", "09-spf", "10-dkim", "11-dmarc", "12-validation", "13-autodiscover"]


@pytest.mark.notebook
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_unmodified_student_version_fails_every_check_in_the_live_world(school, outside, monkeypatch, tmp_path):
    """nbgrader's student version of each step, handed in untouched by another student of the same class (a fresh
    zone, the same school servers): nbgrader's validator finds that every test fails — the graded checks see the
    real servers, not the reference answers' leftovers."""
    import shutil
    import sys

    import kernels
    from nbgrader.apps import NbGraderAPI
    from nbgrader.validator import Validator
    from traitlets.config.loader import PyFileConfigLoader

    root = Path(__file__).resolve().parents[1]
    _world, provider_passwords = _as_student(BLANK, school, outside, monkeypatch, tmp_path)
    _live_kernels(monkeypatch, tmp_path, provider_passwords)
    cours = tmp_path / "cours"
    cours.mkdir()
    shutil.copy(root / "nbgrader_config.py", cours)
    for step in LIVE_GRADED:
        shutil.copytree(root / "notebooks" / step, cours / "notebooks" / step,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "reponses.json"))
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.chdir(cours)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(cours)).load_config()
    config.CourseDirectory.root = str(cours)
    config.Exchange.root = str(cours / "exchange")
    config.merge(kernels.config())
    api = NbGraderAPI(config=config)
    for step in LIVE_GRADED:
        result = api.generate_assignment(step, force=True)
        assert result["success"], result.get("error")
        release = cours / "release" / step / f"{step}.ipynb"
        assert Validator(invert=True, config=config).validate(str(release)) == {}, f"{step}: a check passed untouched"


def test_imap_search_against_dovecot_finds_the_inbox_and_the_special_use_junk_folder(student):
    """mail.imap_search as it reads a real Gmail or Microsoft 365 mailbox, here against the school's real Dovecot:
    the spam folder found by its \\Junk attribute (RFC 6154), a non-ASCII subject searched as a UTF-8 literal
    (RFC 3501 §6.4.4), SINCE, only exact subjects kept, nothing marked as read."""
    import email.utils

    from labmail import mail

    world, _passwords = student
    milou = f"milou@{DOMAIN}"
    subject = "Réunion à l'école — ordre du jour"
    started = time.time() - 1
    assert mail.submit(f"tintin@{DOMAIN}", milou, subject, "Bonjour !").accepted
    assert mail.submit(f"tintin@{DOMAIN}", milou, subject + " (suite)", "Bonjour !").accepted  # not the same subject
    junk = (f"From: x@ailleurs.test\r\nTo: {milou}\r\nSubject: =?utf-8?q?R=C3=A9union_=C3=A0_l=27=C3=A9cole_=E2=80=94_"
            f"ordre_du_jour?=\r\nDate: {email.utils.formatdate()}\r\n\r\nspam\r\n").encode()
    with mail.imap_connect(milou, world=world) as client:
        assert client.append("Pourriel", None, None, junk)[0] == "OK"  # named so that only \\Junk can tell
    deadline = time.monotonic() + 20
    found: list = []
    while time.monotonic() < deadline and len(found) < 2:
        found = mail.imap_search(milou, subject, host=school_stack.MAIL_HOST, since=started, world=world)
        time.sleep(0.3)
    assert sorted(folder for folder, _source in found) == ["INBOX", "Junk"]
    with mail.imap_connect(milou, world=world) as client:
        client.select("INBOX", readonly=True)
        typ, data = client.search(None, "UNSEEN")
        assert typ == "OK" and len(data[0].split()) >= 2  # read with BODY.PEEK: still unseen
    assert all(b"Subject:" in source and b"\r\n\r\n" in source for _folder, source in found)  # whole sources
