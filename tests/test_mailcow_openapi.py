"""Mailcow API conformance: every request ``labmail.mail.MailcowAPI`` sends and every answer the lab's
Mailcow-compatible API gives, validated against Mailcow's own OpenAPI description (tests/vendor/mailcow, with its
licence and commit): paths and methods, request bodies (JSON Schema 2020-12, as OpenAPI 3.1 says), the
``type: success|danger|error`` envelopes, the 401 answer, and the fields and JSON types of the GET answers (the
description gives examples there, not schemas) — the DKIM answer's included.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator
from labs import private_lab, use_lab

from labmail import mail
from labmail.world import api_key, current

SPEC = yaml.safe_load((Path(__file__).parent / "vendor" / "mailcow" / "openapi.yaml").read_text(encoding="utf-8"))
DOMAIN = "jean-emile.labmail.cloud"

# Where the description and Mailcow differ, the test says how it reads the description (see vendor/mailcow/SOURCE.md).
QUIRKS = {
    "path ids": "path parameters list examples as enums (all, mailcow.tld, user@domain.tld): any value is taken",
    "POST answers": "described as one {type, log, msg} object; the examples and Mailcow answer a list of them",
    "delete/mailbox body": "described as an object; its example (and Mailcow's code) is the list of addresses",
}


def _route(method: str, path: str) -> tuple[str, dict]:
    """The description's operation for ``method path`` (a template's {parameter} matches one path segment)."""
    for template, operations in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return template, operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in Mailcow's API description")


def _example(operation: dict):
    return operation["responses"]["200"]["content"]["application/json"]["examples"]["response"]["value"]


def _json_type(value) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object",
            type(None): "null"}[type(value)]


def _like_example(answer: dict, example: dict, where: str) -> None:
    """Every field labmail gives is one the description's example has, with the same JSON type."""
    for key, value in answer.items():
        assert key in example, f"{where}: field {key!r} is not in Mailcow's example ({sorted(example)})"
        assert _json_type(value) == _json_type(example[key]), \
            f"{where}: {key} is {_json_type(value)} ({value!r}), Mailcow's example has {_json_type(example[key])}"


def check_request(method: str, path: str, payload) -> dict:
    template, operation = _route(method, path)
    if payload is not None:
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if template == "/api/v1/delete/mailbox":  # QUIRKS["delete/mailbox body"]
            assert isinstance(payload, list) and all(isinstance(a, str) for a in payload), payload
            assert isinstance(schema["example"], list)
        else:
            errors = sorted(Draft202012Validator({k: v for k, v in schema.items() if k != "example"}).iter_errors(payload),
                            key=str)
            assert not errors, f"{method} {path}: " + "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    return operation


def check_answer(method: str, path: str, answer) -> None:
    template, operation = _route(method, path)
    response = operation["responses"]["200"]["content"]["application/json"]
    if "schema" in response:  # POST: the envelope — QUIRKS["POST answers"]: a list of envelopes
        assert isinstance(answer, list) and answer, f"{path}: {answer!r}"
        if response["schema"].get("type") == "array":  # add/domain describes the list itself
            errors = list(Draft202012Validator(response["schema"]).iter_errors(answer))
            assert not errors, f"{path}: {answer!r}: {errors}"
        validator = Draft202012Validator(response["schema"].get("items", response["schema"]))
        for item in answer:
            errors = list(validator.iter_errors(item))
            assert not errors and item["type"] in ("success", "danger", "error"), f"{path}: {item!r}: {errors}"
            assert isinstance(item["msg"], list) and isinstance(item["log"], list)
        return
    example = _example(operation)
    if isinstance(answer, dict) and not answer:
        return  # Mailcow answers {} for what the key may not see, or what does not exist
    items = answer if isinstance(answer, list) else [answer]
    model = example[0] if isinstance(example, list) else example
    for item in items:
        _like_example(item, model, f"{method} {template}")


@pytest.fixture(scope="module")
def api_lab(tmp_path_factory, world_template):
    with private_lab(tmp_path_factory, world_template, "mailcowapi") as running:
        yield running


@pytest.fixture
def recorded(api_lab, monkeypatch):
    """Every MailcowAPI call of the test: (method, full path, payload, decoded answer)."""
    use_lab(monkeypatch, api_lab[0])
    calls = []
    original = mail.MailcowAPI._call

    def spy(self, method, path, payload=None):
        answer = original(self, method, path, payload)
        calls.append((method, f"/api/v1/{path}", payload, answer))
        return answer

    monkeypatch.setattr(mail.MailcowAPI, "_call", spy)
    return calls


def test_the_description_is_the_vendored_mailcow_one():
    assert SPEC["openapi"].startswith("3.1") and SPEC["info"]["title"] == "mailcow API"
    assert "06424670fa5d60fee851f58bfc49f66086d5f0a6" in (Path(__file__).parent / "vendor/mailcow/SOURCE.md").read_text()
    assert SPEC["components"]["securitySchemes"]["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}


def test_every_mailcowapi_call_and_every_answer_match_mailcows_description(recorded):
    from labmail import lab

    api = mail.MailcowAPI(key=lab.api_key())
    password = "p" + secrets.token_urlsafe(12)
    api.get_domain()
    api.get_domain(DOMAIN)
    api.add_mailbox("tintin", DOMAIN, password, name="Tintin")
    api.add_mailbox("tintin", DOMAIN, password)  # exists: a "danger" envelope
    api.add_mailbox("haddock", "ailleurs.example", password)  # not our domain
    api.add_mailbox("milou", DOMAIN, "court")  # too short
    api.get_mailbox(f"tintin@{DOMAIN}")
    api.get_mailbox("all", domain=DOMAIN)
    api.get_mailbox("all")
    api.get_dkim(DOMAIN)
    api.delete_mailbox(f"tintin@{DOMAIN}", f"personne@{DOMAIN}")
    admin = mail.MailcowAPI(key=api_key(admin=True))  # the instructor's set-up (labmail provision-live --mailcow)
    admin.add_domain("nouveau.labmail.cloud", description="labmail : nouveau")
    admin.add_domain(DOMAIN)  # exists
    admin.add_domain("ailleurs.example")  # not a domain of the class
    admin.add_dkim("nouveau.labmail.cloud")  # made with the domain: exists
    admin.delete_dkim("nouveau.labmail.cloud")  # the lab keeps its keys: refused
    admin.add_domain_admin("nouveau", password, "nouveau.labmail.cloud")
    admin.add_domain_admin("nouveau", password, "nouveau.labmail.cloud")  # exists
    admin.get_domain_admins()
    api.add_domain("autre.labmail.cloud")  # a student's key: refused
    methods = {name for name in vars(mail.MailcowAPI) if not name.startswith("_") and callable(getattr(mail.MailcowAPI, name))
               and name not in ("raise_for", "at")}
    called = {path.split("/")[3] + "/" + path.split("/")[4] for _m, path, _p, _a in recorded}
    assert called == {"get/domain", "add/mailbox", "get/mailbox", "get/dkim", "delete/mailbox", "add/domain", "add/dkim",
                      "delete/dkim", "add/domain-admin", "get/domain-admin"}, called
    assert methods == {"get_domain", "add_mailbox", "get_mailbox", "get_dkim", "delete_mailbox", "add_domain", "add_dkim",
                       "delete_dkim", "add_domain_admin", "get_domain_admins"}, "a new method: test it here"
    by_path = {}
    for _m, path, _p, answer in recorded:
        by_path.setdefault(path, []).append(answer)
    assert [a[0]["msg"][0] for a in by_path["/api/v1/add/domain"]] == ["domain_added", "domain_exists", "domain_invalid",
                                                                     "access_denied"]
    assert [a[0]["msg"][0] for a in by_path["/api/v1/add/domain-admin"]] == ["domain_admin_added", "object_exists"]
    assert any(a["username"] == "nouveau" and a["selected_domains"] == ["nouveau.labmail.cloud"]
               for a in by_path["/api/v1/get/domain-admin/all"][0])
    assert all("supersecret" not in json.dumps(a) and password not in json.dumps(a) for a in by_path["/api/v1/add/domain-admin"])
    types = set()
    for method, path, payload, answer in recorded:
        check_request(method, path, payload)
        check_answer(method, path, answer)
        if isinstance(answer, list) and answer and "type" in answer[0]:
            types |= {item["type"] for item in answer}
    assert types == {"success", "danger"}
    dkim = next(a for _m, p, _pl, a in recorded if "/get/dkim/" in p)
    assert set(dkim) == set(_example(_route("GET", "/api/v1/get/dkim/x")[1])), dkim  # every field of the DKIM answer
    assert dkim["dkim_selector"] == "dkim" and dkim["length"] == "2048" and dkim["dkim_txt"].endswith(dkim["pubkey"])


def test_the_labs_refusals_are_mailcows(api_lab, monkeypatch):
    """401 without a valid key, the error envelope for a body that is not JSON, and the route's method (Mailcow's
    own messages), each as the description shapes them."""
    import ssl
    import urllib.error
    import urllib.request

    use_lab(monkeypatch, api_lab[0])
    world = current()
    host, port = world.connect_address("mailcow.labmail.cloud", 443)
    context = ssl.create_default_context(cafile=world.ca_file)
    context.check_hostname = False

    def call(method, path, body=None, key="pas-une-cle"):
        request = urllib.request.Request(f"https://{host}:{port}{path}", data=body, method=method,
                                         headers={"X-API-Key": key, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    status, answer = call("GET", "/api/v1/get/domain/all")
    unauthorized = SPEC["components"]["responses"]["Unauthorized"]["content"]["application/json"]["schema"]
    assert status == 401 and not list(Draft202012Validator(unauthorized).iter_errors(answer)), answer
    from labmail import lab

    key = lab.api_key()
    status, answer = call("POST", "/api/v1/add/mailbox", b"{pas du json", key=key)
    assert status == 200
    check_answer("POST", "/api/v1/add/mailbox", answer if isinstance(answer, list) else [answer])
    admin = api_key(admin=True)
    for path, body in [("add/domain-admin", {"username": 7, "password": None, "domains": 3}),
                       ("add/domain-admin", {"username": "x y", "password": "a", "password2": "a", "domains": "z"}),
                       ("add/domain-admin", {"username": "ok", "password": "a", "password2": "b", "domains": []}),
                       ("add/domain-admin", {"username": "ok", "password": "a", "password2": "a", "domains": {"a": 1}}),
                       ("add/domain-admin", ["liste"]), ("add/domain", {"domain": ["x"]}),
                       ("add/domain", {"domain": "a.b." + "c" * 300}), ("add/dkim", {"domains": 5}),
                       ("delete/dkim", {"pas": "une liste"})]:
        status, answer = call("POST", f"/api/v1/{path}", json.dumps(body).encode(), key=admin)
        assert status == 200 and answer[0]["type"] in ("danger", "error"), (path, body, answer)  # refused, said
        check_answer("POST", f"/api/v1/{path}", answer)


def test_provision_live_makes_each_students_mailcow_domain_and_login_through_the_api(recorded, tmp_path, capsys):
    """labmail provision-live --mailcow against the lab's Mailcow-compatible API: a dry run only reads; the run
    creates the missing domain (DKIM dkim, 2048 bits) and one domain administrator per student whose password is
    in the student's 0600 file before the call; a re-run changes nothing; every request and answer is Mailcow's."""
    import stat
    import tomllib

    from labmail import cli
    from labmail.lab.mailstore import check_password
    from labmail.liveclass import provision_live
    from labmail.world import current as world_now

    roster = tmp_path / "classe.csv"
    roster.write_text("prenom,nom\nAnne-Sophie,Martin\nJean-Émile,Dupont\n", encoding="utf-8")  # jean-emile: in the lab
    out = tmp_path / "classe-live"
    key = api_key(admin=True)
    admin = mail.MailcowAPI(key=key)
    dry = provision_live(roster, out, mailcow=admin, dry_run=True)
    assert not out.exists() and all(method == "GET" for method, *_ in recorded)
    assert dry.mailcow == ["add/domain anne-sophie.labmail.cloud (DKIM dkim, 2048 bits)",
                           "add/domain-admin anne-sophie (anne-sophie.labmail.cloud)",
                           "add/domain-admin jean-emile (jean-emile.labmail.cloud)"]
    key_file = tmp_path / "cle-admin"
    key_file.write_text(key + "\n")
    key_file.chmod(0o644)
    args = ["provision-live", str(roster), "--dossier", str(out), "--mailcow", "mailcow.labmail.cloud",
            "--mailcow-cle-fichier", str(key_file)]
    assert cli.main(args) == 2 and "chmod 600" in capsys.readouterr().err  # a key file others can read: refused
    key_file.chmod(0o600)
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "fait : add/domain anne-sophie.labmail.cloud" in printed and key not in printed
    dkim = admin.get_dkim("anne-sophie.labmail.cloud")
    assert dkim["dkim_selector"] == "dkim" and dkim["length"] == "2048"
    assert "anne-sophie.labmail.cloud" in {d["domain_name"] for d in admin.get_domain()}
    logins = {}
    for label in ("anne-sophie", "jean-emile"):
        path = out / "etudiants" / label / "credentials.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        logins[label] = json.loads(path.read_text())
        assert logins[label]["mailcow_user"] == label and len(logins[label]["mailcow_password"]) >= 20
        assert logins[label]["dkim_txt"] == admin.get_dkim(f"{label}.labmail.cloud")["dkim_txt"]  # for step 10
        settings = tomllib.loads((out / "etudiants" / label / "config.toml").read_text(encoding="utf-8"))
        assert settings["credentials_file"] == "~/.config/labmail/credentials.json"
        assert settings["mail_host"] == "mailcow.labmail.cloud" and settings["world"] == "live"
    admins = {a["username"]: a for a in admin.get_domain_admins()}
    assert admins["anne-sophie"]["selected_domains"] == ["anne-sophie.labmail.cloud"]
    stored = json.loads(world_now().config.state_dir.joinpath("keys", "domain-admins.json").read_text())
    assert check_password(logins["anne-sophie"]["mailcow_password"], stored["anne-sophie"]["password"])
    assert logins["anne-sophie"]["mailcow_password"] not in json.dumps(stored)  # hashed, never kept in clear
    everything = "".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert key not in everything  # the administrator key is written nowhere
    again = provision_live(roster, out, mailcow=admin)
    assert again.mailcow == [] and again.kept == ["anne-sophie", "jean-emile"]
    assert {label: json.loads((out / "etudiants" / label / "credentials.json").read_text()) for label in logins} == logins
    assert "Mailcow (mailcow.labmail.cloud) : fait par cette commande" in (out / "CHECKLIST.md").read_text()
    for method, path, payload, answer in recorded:
        check_request(method, path, payload)
        check_answer(method, path, answer)


def test_one_domain_asked_twice_at_once_is_created_once(api_lab, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    use_lab(monkeypatch, api_lab[0])
    admin = mail.MailcowAPI(key=api_key(admin=True))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _i: admin.add_domain("double.labmail.cloud"), range(2)))
    assert sorted(a[0]["msg"][0] for a in answers) == ["domain_added", "domain_exists"]
    assert [d["domain_name"] for d in admin.get_domain()].count("double.labmail.cloud") == 1
