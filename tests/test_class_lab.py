"""A lab the whole class shares, reached from the students' own containers (``lab start --class … --adresse``).

The instructor's lab listens on the class's address — here 127.0.0.2, a second loopback address standing for the
address of the machine (or the pod) the students' containers reach; the students' machines are processes that can
reach that address and nothing else (tests/class_kernel: 127.0.0.1, where a lab of their own would listen, is
refused). Each student joins with the folder the instructor hands them (``labmail lab rejoindre DOSSIER``) and runs
the course's notebooks, unchanged. The security matrix against that address is tests/test_security.py's second run
(``class-address``).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labmail import errors

CLASS = "127.0.0.2"
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROSTER = "prenom,nom,email\nZoé,Martin,zoe@example.org\nAli,Ben Salah,ali@example.org\n"


@pytest.fixture(scope="module")
def class_lab(tmp_path_factory, world_template):
    """The instructor's class lab on the class's address, two students enrolled from a roster."""
    from labmail import config, lab

    base = tmp_path_factory.mktemp("classlab")
    shutil.copytree(world_template, base / "state")
    cfg = config.Config(state_dir=base / "state")  # the instructor: no first name of their own
    roster = base / "classe.csv"
    roster.write_text(ROSTER, encoding="utf-8")
    lab.start(cfg, listen=CLASS)
    try:
        lab.provision_class(roster, cfg)
        yield cfg
    finally:
        lab.stop(cfg)


def _student_machine(monkeypatch, home: Path) -> dict[str, str]:
    """The environment of a student's container: a home of their own, and a network that reaches the class lab only
    (for this process's children: the labmail command and the notebooks' kernels)."""
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LABMAIL_CONFIG", str(home / ".config" / "labmail" / "config.toml"))
    monkeypatch.delenv("LABMAIL_STATE_DIR", raising=False)
    monkeypatch.setenv("LABMAIL_TEST_ONLY_ADDRESS", CLASS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent / "class_kernel"),
                                                      os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return dict(os.environ)


def _labmail(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "labmail"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_every_service_of_the_class_lab_listens_on_the_class_address_only(class_lab):
    run = json.loads((class_lab.state_dir / "run.json").read_text(encoding="utf-8"))
    assert run["host"] == CLASS
    assert len(run["ports"]) >= 15  # DNS ×3, SMTP ×5, IMAP ×6, POP3 ×2, HTTPS
    for role, port in run["ports"].items():
        socket.create_connection((CLASS, port), timeout=5).close()
    # and nothing of it on 127.0.0.1 — read from /proc, not by connecting there: a lab of the other test worker may
    # hold the same port number on 127.0.0.1 (the test once failed that way)
    from labs import listening_addresses

    assert listening_addresses(run["pid"]) == {socket.inet_aton(CLASS)[::-1].hex().upper()}


def test_a_students_folder_holds_their_own_secrets_and_nothing_of_anyone_else(class_lab):
    from labmail.state import read_api_keys

    classe = class_lab.state_dir / "classe"
    assert sorted(p.name for p in classe.iterdir()) == ["ali", "zoe"]
    assert stat.S_IMODE(classe.stat().st_mode) == 0o700 and stat.S_IMODE((classe / "zoe").stat().st_mode) == 0o700
    files = [p for p in (classe / "zoe").rglob("*") if p.is_file()]
    text = "\n".join(p.read_text(encoding="utf-8") for p in files)
    with (class_lab.state_dir / "class-credentials.csv").open(encoding="utf-8") as handle:
        rows = {r["domaine"].split(".")[0]: r for r in csv.DictReader(handle)}
    for secret in ("cle_api", "tsig_secret", "mdp_gmail", "mdp_outlook"):
        assert rows["zoe"][secret] in text, secret
        assert rows["ali"][secret] not in text, f"Ali's {secret} in Zoé's folder"
    assert read_api_keys(class_lab.state_dir)["admin"] not in text
    assert "PRIVATE KEY" not in text  # neither the lab CA's key nor a DKIM signing key
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in files if p.name != "ca.pem")
    run = json.loads((classe / "zoe" / "run.json").read_text(encoding="utf-8"))
    assert run["remote"] is True and run["host"] == CLASS and run["students"] == ["zoe"] and "control" not in run


@pytest.mark.notebook
def test_a_student_joins_the_class_lab_and_does_the_whole_course_from_their_own_machine(class_lab, monkeypatch,
                                                                                            tmp_path):
    """Zoé receives her folder, joins with the command, and runs the 14 notebooks, unchanged: every check passes
    through the class lab alone; what only the instructor may do is said, not attempted."""
    import kernels
    import nbformat
    from nbclient import NotebookClient

    from labmail import config, lab

    folder = tmp_path / "zoe-home" / "classe-zoe"
    shutil.copytree(class_lab.state_dir / "classe" / "zoe", folder)  # handed over by the instructor
    env = _student_machine(monkeypatch, tmp_path / "zoe-home")
    joined = _labmail("lab", "rejoindre", str(folder), env=env)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert "Vous rejoignez le lab de la classe en tant que « zoe » (zoe.labmail.cloud)" in joined.stdout
    assert f"Lab de la classe à {CLASS}" in joined.stdout
    cfg = config.load()
    assert cfg.prenom == "zoe" and cfg.state_dir == folder.resolve()
    refused = _labmail("lab", "stop", env=env)
    assert refused.returncode != 0 and "seul·e l'enseignant·e l'arrête" in refused.stdout + refused.stderr
    assert lab.status(class_lab).running  # still there for everyone

    with (class_lab.state_dir / "class-credentials.csv").open(encoding="utf-8") as handle:
        zoe = next(r for r in csv.DictReader(handle) if r["domaine"].startswith("zoe."))
    secrets = [zoe[k] for k in ("cle_api", "tsig_secret", "mdp_gmail", "mdp_outlook")]
    work = tmp_path / "zoe-home" / "cours"
    work.mkdir()
    shown = {}
    for name in sorted(p.name for p in (ROOT / "notebooks").iterdir() if p.name[:2].isdigit() and p.name < "99"):
        nb = nbformat.read(ROOT / "notebooks" / name / f"{name}.ipynb", as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(work)}},
                       config=kernels.config()).execute()
        shown[name] = json.dumps([cell.get("outputs", []) for cell in nb.cells])
        assert "Traceback" not in shown[name], name
        assert not any(secret in shown[name] for secret in secrets), f"{name}: a secret shows in the notebook"
    assert len(shown) == 14
    # What the notebooks did is in the class lab, seen from the instructor's side.
    from labmail import checks
    from labmail.state import Layout
    from labmail.world import current

    record = Layout(class_lab.state_dir).dkim_record("zoe.labmail.cloud").read_text(encoding="utf-8").strip()
    audit = checks.domain("zoe.labmail.cloud", world=current(class_lab), dkim_record=record)
    assert audit.ok, audit  # MX, SPF, DKIM, DMARC and autodiscover all published by Zoé's notebooks


def test_a_folder_of_another_student_or_a_stopped_class_lab_is_said_clearly(class_lab, tmp_path):
    from labmail import config, lab

    ali = tmp_path / "ali"
    shutil.copytree(class_lab.state_dir / "classe" / "ali", ali)
    with pytest.raises(errors.LabError, match="Ce dossier de la classe est celui de « ali », pas de « zoe »"):
        lab.start(config.Config(prenom="zoe", state_dir=ali))
    with pytest.raises(errors.LabError, match="seul·e l'enseignant·e le remet au début"):
        lab.reset(config.Config(prenom="ali", state_dir=ali))
    run = json.loads((ali / "run.json").read_text(encoding="utf-8"))
    with socket.socket() as unused:  # a port where nothing listens: the class lab is down
        unused.bind((CLASS, 0))
        run["ports"]["students"] = unused.getsockname()[1]
    (ali / "run.json").write_text(json.dumps(run), encoding="utf-8")
    with pytest.raises(errors.LabError, match=f"Le lab de la classe ne répond pas à {CLASS}"):
        lab.start(config.Config(prenom="ali", state_dir=ali))
    with pytest.raises(errors.LabError, match="n'est pas un dossier de la classe"):
        lab.join(tmp_path)


@pytest.mark.parametrize("address", ["0.0.0.0", "::1", "224.0.0.1", "pas-une-adresse", "10.0.0.300", "203.0.113.10",
                                     "198.51.100.7", "10.255.254.253"])
def test_a_listening_address_a_client_cannot_use_is_refused_before_anything_starts(address, tmp_path):
    from labmail import config, lab

    with pytest.raises(errors.LabError, match="Adresse d'écoute"):
        lab.start(config.Config(state_dir=tmp_path / "state"), listen=address)
    assert not (tmp_path / "state").exists()


def test_the_command_wants_a_roster_with_an_address(tmp_path, monkeypatch):
    from labmail import cli

    assert cli.main(["lab", "start", "--adresse", "10.0.0.5"]) != 0


def test_the_lab_ca_certifies_a_class_address_outside_loopback(tmp_path):
    """On a real network the class lab's address is not in the lab's own ranges: its CA (name-constrained) must permit
    it, or every client would refuse the certificates; a CA that does not is replaced."""
    from cryptography import x509

    from labmail.lab.tls import LabCA

    first = LabCA(tmp_path).load_or_create()
    before = first.ca_path.read_bytes()
    ca = LabCA(tmp_path).load_or_create(listen="10.20.30.40")
    assert ca.ca_path.read_bytes() != before  # replaced: the old one could not certify 10.20.30.40
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(ca.leaf_pem("mailcow.labmail.cloud", "10.20.30.40"))
    out = subprocess.run(["openssl", "verify", "-CAfile", str(ca.ca_path), str(leaf)], capture_output=True, text=True)
    assert ": OK" in out.stdout, out.stdout + out.stderr
    other = tmp_path / "other.pem"
    other.write_bytes(ca.leaf_pem("mailcow.labmail.cloud", "10.20.30.41"))  # still nothing else
    out = subprocess.run(["openssl", "verify", "-CAfile", str(ca.ca_path), str(other)], capture_output=True, text=True)
    assert "permitted subtree violation" in out.stdout + out.stderr
    again = LabCA(tmp_path).load_or_create(listen="10.20.30.40")
    assert again.ca_path.read_bytes() == ca.ca_path.read_bytes()  # kept from then on (Thunderbird keeps trusting it)
    constraints = x509.load_pem_x509_certificate(again.ca_path.read_bytes()).extensions.get_extension_for_class(
        x509.NameConstraints).value
    assert any(isinstance(n, x509.IPAddress) and str(n.value) == "10.20.30.40/32" for n in constraints.permitted_subtrees)


def test_a_thunderbird_profile_made_from_a_students_folder_reaches_the_class_address(class_lab, tmp_path):
    from labmail import config, thunderbird

    folder = config.Config(prenom="zoe", state_dir=class_lab.state_dir / "classe" / "zoe")
    prefs = thunderbird.prefs(folder)
    assert prefs["network.dns.forceResolve"] == CLASS and "network.dns.localDomains" not in prefs
    run = json.loads((class_lab.state_dir / "run.json").read_text(encoding="utf-8"))
    assert f"993={run['ports']['mail:school:993']}" in prefs["network.socket.forcePort"]


def test_a_students_key_makes_the_spoofer_forge_their_own_domain_only_and_brings_their_own_reports(class_lab):
    """Step 11 in a class lab goes through the API with the student's key: the spoofer writes in the key's domain's
    name, to that student's mailboxes only; "end of the day" sends the providers' reports about that domain only."""
    from labmail import config, lab
    from labmail.dns import ZonePanel
    from labmail.errors import APIError
    from labmail.state import read_api_keys
    from labmail.world import current

    keys = read_api_keys(class_lab.state_dir)["domains"]
    ali = lab.class_api(keys["ali.labmail.cloud"], current(class_lab))
    for header_from, rcpt in (("direction@zoe.labmail.cloud", "ali@gmail.test"),  # another student's domain
                              ("direction@ali.labmail.cloud", "zoe@gmail.test"),  # another student's mailbox
                              ("direction@labmail.cloud", "ali@gmail.test")):  # the school's parent domain
        answer = ali.labmail("spoof", {"header_from": header_from, "rcpt": rcpt, "mail_from": "", "subject": "x",
                                       "body": "y"})
        assert answer[0]["type"] == "danger" and answer[0]["msg"] == ["access_denied"], (header_from, rcpt, answer)
    assert ali.labmail("spoof", {"header_from": ["x"], "rcpt": 5})[0]["msg"] == ["request_body_invalid"]
    # What the checks read must be what the message and the envelope carry (found by an outside review: the check
    # read the last "@" while smtplib sent to the first address of a list, and a line break added headers).
    for tricked in ({"header_from": "direction@zoe.labmail.cloud, x@ali.labmail.cloud",
                     "rcpt": "zoe@gmail.test,x@ali.labmail.cloud"},
                    {"header_from": "boss@zoe.labmail.cloud\r\nX: a@ali.labmail.cloud", "rcpt": "ali@gmail.test"},
                    {"header_from": "direction@ali.labmail.cloud", "rcpt": "<zoe@gmail.test> x@ali.labmail.cloud"},
                    {"header_from": "direction@ali.labmail.cloud", "rcpt": "ali@gmail.test",
                     "subject": "hi\r\nFrom: boss@zoe.labmail.cloud"}):
        assert ali.labmail("spoof", tricked)[0]["msg"] == ["request_body_invalid"], tricked
    assert ali.labmail("spoof", {"header_from": "direction@ali.labmail.cloud", "rcpt": "ali@gmail.test",
                                 "mail_from": "bounce@zoe.labmail.cloud"})[0]["msg"] == ["access_denied"]
    for method, path in (("GET", "own/targets"), ("GET", "domain/admins"), ("POST", "labmail")):
        with pytest.raises(APIError, match="404"):  # the API dispatches to its handlers only, never to a helper
            ali._call(method, path, {} if method == "POST" else None)
    with pytest.raises(errors.LabError, match="l'usurpateur n'écrit qu'au nom de votre domaine \\(ali.labmail.cloud\\)"):
        lab.spoof("direction@zoe.labmail.cloud", "ali@gmail.test",
                  config=config.Config(prenom="ali", state_dir=class_lab.state_dir / "classe" / "ali"))
    with pytest.raises(APIError, match="401"):
        lab.class_api("pas-une-cle", current(class_lab)).labmail("dmarc-reports", {"format": "7489"})

    zoe = config.Config(prenom="zoe", state_dir=class_lab.state_dir / "classe" / "zoe")
    panel = ZonePanel(world=current(zoe))
    published = [r.value for r in panel.list() if r.name == "_dmarc.zoe.labmail.cloud." and r.type == "TXT"]
    if not published:  # this test alone (-k): the course's steps 4, 5 and 11 did not run — what they leave, done here
        panel.add("@", "MX", "10 mailcow.labmail.cloud.")
        lab.add_mailbox("dmarc@zoe.labmail.cloud", "p" + secrets.token_urlsafe(12), config=zoe)
        panel.add("_dmarc", "TXT", "v=DMARC1; p=reject; rua=mailto:dmarc@zoe.labmail.cloud")
        published = ["v=DMARC1; p=reject"]
    status, reply = lab.spoof("direction@zoe.labmail.cloud", "zoe@gmail.test", subject="Virement", config=zoe)
    if "p=reject" in published[0]:
        assert status == "perm" and "5.7.26" in reply, (status, reply)  # Gmail refuses it under Zoé's p=reject
    else:
        assert status == "ok", (status, reply)  # p=quarantine: accepted, into Junk
    assert all(r["domain"] == "ali.labmail.cloud" for r in lab.send_dmarc_reports(
        config.Config(prenom="ali", state_dir=class_lab.state_dir / "classe" / "ali")))  # nothing about Zoé's domain
    sent = lab.send_dmarc_reports(zoe)
    assert sent and {r["domain"] for r in sent} == {"zoe.labmail.cloud"} and any(r["status"] == "ok" for r in sent), [(r["status"], r.get("reply")) for r in sent]


def test_the_same_lab_moves_to_another_address_with_its_ports_and_back(tmp_path_factory, world_template, monkeypatch):
    """An instructor's own lab becomes the class's (same state, same ports: the students' folders stay valid), and
    goes back to loopback with --adresse 127.0.0.1, which needs no roster."""
    from labs import private_lab

    from labmail import cli, lab

    with private_lab(tmp_path_factory, world_template, "moving") as (cfg, _passwords):
        before = lab.status(cfg)
        moved = lab.start(cfg, listen="127.0.0.4")
        assert moved.host == "127.0.0.4" and moved.pid != before.pid
        assert (moved.dns_port, moved.auth_port, moved.endpoints) == (before.dns_port, before.auth_port, before.endpoints)
        assert lab.start(cfg).host == "127.0.0.4"  # kept for the next starts
        with pytest.raises(errors.LabError, match="ce n'est pas une adresse de cette machine"):
            lab.start(cfg, listen="10.255.254.253")  # not this machine's: refused before the lab is touched
        assert lab.status(cfg).pid == moved.pid
        assert json.loads((cfg.state_dir / "world.json").read_text())["listen"] == "127.0.0.4"
        monkeypatch.setenv("LABMAIL_STATE_DIR", str(cfg.state_dir))
        assert cli.main(["lab", "start", "--adresse", "127.0.0.1"]) == 0
        assert lab.status(cfg).host == "127.0.0.1"


def test_two_students_ending_the_day_at_once_each_get_their_reports_once(class_lab):
    """« Fin de journée » asked by two students at the same moment: each gets the reports about their domain, and
    asking again sends nothing twice (the marker is read then written: two at once must not lose one)."""
    from concurrent.futures import ThreadPoolExecutor

    from labmail import config, lab
    from labmail.dns import ZonePanel
    from labmail.world import current

    folders = {label: config.Config(prenom=label, state_dir=class_lab.state_dir / "classe" / label)
               for label in ("zoe", "ali")}
    for label, cfg in folders.items():
        panel = ZonePanel(world=current(cfg))
        for record in [r for r in panel.list() if r.name == f"_dmarc.{label}.labmail.cloud." and r.type == "TXT"]:
            panel.delete("_dmarc", "TXT", record.value)
        panel.add("_dmarc", "TXT", f"v=DMARC1; p=none; rua=mailto:dmarc@{label}.labmail.cloud")
        lab.send_dmarc_reports(cfg)  # what was judged before this test is reported now, not below
        status, _reply = lab.spoof(f"direction@{label}.labmail.cloud", f"{label}@gmail.test", subject="Fin", config=cfg)
        assert status == "ok"
    with ThreadPoolExecutor(2) as pool:
        sent = dict(zip(folders, pool.map(lab.send_dmarc_reports, folders.values())))
    for label in folders:
        assert {r["domain"] for r in sent[label]} == {f"{label}.labmail.cloud"}, sent
        assert sum(r["messages"] for r in sent[label] if r["provider"] == "gmail") == 1, sent[label]
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(lab.send_dmarc_reports, folders.values()))
    assert again == [[], []], again  # nothing new: nothing sent twice


def test_one_students_loop_on_the_spoofer_is_held_back_not_everyones_mail(class_lab, monkeypatch):
    """The class lab is shared: a key that asks the lab's own endpoints more than 20 times a minute is refused for a
    while (429, said in French), and only that key."""
    from labmail import config, lab
    from labmail.state import read_api_keys
    from labmail.world import current

    keys = read_api_keys(class_lab.state_dir)["domains"]
    ali = lab.class_api(keys["ali.labmail.cloud"], current(class_lab))
    bad = {"header_from": "pas une adresse", "rcpt": "ali@gmail.test"}  # refused at once: no mail sent
    from labmail.errors import APIError

    with pytest.raises(APIError, match="429"):  # this module's other tests asked with Ali's key too: ≤ 20 more
        for _ in range(21):
            assert ali.labmail("spoof", bad)[0]["msg"] == ["request_body_invalid"]
    with pytest.raises(errors.LabError, match="Le lab de la classe est partagé : vous avez demandé l'usurpateur"):
        lab.spoof("direction@ali.labmail.cloud", "ali@gmail.test",
                  config=config.Config(prenom="ali", state_dir=class_lab.state_dir / "classe" / "ali"))
    zoe = lab.class_api(keys["zoe.labmail.cloud"], current(class_lab))
    assert zoe.labmail("spoof", bad)[0]["msg"] == ["request_body_invalid"]  # Zoé is not held back


def test_on_a_network_address_a_user_of_the_same_machine_locks_only_themselves_out(tmp_path_factory, world_template):
    """A class lab on a network address: the students of one shared machine (JupyterHub's LocalProcessSpawner) all
    come from that machine's address, so the password guard tells them apart by local user, as on loopback — a
    classmate guessing Tintin's password locks themselves out, never Tintin (an outside review found the owner locked:
    the guard looked up local users on loopback only). The address, 10.77.0.1, is added to lo by the test: no packet
    leaves the machine."""
    import pwd

    from labs import private_lab
    from test_security import GUESSER

    from labmail import lab

    if os.getuid() != 0 or not shutil.which("ip") or not os.path.exists("/usr/bin/python3"):
        if os.environ.get("CI"):
            pytest.fail("CI must run the guard on a network address (as root, with ip and /usr/bin/python3)", pytrace=False)
        pytest.skip("needs root (an address on lo, a guesser running as nobody), ip and /usr/bin/python3")
    address = "10.77.0.1"
    added = subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True)
    assert added.returncode == 0, added.stderr
    try:
        tintin = "tintin@jean-emile.labmail.cloud"
        with private_lab(tmp_path_factory, world_template, "guard-net", addresses=(tintin,), listen=address) as running:
            cfg, passwords = running
            port = lab.status(cfg).endpoints["203.0.113.10:993"]
            nobody = pwd.getpwnam("nobody")

            def attempt(password: str, *, guesser: bool) -> str:
                kwargs = dict(user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[]) if guesser else {}
                out = subprocess.run(["/usr/bin/python3", "-c", GUESSER, "IMAP", address, str(port), tintin, password],
                                     capture_output=True, text=True, timeout=60, cwd="/", **kwargs)
                assert out.returncode == 0, out.stderr
                return out.stdout.strip()

            assert attempt(passwords[tintin], guesser=False) == "ok"
            assert all(attempt(f"devine-{i}", guesser=True) != "ok" for i in range(5))
            assert "account locked" in attempt(passwords[tintin], guesser=True)  # the guesser, even with the password
            assert attempt(passwords[tintin], guesser=False) == "ok"  # Tintin, from the same address, is not locked
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)
