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
from labmail.world import current

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
        validator = Draft202012Validator(response["schema"])
        assert isinstance(answer, list) and answer, f"{path}: {answer!r}"
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
    methods = {name for name in vars(mail.MailcowAPI) if not name.startswith("_") and callable(getattr(mail.MailcowAPI, name))
               and name not in ("raise_for",)}
    called = {path.split("/")[3] + "/" + path.split("/")[4] for _m, path, _p, _a in recorded}
    assert called == {"get/domain", "add/mailbox", "get/mailbox", "get/dkim", "delete/mailbox"}, called
    assert methods == {"get_domain", "add_mailbox", "get_mailbox", "get_dkim", "delete_mailbox"}, "a new method: test it here"
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
