"""The lab's mail store: hashed passwords, the auth cache, Maildir folders, atomic delivery with records."""

from __future__ import annotations

import json
import stat

import pytest

from labmail.errors import LabError
from labmail.lab.mailstore import MailStore, check_password, hash_password


@pytest.fixture
def store(tmp_path):
    s = MailStore(tmp_path / "mail")
    s.load()
    return s


def test_passwords_are_hashed_never_stored(store, tmp_path):
    store.add_mailbox("tintin@alice.test", "motdepasse-tintin", name="Tintin")
    text = (tmp_path / "mail" / "accounts.json").read_text()
    assert "motdepasse-tintin" not in text and '"password": "scrypt$' in text
    assert stat.S_IMODE((tmp_path / "mail" / "accounts.json").stat().st_mode) == 0o600
    assert check_password("motdepasse-tintin", hash_password("motdepasse-tintin"))
    assert not check_password("autre", hash_password("motdepasse-tintin"))
    assert not check_password("x", "garbage")


def test_authenticate_and_its_cache(store):
    store.add_mailbox("tintin@alice.test", "motdepasse-tintin")
    assert store.authenticate("Tintin@Alice.test", "motdepasse-tintin").address == "tintin@alice.test"
    assert store.authenticate("tintin@alice.test", "motdepasse-tintin") is not None  # from the cache
    assert store.authenticate("tintin@alice.test", "mauvais-mot") is None  # the cache never accepts another password
    assert store.authenticate("nobody@alice.test", "motdepasse-tintin") is None
    store.delete_mailbox("tintin@alice.test")
    assert store.authenticate("tintin@alice.test", "motdepasse-tintin") is None


@pytest.mark.parametrize("address,password,message", [
    ("tintin@alice.test", "court", "trop court"), ("Tin tin@alice.test", "motdepasse-long", "invalide"),
    ("@alice.test", "motdepasse-long", "invalide"),
    ("tintin\n@alice.test", "motdepasse-long", "invalide"),  # a "$"-anchored pattern used to accept a final line feed
])
def test_bad_mailboxes(store, address, password, message):
    with pytest.raises(LabError, match=message):
        store.add_mailbox(address, password)


def test_duplicate_mailbox(store):
    store.add_mailbox("tintin@alice.test", "motdepasse-tintin")
    with pytest.raises(LabError, match="existe déjà"):
        store.add_mailbox("TINTIN@alice.test", "motdepasse-tintin")


def test_delivery_folders_and_records(store):
    store.add_mailbox("milou@alice.test", "motdepasse-milou")
    box = store.maildir("milou@alice.test")
    assert sorted(box.list_folders()) == ["Junk", "Sent", "Trash"]
    seen = []
    store.on_deliver = lambda address, folder: seen.append((address, folder))
    key = store.deliver("milou@alice.test", b"Subject: un\r\n\r\nx\r\n", record={"verdict": {"folder": "INBOX"}})
    junk = store.deliver("milou@alice.test", b"Subject: deux\r\n\r\ny\r\n", folder="Junk")
    assert [k for k, _ in store.messages("milou@alice.test")] == [key]
    assert [k for k, _ in store.messages("milou@alice.test", "Junk")] == [junk]
    record = store.record("milou@alice.test", key)
    assert record["key"] == key and record["folder"] == "INBOX" and record["mailbox"] == "milou@alice.test"
    assert store.record("milou@alice.test", junk) is None
    assert seen == [("milou@alice.test", "INBOX"), ("milou@alice.test", "Junk")]
    assert json.loads((store.root / "accounts.json").read_text())["milou@alice.test"]["domain"] == "alice.test"


def test_the_same_delivery_twice_is_stored_once(store):
    store.add_mailbox("milou@jean.labmail.cloud", "un-mot-de-passe")
    first = store.deliver("milou@jean.labmail.cloud", b"Subject: un\r\n\r\nx\r\n", dedupe="ab" * 32, record={"n": 1})
    again = store.deliver("milou@jean.labmail.cloud", b"Subject: un\r\n\r\nx\r\n", dedupe="ab" * 32, record={"n": 2})
    other = store.deliver("milou@jean.labmail.cloud", b"Subject: un\r\n\r\nx\r\n", dedupe="cd" * 32)
    assert first == again != other
    assert len(store.messages("milou@jean.labmail.cloud")) == 2
    assert store.record("milou@jean.labmail.cloud", first)["n"] == 1  # the first delivery's record stays


def test_a_guessed_password_locks_the_account_for_every_protocol(store):
    from labmail.lab.guard import AccountLocked

    store.add_mailbox("tintin@jean.labmail.cloud", "le-bon-mot-de-passe")
    for attempt in range(5):
        assert store.authenticate("tintin@jean.labmail.cloud", f"essai-{attempt}", "IMAP") is None
    with pytest.raises(AccountLocked, match="Trop d'échecs de connexion pour tintin@jean.labmail.cloud : compte bloqué 5 min"):
        store.authenticate("tintin@jean.labmail.cloud", "le-bon-mot-de-passe", "SMTP")
    store.guard.clock = lambda: 10**9  # five minutes later (and more)
    assert store.authenticate("tintin@jean.labmail.cloud", "le-bon-mot-de-passe", "SMTP") is not None


def test_the_same_delivery_arriving_twice_at_once_is_stored_once_and_others_are_not_held_up(store, monkeypatch):
    """A delivery is written outside the store's lock (its fsync does not hold up other mailboxes); a second copy
    of the same delivery arriving meanwhile waits for the first and gets its key; if the first fails (disk full),
    the second stores it."""
    import threading

    from labmail.lab import mailstore

    store.add_mailbox("milou@jean.labmail.cloud", "un-mot-de-passe")
    store.add_mailbox("tintin@jean.labmail.cloud", "un-mot-de-passe")
    writing, release = threading.Event(), threading.Event()
    real, calls = mailstore._write_durably, []

    def slow(tmp, final, data):
        calls.append(final)
        if len(calls) == 1:
            writing.set()
            assert release.wait(10)
            raise OSError(28, "No space left on device")
        real(tmp, final, data)

    monkeypatch.setattr(mailstore, "_write_durably", slow)
    outcomes: dict[str, object] = {}

    def deliver(name: str, address: str, digest: str) -> None:
        try:
            outcomes[name] = store.deliver(address, b"Subject: un\r\n\r\nx\r\n", dedupe=digest)
        except OSError as exc:
            outcomes[name] = exc

    first = threading.Thread(target=deliver, args=("first", "milou@jean.labmail.cloud", "ab" * 32))
    first.start()
    assert writing.wait(10)
    second = threading.Thread(target=deliver, args=("second", "milou@jean.labmail.cloud", "ab" * 32))
    second.start()
    deliver("other", "tintin@jean.labmail.cloud", "cd" * 32)  # not held up by the first one's write
    assert isinstance(outcomes["other"], str)
    assert "second" not in outcomes  # waiting for the first
    release.set()
    first.join(10)
    second.join(10)
    assert isinstance(outcomes["first"], OSError) and isinstance(outcomes["second"], str)
    assert len(store.messages("milou@jean.labmail.cloud")) == 1
    assert not any((store.root / "jean.labmail.cloud" / "milou" / "Maildir" / "tmp").iterdir())  # nothing half-stored
    again = store.deliver("milou@jean.labmail.cloud", b"Subject: un\r\n\r\nx\r\n", dedupe="ab" * 32)
    assert again == outcomes["second"] and len(store.messages("milou@jean.labmail.cloud")) == 1
