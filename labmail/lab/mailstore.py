"""Mailboxes of the lab: accounts with hashed passwords, Maildir++ folders, atomic delivery.

Layout under ``<state>/mail/``::

    accounts.json                         address → name, domain, scrypt hash (0600, atomic writes)
    <domain>/<local>/Maildir/             INBOX (cur/new/tmp) and .Sent .Junk .Trash (Maildir++)
    <domain>/<local>/records/<key>.json   how the receiving server saw each delivered message

A delivered message is never altered by its record: the record (SMTP dialogue, client address and PTR,
each check with its trace) sits beside it, keyed by the Maildir key, for later replays.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import mailbox
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .._files import atomic_write_text, unlink_quietly, write_all
from ..errors import LabError
from .guard import AccountLocked, LoginGuard  # noqa: F401 - AccountLocked is re-exported for the protocols

FOLDERS = ("Sent", "Junk", "Trash")
#: The largest message a mailbox takes, by SMTP (SIZE, 552 5.3.4) or IMAP APPEND (APPENDLIMIT): 25 MiB, as Gmail.
MAX_MESSAGE_SIZE = 25 * 1024 * 1024
_LOCAL_RE = re.compile(r"[a-z0-9](?:[a-z0-9._+-]{0,62}[a-z0-9])?")  # .fullmatch only
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


# At most one scrypt per core at a time, whichever thread asks (SMTP, IMAP, POP3, the API): 16 MiB and ~50 ms of
# CPU each, so a burst of logins queues here instead of thrashing the machine.
_HASHING = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def hash_password(password: str) -> str:
    """scrypt hash in a self-describing string (never the password itself)."""
    salt = secrets.token_bytes(16)
    with _HASHING:
        digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        with _HASHING:
            computed = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), dklen=32, n=int(n),
                                      r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


@dataclass(frozen=True)
class Account:
    address: str
    domain: str
    name: str
    password: str  # scrypt hash
    active: bool = True
    quota_mib: int = 3072

    def public(self) -> dict:
        data = asdict(self)
        data.pop("password")
        return data


def _write_durably(tmp: str, final: str, data: bytes) -> None:
    """A Maildir delivery: ``tmp`` written and fsynced, then renamed to ``final`` (tmp/ and new/ on the same file
    system: atomic); nothing left in tmp/ if a write fails (disk full…). Through the descriptor, no file object."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)  # as mailbox.add: umask applies
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    except OSError:
        unlink_quietly(tmp)
        raise


class MailStore:
    """Accounts and Maildirs; safe to use from several threads (one lock around account changes)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "accounts.json"
        self._lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.on_deliver = None  # called with (address, folder) after each delivery (IMAP pushes EXISTS)
        # Like Dovecot's auth cache: a successful login is remembered for a few minutes as a keyed hash of the
        # password (never the password), so that a client's repeated logins do not each cost a scrypt.
        self._auth_cache: dict[str, tuple[bytes, float]] = {}
        self._cache_key = secrets.token_bytes(32)
        self.guard = LoginGuard()  # password guessing: an account that fails too often is locked for a while
        self._ready: set[str] = set()  # Maildir folders known to exist with their siblings (made once)
        self._usage: dict[str, tuple[float, int, int]] = {}  # address → (when counted, messages, bytes)
        self._dedupe: dict[str, dict[str, str]] = {}  # folder path → delivery digest → Maildir key
        # (folder path, digest) → set when that delivery is written (or failed): written outside the lock, so that
        # one delivery's fsync does not hold up every other mailbox's
        self._storing: dict[tuple[str, str], threading.Event] = {}

    def load(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        self.accounts = {a: Account(**v) for a, v in data.items()}

    def _save(self) -> None:
        # vars(), not asdict(): the fields are plain values, and asdict's deep copy was most of the cost of
        # rewriting the file of a class (1,200 accounts: 9 ms → 4 ms per new mailbox)
        payload = {a: vars(acc) for a, acc in sorted(self.accounts.items())}
        atomic_write_text(self.path, json.dumps(payload, indent=2) + "\n", mode=0o600)

    # -- accounts -------------------------------------------------------------
    def add_mailbox(self, address: str, password: str, *, name: str = "", quota_mib: int = 3072) -> Account:
        address = address.strip().lower()
        local, _, domain = address.partition("@")
        if not _LOCAL_RE.fullmatch(local) or not domain:
            raise LabError(f"Adresse « {address} » invalide : partie locale en lettres, chiffres, . _ + - (ex. tintin@…).",
                           f"Invalid address \"{address}\": local part of letters, digits, . _ + - (e.g. tintin@…).")
        if len(password) < 8:
            raise LabError("Mot de passe trop court : 8 caractères au moins.", "Password too short: at least 8 characters.")
        if address in self.accounts:
            raise LabError(f"La boîte {address} existe déjà.", f"Mailbox {address} already exists.")
        hashed = hash_password(password)  # outside the lock: two mailboxes of a class are hashed at once
        with self._lock:
            if address in self.accounts:  # created meanwhile by another request
                raise LabError(f"La boîte {address} existe déjà.", f"Mailbox {address} already exists.")
            account = Account(address, domain, name or local, hashed, True, quota_mib)
            self.accounts[address] = account
            self._save()
            # The password was just checked and hashed: like a successful login, remember it a few minutes (keyed
            # hash, memory only), so that the first logins of a new mailbox — a student configuring their client
            # right away — do not each cost another scrypt.
            self._remember(address, password)
        self.maildir(address)
        return account

    def delete_mailbox(self, address: str) -> None:
        with self._lock:
            self._auth_cache.pop(address.lower(), None)
            if self.accounts.pop(address.lower(), None) is None:
                raise LabError(f"Pas de boîte {address}.", f"No mailbox {address}.")
            self._save()

    def authenticate(self, address: str, password: str, protocol: str = "login", client: str = "?") -> Account | None:
        """The account if ``password`` is right, else None (the failure is counted and logged). Raises
        :class:`AccountLocked` — even for the right password — while ``client`` (see :func:`guard.client_of`) is locked
        out of the account after repeated failures."""
        address = address.strip().lower()
        self.guard.check(address, client)
        account = self.accounts.get(address)
        if account is None or not account.active:
            check_password(password, hash_password("decoy-password"))  # same time either way
            self.guard.failed(address, protocol, client)
            return None
        digest = hmac.new(self._cache_key, password.encode("utf-8"), hashlib.sha256).digest()
        cached = self._auth_cache.get(address)
        if cached is not None and cached[1] > time.monotonic() and hmac.compare_digest(cached[0], digest):
            self.guard.succeeded(address, client)
            return account
        if not check_password(password, account.password):
            self.guard.failed(address, protocol, client)
            return None
        self._auth_cache[address] = (digest, time.monotonic() + 300)
        self.guard.succeeded(address, client)
        return account

    def _remember(self, address: str, password: str) -> None:
        digest = hmac.new(self._cache_key, password.encode("utf-8"), hashlib.sha256).digest()
        self._auth_cache[address] = (digest, time.monotonic() + 300)

    def mailboxes(self, domain: str | None = None) -> list[Account]:
        return [a for a in self.accounts.values() if domain is None or a.domain == domain.lower()]

    # -- Maildir --------------------------------------------------------------
    def _base(self, address: str) -> Path:
        local, _, domain = address.lower().partition("@")
        return self.root / domain / local

    def maildir(self, address: str, folder: str = "INBOX") -> mailbox.Maildir:
        base = self._base(address) / "Maildir"
        path = base if folder == "INBOX" else base / f".{folder}"
        if (str(path)) in self._ready and os.path.isdir(path / "tmp"):  # made before: one stat, no mkdir nor listing
            return mailbox.Maildir(path, create=False)
        base.parent.mkdir(parents=True, exist_ok=True)
        inbox = mailbox.Maildir(base, create=True)
        for name in FOLDERS:
            if name not in inbox.list_folders():
                inbox.add_folder(name)
        self._ready.add(str(path))
        return inbox if folder == "INBOX" else inbox.get_folder(folder)

    def deliver(self, address: str, data: bytes, *, folder: str = "INBOX", record: dict | None = None,
                dedupe: str | None = None) -> str:
        """Store ``data`` for ``address`` atomically (Maildir tmp → new) and its record beside it; return the key.

        With ``dedupe`` (a hex digest naming the delivery), the Maildir file is named after it: delivering the same
        thing again finds it and stores nothing — the message is there exactly once, even across a crash.
        """
        box = self.maildir(address, folder)
        if dedupe:
            digest = dedupe[:40]
            key = f"{int(time.time())}.D{digest}.labmail"
            path = str(box._path)  # noqa: SLF001 - mailbox has no public path accessor
            while True:  # the check and the store together: two copies arriving at once are still one
                with self._lock:
                    existing = self._find_dedupe(box, digest)
                    if existing is not None:
                        return existing
                    other = self._storing.get((path, digest))
                    if other is None:
                        done = self._storing[(path, digest)] = threading.Event()
                        break
                other.wait()  # the same delivery being written by another thread: its outcome decides
            try:
                _write_durably(os.path.join(path, "tmp", key), os.path.join(path, "new", key), data)
                with self._lock:
                    self._dedupe[path][digest] = key
            finally:
                with self._lock:
                    del self._storing[(path, digest)]
                done.set()
        else:
            key = box.add(data)  # mailbox writes tmp/ then renames to new/: atomic; the bytes are not parsed
        if record is not None:
            record = dict(record, key=key, folder=folder, mailbox=address)
            # atomic, not fsynced: the message is (its 250 promises it); a power cut may lose its diagnostic record.
            # On one line: json's C encoder (an indent makes it use its pure-Python one, ~5× slower on a verdict)
            atomic_write_text(self._base(address) / "records" / f"{key}.json",
                              json.dumps(record, default=str) + "\n", durable=False)
        with self._lock:
            counted = self._usage.get(address)
            if counted is not None:  # kept up to date between two counts (deletions are seen at the next count)
                self._usage[address] = (counted[0], counted[1] + 1, counted[2] + len(data))
        if self.on_deliver is not None:
            self.on_deliver(address, folder)
        return key

    def usage(self, address: str, *, max_age: float = 0.0) -> tuple[int, int]:
        """(messages, bytes) in every folder of the mailbox — names and sizes from the directories, no message read
        (as Dovecot's ``maildirsize``). ``max_age``: a count at most that old will do (deliveries since are added)."""
        address = address.lower()
        with self._lock:
            counted = self._usage.get(address)
        if counted is not None and time.monotonic() - counted[0] <= max_age:
            return counted[1], counted[2]
        messages = size = 0
        base = self._base(address) / "Maildir"
        folders = [base] + ([base / entry.name for entry in os.scandir(base) if entry.name.startswith(".")
                             and entry.is_dir()] if base.is_dir() else [])
        for folder in folders:
            for sub in ("new", "cur"):
                try:
                    with os.scandir(folder / sub) as entries:
                        for entry in entries:
                            try:
                                size += entry.stat().st_size
                                messages += 1
                            except FileNotFoundError:  # expunged meanwhile
                                pass
                except FileNotFoundError:
                    pass
        with self._lock:
            self._usage[address] = (time.monotonic(), messages, size)
        return messages, size

    def over_quota(self, address: str, incoming: int = 0) -> bool:
        """Whether the mailbox would go past its quota (``quota_mib``; 0 = none, as Mailcow) with ``incoming`` more
        bytes. Counted from the directories at most every 10 s, deliveries added in between."""
        account = self.accounts.get(address.lower())
        if account is None or not account.quota_mib:
            return False
        return self.usage(address, max_age=10.0)[1] + incoming > account.quota_mib * 1024 * 1024

    def _find_dedupe(self, box: mailbox.Maildir, digest: str) -> str | None:
        """The key of the message of that delivery digest in this folder, if it was stored. The folder is listed once
        (per process), then its index follows this store's deliveries — not one directory listing per message.
        A message deleted since still counts as delivered: the same transaction sent again is not stored twice."""
        base = str(box._path)  # noqa: SLF001
        index = self._dedupe.get(base)
        if index is None:
            index = {}
            for sub in ("new", "cur"):
                with os.scandir(os.path.join(base, sub)) as entries:
                    for entry in entries:
                        name = entry.name.split(":", 1)[0]
                        if name.endswith(".labmail") and ".D" in name:
                            index[name.rsplit(".D", 1)[1][: -len(".labmail")]] = name
            self._dedupe[base] = index
        return index.get(digest)

    def message_files(self, address: str, folder: str = "INBOX") -> list[tuple[str, Path]]:
        """(key, path) of every message in a folder, oldest first — nothing read (POP3 reads a message when asked)."""
        box = self.maildir(address, folder)
        items = []
        for key in box.keys():
            path = Path(box._path) / box._lookup(key)  # noqa: SLF001  (mailbox has no public path accessor)
            try:
                items.append((os.stat(path).st_mtime_ns, key, path))
            except FileNotFoundError:  # expunged meanwhile
                pass
        return [(key, path) for _t, key, path in sorted(items)]

    def messages(self, address: str, folder: str = "INBOX") -> list[tuple[str, bytes]]:
        """(key, raw bytes) of every message in a folder, oldest first."""
        out = []
        for key, path in self.message_files(address, folder):
            try:
                out.append((key, path.read_bytes()))
            except FileNotFoundError:
                pass
        return out

    def counts(self, address: str, folders: tuple[str, ...] = ("INBOX", "Junk")) -> dict[str, int]:
        """How many messages each folder holds now (to wait for the next one with :meth:`wait_new`)."""
        return {folder: len(self.messages(address, folder)) for folder in folders}

    def wait_new(self, address: str, before: dict[str, int], timeout: float = 15.0) -> tuple[str, bytes] | None:
        """Wait until one of the folders of ``before`` (from :meth:`counts`) holds more messages; return
        (folder, raw bytes of the newest), or None after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            for folder, count in before.items():
                messages = self.messages(address, folder)
                if len(messages) > count:
                    return folder, messages[-1][1]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    def record(self, address: str, key: str) -> dict | None:
        try:
            return json.loads((self._base(address) / "records" / f"{key}.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
