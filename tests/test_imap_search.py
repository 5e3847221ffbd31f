"""IMAP SEARCH reads messages off the reactor: one user's SEARCH BODY over big messages does not make every other IMAP
session of the lab wait (the outside review saw another user's NOOP wait 2 s; measured here before the fix: 1 s for a
mailbox of five 20 MB messages). And it still finds what it must (same filter as Twisted's)."""

from __future__ import annotations

import imaplib
import json
import ssl
import threading
import time

import pytest

from labs import private_lab

ALICE, BOB = "search-a@jean-emile.labmail.cloud", "search-b@jean-emile.labmail.cloud"


@pytest.fixture(scope="module")
def search_lab(tmp_path_factory, world_template):
    with private_lab(tmp_path_factory, world_template, "search", addresses=(ALICE, BOB)) as running:
        yield running


def _client(cfg, address: str, password: str) -> imaplib.IMAP4_SSL:
    port = json.loads((cfg.state_dir / "run.json").read_text())["ports"]["mail:school:993"]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # TLS itself is tested elsewhere
    client = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=60)
    client.login(address, password)
    return client


def test_a_long_search_does_not_hold_other_users_up_and_finds_what_it_must(search_lab):
    cfg, passwords = search_lab
    alice = _client(cfg, ALICE, passwords[ALICE])
    line = b"lorem ipsum dolor sit amet consectetur " * 25 + b"\r\n"
    for i in range(3):  # three messages of ~12 MB: the first SEARCH BODY reads and parses each
        body = line * (12 * 1024 * 1024 // len(line)) + (b"aiguille unique\r\n" if i == 1 else b"")
        assert alice.append("INBOX", None, None, b"From: a@b.example\r\nSubject: gros " + str(i).encode() +
                            b"\r\n\r\n" + body)[0] == "OK"
    assert alice.append("INBOX", None, None, b"From: a@b.example\r\nSubject: petit\r\n\r\nune aiguille\r\n")[0] == "OK"
    alice.select("INBOX")
    bob = _client(cfg, BOB, passwords[BOB])
    bob.select("INBOX")
    done: dict[str, float] = {}
    found: list = []

    def search() -> None:
        found.append(alice.search(None, 'BODY "aiguille"'))
        done["search"] = time.monotonic()

    worker = threading.Thread(target=search)
    worker.start()
    time.sleep(0.05)  # the SEARCH is on its way
    assert bob.noop()[0] == "OK"
    done["noop"] = time.monotonic()
    worker.join(120)
    assert done["noop"] < done["search"], done  # bob was answered while alice's search was still running
    typ, data = found[0]
    assert typ == "OK" and data[0].split() == [b"2", b"4"], found  # the big one with the word, and the small one
    typ, data = alice.search(None, 'TEXT "aiguille unique"')
    assert typ == "OK" and data[0].split() == [b"2"]
    assert alice.search(None, 'BODY "absent-partout"')[1] == [b""]
    alice.logout()
    bob.logout()
