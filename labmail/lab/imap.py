"""IMAP of the lab (Twisted's IMAP4 server over the lab's Maildirs).

Listeners: 993 (implicit TLS) and 143 (STARTTLS; LOGINDISABLED and no LOGIN before TLS). Twisted runs its
reactor in a thread of the lab process; deliveries made elsewhere (SMTP, POP3) are pushed to open
sessions (``* n EXISTS``, seen at once with IDLE).

Known Twisted quirks worked around here (each with a test in tests/test_mail.py or tests/test_real_tools.py): APPEND without a flag
list crashes; SEARCH on header keys compares bytes with str; credentials are bytes;
a non-PEEK FETCH of a body must set ``\\Seen``; ``MessageSet.last`` is write-once; LIST must not return
message flags as attributes; duplicate headers (Received, Authentication-Results) must all be kept;
EXPUNGE responses in descending order; UIDs kept in a file so that they survive restarts.
"""

from __future__ import annotations

import bisect
import email.errors
import email.utils
import functools
import io
import json
import logging
import mailbox as _mailbox
import os
import re
import secrets
import threading
import time
from email import message_from_bytes
from email.header import Header, decode_header, make_header

from twisted.cred import checkers, credentials, error as cred_error, portal
from twisted.internet import defer, reactor, ssl as tssl, threads
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.mail import imap4
from zope.interface import implementer

from .._files import atomic_write_text
from .._rfc5322 import raw_fields, unfold
from ..headers import READ_POLICY
from .guard import AccountLocked, client_of
from .limits import IMAP_REFUSAL, budget
from .mailstore import MAX_MESSAGE_SIZE

log = logging.getLogger("labmail.lab.imap")
FOLDERS = ("INBOX", "Sent", "Junk", "Trash")
_FLAG_TO_MAILDIR = {"\\Seen": "S", "\\Answered": "R", "\\Flagged": "F", "\\Deleted": "T", "\\Draft": "D"}
_MAILDIR_TO_FLAG = {v: k for k, v in _FLAG_TO_MAILDIR.items()}
#: a keyword is an atom (RFC 3501 §9: no space, control, "(){%*\"\\]", not 8-bit), at most 64 characters
_KEYWORD = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]{1,64}")
MAX_KEYWORDS = 32
SYSTEM_FLAGS = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


# ---------------------------------------------------------------------------
# One folder: UIDs, flags, messages
# ---------------------------------------------------------------------------
class Folder:
    """A Maildir folder with persistent UIDs (``labmail-uids.json``) and flags in file names."""

    def __init__(self, box: _mailbox.Maildir) -> None:
        self.box = box
        self.path = os.path.join(box._path, "labmail-uids.json")  # noqa: SLF001
        self.lock = threading.RLock()
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (FileNotFoundError, ValueError):
            data = {"validity": int(time.time()), "next": 1, "uids": {}}
        self.validity, self.next, self.uids = data["validity"], data["next"], dict(data["uids"])
        # keywords (RFC 3501 §2.3.2: $Forwarded, Junk, NonJunk, $label1…), kept beside the UIDs: Maildir's file
        # names carry the system flags only
        self.keywords: dict[str, list[str]] = {k: list(v) for k, v in data.get("keywords", {}).items()}

    def _save(self) -> None:
        atomic_write_text(__import__("pathlib").Path(self.path), json.dumps(
            {"validity": self.validity, "next": self.next, "uids": self.uids, "keywords": self.keywords}) + "\n")

    def sync(self) -> list[str]:
        """Keys in UID order; new messages get the next UIDs (by arrival), removed ones are forgotten."""
        with self.lock:
            self.box._refresh()  # noqa: SLF001
            present = set(self.box._toc)  # noqa: SLF001
            changed = False
            for key in [k for k in self.uids if k not in present]:
                del self.uids[key]
                self.keywords.pop(key, None)
                changed = True
            fresh = sorted((k for k in present if k not in self.uids), key=self._mtime)
            for key in fresh:
                self.uids[key] = self.next
                self.next += 1
                changed = True
            if changed:
                self._save()
            return sorted(present, key=lambda k: self.uids[k])

    def _mtime(self, key: str) -> float:
        try:
            return os.stat(os.path.join(self.box._path, self.box._toc[key])).st_mtime  # noqa: SLF001
        except (KeyError, FileNotFoundError):
            return 0.0

    def file(self, key: str) -> str:
        return os.path.join(self.box._path, self.box._lookup(key))  # noqa: SLF001

    def flags(self, key: str) -> list[str]:
        sub = self.box._lookup(key)  # noqa: SLF001
        info = sub.split(":2,", 1)[1] if ":2," in sub else ""
        return [_MAILDIR_TO_FLAG[c] for c in info if c in _MAILDIR_TO_FLAG] + self.keywords.get(key, [])

    def keywords_in_use(self) -> list[str]:
        return sorted({kw for kws in self.keywords.values() for kw in kws})

    def set_flags(self, key: str, flags: list[str]) -> None:
        """System flags in the file's name, keywords beside the UIDs; \\Recent and unknown system flags are not
        the client's to set (RFC 3501 §2.3.2), a keyword that is not an atom is ignored, and a message keeps at
        most :data:`MAX_KEYWORDS` of them."""
        with self.lock:
            old = self.file(key)
            letters = "".join(sorted({_FLAG_TO_MAILDIR[f] for f in flags if f in _FLAG_TO_MAILDIR}))
            new = os.path.join(self.box._path, "cur", f"{key}:2,{letters}")  # noqa: SLF001
            if old != new:
                os.rename(old, new)
                self.box._refresh()  # noqa: SLF001
            keywords = sorted({f for f in flags if _KEYWORD.fullmatch(f)})[:MAX_KEYWORDS]
            if keywords != self.keywords.get(key, []):
                if keywords:
                    self.keywords[key] = keywords
                else:
                    self.keywords.pop(key, None)
                self._save()

    def mark_seen_new(self) -> int:
        """Move new/ to cur/ (what a SELECT does); returns how many were new (\\Recent)."""
        with self.lock:
            self.box._refresh()  # noqa: SLF001
            recent = [k for k, sub in self.box._toc.items() if sub.startswith("new")]  # noqa: SLF001
            for key in recent:
                self.set_flags(key, self.flags(key))
            return len(recent)


# ---------------------------------------------------------------------------
# Twisted interfaces
# ---------------------------------------------------------------------------
class _AllHeaders(dict):
    """A dict whose items() yields every header, duplicates included (Twisted rebuilds headers from it)."""

    def __init__(self, pairs):
        super().__init__((k.lower(), v) for k, v in pairs)
        self._pairs = pairs

    def items(self):
        return list(self._pairs)


def _names(names) -> set[str]:
    return {n.lower() for n in (x.decode("ascii", "replace") if isinstance(x, bytes) else x for x in names)}


@implementer(imap4.IMessagePart)
class Part:
    def __init__(self, msg) -> None:
        self.msg = msg

    def getHeaders(self, negate, *names):
        """Headers as text — raw 8-bit bytes (RFC 6532) decoded, so that SEARCH compares text with text."""
        wanted = _names(names)
        return _AllHeaders([(k, v) for k, v in self._header_pairs() if not names or ((k.lower() in wanted) != bool(negate))])

    def _header_pairs(self) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in self.msg.items()]

    def _header_block(self) -> bytes:
        return _crlf(self.msg.as_bytes()).split(b"\r\n\r\n", 1)[0] + b"\r\n"

    def header_bytes(self, negate: bool = False, names=()) -> bytes:
        """The header fields as stored, byte for byte (8-bit included), with the blank line that ends them
        (RFC 3501 §6.4.5) — all of them, or those named (HEADER.FIELDS), or all but those (HEADER.FIELDS.NOT)."""
        wanted = _names(names)
        keep = [f for f in raw_fields(self._header_block()[:-2]) if not names
                or ((f.split(b":", 1)[0].strip().decode("ascii", "replace").lower() in wanted) != bool(negate))]
        return b"".join(f + b"\r\n" for f in keep) + b"\r\n"

    def getBodyFile(self):
        """The part's body as it travels (transfer encoding kept), byte for byte for a leaf part: email's
        ``get_payload(decode=False)`` decodes 8-bit bytes with the part's charset (a latin-1 text came back in
        UTF-8, a binary part as U+FFFD), so the payload is read as the parser stored it."""
        payload = self.msg._payload  # noqa: SLF001 - the parser's own text: 8-bit bytes kept as surrogates
        if isinstance(payload, list):
            return io.BytesIO(_crlf(self.msg.as_bytes().split(b"\n\n", 1)[-1]))
        return io.BytesIO(_crlf((payload or "").encode("utf-8", "surrogateescape")))

    def getSize(self):
        return len(_crlf(self.msg.as_bytes()))

    def isMultipart(self):
        return self.msg.is_multipart()

    def getSubPart(self, part):
        parts = self.msg.get_payload()
        if not isinstance(parts, list) or part >= len(parts):
            raise IndexError(part)
        return Part(parts[part])


class _ParsedCache:
    """Parsed messages shared by every session, least recently used first out (64 MiB at most, counted as twice the
    message's bytes: the parsed message holds its text again).

    A Maildir file never changes once delivered (flags live in its name), so a message is read and parsed once,
    not on every SEARCH or FETCH of every session — Dovecot keeps an index for the same reason. A message bigger
    than a quarter of the budget is parsed for the command that asks and not kept: it would push everything else
    out (and the last one kept could pass the budget)."""

    LIMIT = 64 * 1024 * 1024
    WEIGHT = 2  # bytes held per byte of message: the raw bytes, and the parsed message's text

    def __init__(self) -> None:
        from collections import OrderedDict

        self._items: "OrderedDict[tuple, tuple[bytes, object, list]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, identity: tuple, path: str) -> tuple[bytes, object, list]:
        """(raw bytes with CRLF, the parsed message, its header pairs as text — filled on first use)."""
        with self._lock:
            item = self._items.get(identity)
            if item is not None:
                self._items.move_to_end(identity)
                return item
        with open(path, "rb") as fh:  # NUL is no IMAP character (RFC 3501 §9): 0x80 instead, as Dovecot sends it
            raw = _crlf(fh.read()).replace(b"\x00", b"\x80")
        item = (raw, message_from_bytes(raw, policy=READ_POLICY), [])
        weight = self.WEIGHT * len(raw)
        if weight > self.LIMIT // 4:
            return item
        with self._lock:
            if identity not in self._items:
                self._items[identity] = item
                self._bytes += weight
                while self._bytes > self.LIMIT:
                    _key, (old, _msg, _pairs) = self._items.popitem(last=False)
                    self._bytes -= self.WEIGHT * len(old)
        return item


_PARSED = _ParsedCache()


@implementer(imap4.IMessage, imap4.IMessageFile)
class Message(Part):
    """One message of a folder, read (and parsed) only when a command needs its bytes: FLAGS, UID and
    INTERNALDATE come from the file's name and metadata."""

    def __init__(self, uid: int, path: str, flags: list[str], date: float, identity: tuple, locate) -> None:
        self.path, self.identity, self._locate = path, identity, locate
        self.uid, self.flags, self.date = uid, flags, date

    def _header_pairs(self) -> list[tuple[str, str]]:
        """Decoded once per message and kept in the shared cache (``email``'s header objects are parsed again on
        every access: SEARCH over a folder did it for every field of every message, each time)."""
        item = self._item()
        if not item[2]:
            item[2].extend(super()._header_pairs())
        return item[2]

    def _item(self) -> tuple[bytes, object, list]:
        try:
            return _PARSED.get(self.identity, self.path)
        except FileNotFoundError:  # another session changed its flags (renamed it) since: find it again
            self.path = self._locate()
            return _PARSED.get(self.identity, self.path)

    @property  # type: ignore[override]
    def msg(self):
        return self._item()[1]

    @property
    def raw(self) -> bytes:
        return self._item()[0]

    def _header_block(self) -> bytes:
        head, sep, _body = self.raw.partition(b"\r\n\r\n")
        return head + b"\r\n" if sep else (head if head.endswith(b"\r\n") else head + b"\r\n")

    def header_bytes(self, negate: bool = False, names=()) -> bytes:
        """BODY[HEADER] as stored: up to and with the blank line — or the whole message when it has none (a message
        without a body), as Dovecot sends it; HEADER.FIELDS as :meth:`Part.header_bytes`."""
        if names:
            return super().header_bytes(negate, names)
        head, sep, _body = self.raw.partition(b"\r\n\r\n")
        return head + sep if sep else self.raw

    def open(self):
        return io.BytesIO(self.raw)  # BODY[] byte-exact

    def getBodyFile(self):  # noqa: N802 - Twisted's name
        """BODY[TEXT] as stored, byte for byte: what follows the blank line after the header (8-bit, folding and
        MIME boundaries untouched; email's regenerated text changed them)."""
        head, sep, body = self.raw.partition(b"\r\n\r\n")
        return io.BytesIO(body if sep else b"")

    def getSize(self):
        return len(self.raw)

    def getUID(self):
        return self.uid

    def getFlags(self):
        return list(self.flags)

    def getInternalDate(self):
        return email.utils.formatdate(self.date, localtime=True)


@implementer(imap4.IMailboxInfo, imap4.IMailbox, imap4.ICloseableMailbox)
class Mailbox:
    def __init__(self, server: "IMAPServer", address: str, name: str, folder: Folder, rw: bool) -> None:
        self.server, self.address, self.name, self.folder, self.rw = server, address, name, folder, rw
        self.listeners: list = []
        self.keys = folder.sync()
        self.recent = folder.mark_seen_new() if rw else 0
        self.keys = folder.sync()

    # info
    def getFlags(self):
        return SYSTEM_FLAGS + self.folder.keywords_in_use()

    def getHierarchicalDelimiter(self):
        return "/"

    def getUIDValidity(self):
        return self.folder.validity

    def getUIDNext(self):
        return self.folder.next

    def getUID(self, message):
        return self.folder.uids[self.keys[message - 1]]

    def getMessageCount(self):
        return len(self.keys)

    def getRecentCount(self):
        return self.recent

    def first_unseen(self) -> int:
        """The sequence number of the first message without \\Seen, 0 if there is none."""
        return next((seq for seq, k in enumerate(self.keys, 1) if "\\Seen" not in self.folder.flags(k)), 0)

    def getUnseenCount(self):
        return sum(1 for k in self.keys if "\\Seen" not in self.folder.flags(k))

    def isWriteable(self):
        return self.rw

    def destroy(self):
        raise imap4.MailboxException("Permission denied.")

    def requestStatus(self, names):
        self.keys = self.folder.sync()
        values = {"MESSAGES": self.getMessageCount(), "RECENT": self.getRecentCount(), "UIDNEXT": self.getUIDNext(),
                  "UIDVALIDITY": self.getUIDValidity(), "UNSEEN": self.getUnseenCount()}
        return {n: values[n] for n in names if n in values}

    def addListener(self, listener):
        self.listeners.append(listener)
        self.server.register(self)

    def removeListener(self, listener):
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            self.server.unregister(self)

    def close(self):
        self.server.unregister(self)

    def notify(self) -> None:
        """New mail arrived in this folder (called in the reactor thread)."""
        current = self.folder.sync()
        known = set(self.keys)
        gone = [k for k in self.keys if k not in set(current)]
        if gone:
            self.expunged(gone)
        added = [k for k in current if k not in known]
        if added:
            self.keys = self.keys + added
            for listener in list(self.listeners):
                listener.newMessages(len(self.keys), None)

    def expunged(self, keys: list[str]) -> None:
        """Another session expunged ``keys``: tell this session's client (``* n EXPUNGE``, descending)."""
        numbers = sorted((self.keys.index(k) + 1 for k in keys if k in self.keys), reverse=True)
        for number in numbers:
            del self.keys[number - 1]
            for listener in list(self.listeners):
                if hasattr(listener, "sendUntaggedResponse"):
                    listener.sendUntaggedResponse(b"%d EXPUNGE" % number, isAsync=True)

    def flags_changed(self, changes: dict[str, list[str]]) -> None:
        """Another session changed flags: ``* n FETCH (FLAGS (…))`` to this session's client."""
        by_seq = {self.keys.index(k) + 1: flags for k, flags in changes.items() if k in self.keys}
        if by_seq:
            for listener in list(self.listeners):
                listener.flagsChanged(by_seq)

    # changes
    def addMessage(self, message, flags=(), date=None):
        data = message.read() if hasattr(message, "read") else bytes(message)
        key = self.folder.box.add(data)  # the bytes as sent: not parsed (a message nested past Python's recursion
        # limit made APPEND fail with BAD when mailbox.MaildirMessage parsed it)
        flags = [f.decode() if isinstance(f, bytes) else f for f in flags]
        self.folder.set_flags(key, flags)
        self.keys = self.folder.sync()
        return defer.succeed(self.folder.uids[key])

    def _resolve(self, messages, uid):
        self.keys = self.folder.sync()
        if not self.keys:
            return []
        last = self.folder.uids[self.keys[-1]] if uid else len(self.keys)
        try:
            messages.last = last
        except ValueError:
            pass  # write-once in Twisted
        # by ranges, not by message: each message looked up in every range was messages × ranges
        numbers = [self.folder.uids[key] for key in self.keys] if uid else range(1, len(self.keys) + 1)
        chosen: set[int] = set()
        for low, high in messages.ranges:
            low, high = (last if low is None else low), (last if high is None else high)
            if low > high:
                low, high = high, low
            chosen.update(range(bisect.bisect_left(numbers, low), bisect.bisect_right(numbers, high)))
        return [(index + 1, self.keys[index]) for index in sorted(chosen)]

    def fetch(self, messages, uid):
        out = []
        for seq, key in self._resolve(messages, uid):
            path = self.folder.file(key)
            info = os.stat(path)
            out.append((seq, Message(self.folder.uids[key], path, self.folder.flags(key), info.st_mtime,
                                     (self.folder.box._path, key, info.st_size),  # noqa: SLF001
                                     lambda key=key: self.folder.file(key))))
        return out  # a list: Twisted's SEARCH indexes it

    def store(self, messages, flags, mode, uid):
        flags = [f.decode() if isinstance(f, bytes) else f for f in flags]
        result, changes = {}, {}
        for seq, key in self._resolve(messages, uid):
            current = set(self.folder.flags(key))
            new = set(flags) if mode == 0 else (current | set(flags) if mode == 1 else current - set(flags))
            self.folder.set_flags(key, sorted(new))
            result[seq] = changes[key] = self.folder.flags(key)  # what was kept (not \\Recent, not a bad keyword)
        self.server.broadcast(self, "flags_changed", changes)
        return result

    def expunge(self):
        self.keys = self.folder.sync()
        removed, keys = [], []
        for seq, key in reversed(list(enumerate(self.keys, 1))):
            if "\\Deleted" in self.folder.flags(key):
                self.folder.box.remove(key)
                removed.append(seq)
                keys.append(key)
        self.keys = self.folder.sync()
        self.server.broadcast(self, "expunged", keys)
        return removed  # descending: each number is valid when the client applies it


class _ListInfo:
    """What LIST shows of a folder: no attributes (not the message flags)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def getFlags(self):
        return []

    def getHierarchicalDelimiter(self):
        return "/"


@implementer(imap4.IAccount, imap4.INamespacePresenter)
class Account:
    def __init__(self, server: "IMAPServer", address: str) -> None:
        self.server, self.address = server, address

    def _box(self, name: str) -> Folder:
        return self.server.folder(self.address, name)

    def _names(self) -> list[str]:
        root = self.server.store.maildir(self.address)
        return ["INBOX"] + sorted(root.list_folders())

    def listMailboxes(self, ref, wildcard):
        import fnmatch

        ref = ref.decode() if isinstance(ref, bytes) else ref
        wildcard = wildcard.decode() if isinstance(wildcard, bytes) else wildcard
        pattern = (ref + wildcard).replace("*", "?*").replace("%", "?*").replace("?*", "*")
        return [(n, _ListInfo(n)) for n in self._names() if fnmatch.fnmatchcase(n.upper() if n == "INBOX" else n, pattern)
                or (n == "INBOX" and pattern.upper() in ("INBOX", "*"))]

    def select(self, name, rw=True):
        name = name.decode() if isinstance(name, bytes) else name
        canonical = "INBOX" if name.upper() == "INBOX" else name
        if canonical not in self._names():
            log.warning("IMAP %s: SELECT %r refused (not one of the account's folders)", self.address, name[:80])
            return None
        return Mailbox(self.server, self.address, canonical, self._box(canonical), rw)

    def create(self, pathspec):
        name = (pathspec.decode() if isinstance(pathspec, bytes) else pathspec).strip("/")
        if (not name or name.upper() == "INBOX" or any(c in name for c in "./\\*%") or len(name) > 100
                or not name.isprintable()):  # wildcards (RFC 3501 §5.1) and control characters refused, as Dovecot
            log.warning("IMAP %s: CREATE %r refused (invalid name)", self.address, name[:80])
            raise imap4.MailboxException("Invalid mailbox name.")
        self.server.store.maildir(self.address).add_folder(name)
        return True

    def delete(self, name):
        name = name.decode() if isinstance(name, bytes) else name
        if name.upper() == "INBOX" or name in FOLDERS:
            raise imap4.MailboxException("Cannot delete a special mailbox.")
        if name not in self._names():
            log.warning("IMAP %s: DELETE %r refused (not one of the account's folders)", self.address, name[:80])
            raise imap4.MailboxException("No such mailbox.")
        self.server.store.maildir(self.address).remove_folder(name)
        return True

    def rename(self, oldname, newname):
        raise imap4.MailboxException("Renaming is not supported in the lab.")

    def isSubscribed(self, name):
        return True

    def subscribe(self, name):
        return True

    def unsubscribe(self, name):
        return True

    def addMailbox(self, name, mbox=None):
        return self.create(name)

    def getPersonalNamespaces(self):
        return [["", "/"]]

    def getSharedNamespaces(self):
        return None

    def getUserNamespaces(self):
        return None


@implementer(portal.IRealm)
class _Realm:
    def __init__(self, server: "IMAPServer") -> None:
        self.server = server

    def requestAvatar(self, avatar_id, mind, *interfaces):
        address = avatar_id.decode() if isinstance(avatar_id, bytes) else avatar_id
        return imap4.IAccount, Account(self.server, address), lambda: None


@implementer(checkers.ICredentialsChecker)
class _Checker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, server: "IMAPServer") -> None:
        self.server = server

    def requestAvatarId(self, creds):
        login = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) else creds.password

        client = getattr(creds, "labmail_client", "?")

        def check():
            try:
                account = self.server.store.authenticate(login, password, "IMAP", client)
            except AccountLocked as exc:
                raise _Locked(exc.text.en) from None
            if account is None or account.domain not in self.server.domains:
                log.warning("IMAP authentication failed for %s", login)
                raise cred_error.UnauthorizedLogin("Authentication failed.")
            log.info("imap-login: Login: user=<%s>, %s", account.address, getattr(creds, "labmail_session", "?"))
            return account.address.encode()

        return threads.deferToThread(check)


class _Locked(cred_error.UnauthorizedLogin):
    """The account is locked after repeated failed logins (the message says so)."""


_ADDRESS_HEADERS = {"from", "sender", "reply-to", "to", "cc", "bcc"}


def _readable(name: str, value: str) -> bool:
    """False for an address header email's parser cannot read: it recurses once per nested comment, and thousands of
    them (a From folded over a dozen lines of "(") exceeded Python's recursion limit — Twisted's ENVELOPE then dropped
    the connection at every FETCH, leaving the folder unreadable to a mail client. Such a header reads as absent
    (ENVELOPE's NIL); the message itself is untouched (BODY[] gives it as received)."""
    if name.lower() not in _ADDRESS_HEADERS or value.count("(") < 50:
        return True
    try:
        email.utils.getaddresses([value])
    except RecursionError:
        log.warning("IMAP ENVELOPE: a %s header of %d nested comments read as absent", name, value.count("("))
        return False
    return True


def _addresses(value: str | None) -> list | None:
    """An ENVELOPE address list (RFC 3501 §7.4.2): ``(name adl mailbox host)`` for each address, NIL when there is
    none. A missing mailbox or host reads ``MISSING_MAILBOX`` / ``MISSING_DOMAIN``, as Dovecot writes them: a NIL host
    marks a group. A group (RFC 5322 §3.4, ``undisclosed-recipients:;``) is written as RFC 3501 says and Dovecot
    does: ``(NIL NIL "name" NIL)``, its members, then ``(NIL NIL NIL NIL)``. Twisted's ``parseAddr`` gave three
    fields for a missing header or an address without "@", one more per extra "@", and no group markers."""
    if value is None:
        return None
    out: list = []
    for group, members in _groups(value):
        if group is not None:
            out.append([None, None, group, None])
        out += _members(members)
        if group is not None:
            out.append([None, None, None, None])
    return out or None


def _members(text: str) -> list:
    out: list = []
    if not text or text.isspace():
        return out
    for name, address in email.utils.getaddresses([text]):
        if not name and not address:
            continue
        mailbox, at, host = address.rpartition("@")
        if not at:
            mailbox, host = address, ""
        out.append([name or None, None, _eight_bit(mailbox) or "MISSING_MAILBOX", _eight_bit(host) or "MISSING_DOMAIN"])
    return out


def _eight_bit(text: str):
    """An address part as ENVELOPE carries it: as is when ASCII; a UTF-8 one (RFC 6531) as a literal of its bytes,
    as Dovecot sends it (an encoded word is no address, RFC 2047 §5)."""
    return text if text.isascii() else io.BytesIO(text.encode("utf-8", "replace"))


_SPECIAL = re.compile(r'[\\"()<>:;]')  # what changes _groups's reading; the rest is skipped at once


def _groups(value: str) -> list[tuple[str | None, str]]:
    """``value`` cut where RFC 5322's group syntax (``phrase ":" [members] ";"``) is, outside quoted strings,
    comments and angle brackets: [(group name or None, the members' text)], in order. One pass (a header is
    client text). A group left open at the end is closed there, as Dovecot reads it."""
    if ":" not in value:
        return [(None, value)]
    parts: list[tuple[str | None, str]] = []
    start, group, depth, quoted, angle = 0, None, 0, False, False
    i, n = 0, len(value)
    while True:
        found = _SPECIAL.search(value, i)
        if found is None:
            break
        i = found.start()
        c = value[i]
        if c == "\\":
            i += 2 if (quoted or depth) else 1
            continue
        if quoted:
            quoted = c != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(c, 0)
        elif c == '"':
            quoted = True
        elif c == "(":
            depth = 1
        elif angle:
            angle = c != ">"
        elif c == "<":
            angle = True
        elif c == ":" and group is None:
            boundary = max(value.rfind(",", start, i), value.rfind(";", start, i))
            if boundary >= start:  # what comes before the group's name is a list of its own
                parts.append((None, value[start:boundary]))
            group, start = _phrase(value[max(boundary + 1, start):i]), i + 1
        elif c == ";" and group is not None:
            parts.append((group, value[start:i]))
            group, start = None, i + 1
        i += 1
    parts.append((group, value[start:n]))
    return [(name, text) for name, text in parts if name is not None or text.strip()]


def _phrase(text: str) -> str:
    """A group's name as Dovecot writes it: comments left out, quotes and escapes removed, white space collapsed."""
    out, depth, quoted, i = [], 0, False, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and (quoted or depth) and i + 1 < len(text):
            if not depth:
                out.append(text[i + 1])
            i += 2
            continue
        if depth:
            depth += {"(": 1, ")": -1}.get(c, 0)
            if not depth:
                out.append(" ")
        elif c == '"':
            quoted = not quoted
        elif c == "(" and not quoted:
            depth = 1
        else:
            out.append(c)
        i += 1
    return " ".join("".join(out).split())


def _envelope(msg) -> tuple:
    """Twisted's ``getEnvelope`` with address lists built by :func:`_addresses`; Sender and Reply-To default to From
    (RFC 3501 §7.4.2)."""
    headers = msg.getHeaders(True)
    lists: dict[str, list[str]] = {}
    for name, value in headers.items():  # an address header given twice: both lists, as Dovecot reads them
        lists.setdefault(name.lower(), []).append(value)

    def addresses(name: str) -> str | None:
        return ", ".join(lists[name]) if name in lists else None

    def listed(value: str | None) -> list | None:  # (addr)(addr): RFC 3501 §9's 1*address, no space between
        found = _addresses(value)
        return None if found is None else [_Adjacent(found)]

    from_ = addresses("from")
    return (_unfolded(headers.get("date")), _unfolded(headers.get("subject")), listed(from_),
            listed(addresses("sender") or from_), listed(addresses("reply-to") or from_),
            listed(addresses("to")), listed(addresses("cc")), listed(addresses("bcc")),
            _unfolded(headers.get("in-reply-to")), _unfolded(headers.get("message-id")))


class _Adjacent(list):
    """Items written one after the other, without a space (RFC 3501 §9: ``1*address``, ``1*body``)."""


def _sexp(item) -> bytes:
    """ENVELOPE and BODYSTRUCTURE on the wire: lists in parentheses, their items separated by a space, except in an
    :class:`_Adjacent` run — where Twisted put a space between every list (``(a) (b)``, not the grammar's ``(a)(b)``);
    strings, numbers, NIL and literals as Twisted writes them."""
    if isinstance(item, _Adjacent):
        return b"".join(_sexp(x) for x in item)
    if isinstance(item, (list, tuple)):
        return b"(" + b" ".join(_sexp(x) for x in item) + b")"
    return imap4.collapseNestedLists([item])


def _unfolded(value: str | None) -> str | None:
    """A header value on one line (RFC 5322 §2.2.3 unfolding): a folded Subject went into ENVELOPE with its CRLF
    (Dovecot unfolds). (A NUL never gets here: messages are read with NUL as 0x80, _ParsedCache.get.)"""
    return None if value is None else unfold(value)


def _ascii(name: str, value: str) -> str:
    """A header value an IMAP4rev1 string can carry: non-ASCII text as RFC 2047 encoded words (display names only,
    for address headers, so that the addresses stay parseable)."""
    if value.isascii():
        return value
    if name.lower() in _ADDRESS_HEADERS:
        out = []
        for display, address in email.utils.getaddresses([value]):
            try:
                out.append(email.utils.formataddr((display, address), charset="utf-8"))
            except UnicodeError:  # a UTF-8 address (RFC 6531) has no ASCII form: kept as it is (sent as a literal)
                name = Header(display, "utf-8", maxlinelen=998).encode() if display and not display.isascii() else display
                out.append(f"{name} <{address}>" if name else address)
        return ", ".join(out)
    return Header(value, "utf-8", maxlinelen=998).encode()


def _id_ranges(s: bytes, last) -> tuple:
    """The merged (low, high) ranges of a sequence set, as Twisted's ``parseIdList`` makes them, in one sort."""
    pairs = []
    for p in s.split(b","):
        try:
            if b":" in p:
                low_text, high_text = p.split(b":", 1)
                low = None if low_text == b"*" else int(low_text)
                high = None if high_text == b"*" else int(high_text)
                if low is high is None or (low is not None and low <= 0) or (high is not None and high <= 0):
                    raise imap4.IllegalIdentifierError(p)
                low, high = low or last, high or last
            else:
                low = None if p == b"*" else int(p)
                if low is not None and low <= 0:
                    raise imap4.IllegalIdentifierError(p)
                low = high = low or last
        except ValueError:
            raise imap4.IllegalIdentifierError(p) from None
        pairs.append((low, high) if _rank(low) <= _rank(high) else (high, low))
    merged = imap4.MessageSet()
    merged.ranges = pairs
    merged.clean()
    return tuple(merged.ranges)


def _rank(value):
    return float("inf") if value is None else value


_cached_id_ranges = functools.lru_cache(maxsize=256)(_id_ranges)
_TWISTED_PARSE_ID_LIST = imap4.parseIdList


def _parse_id_list(s, lastMessageId=None):  # noqa: N803 - Twisted's signature
    """Twisted's ``parseIdList`` (a FETCH, STORE, COPY or SEARCH sequence set) in one sort of its ranges: Twisted
    merged them again at each one — 3 s for one 16 KB FETCH line of 3,300 numbers, in the reactor thread, every
    other user of the lab waiting (found by an outside review) — and, within a SEARCH, once per message. Same
    result (a new :class:`MessageSet` each call: callers set its ``last``)."""
    if not isinstance(s, bytes):
        return _TWISTED_PARSE_ID_LIST(s, lastMessageId)
    result = imap4.MessageSet()
    result.ranges = list(_cached_id_ranges(s, lastMessageId))
    return result


imap4.parseIdList = _parse_id_list  # Twisted's own callers (arg_seqset, SEARCH keys) look the name up at call time

_TRAILING_LITERAL = re.compile(rb"\{(\d{1,9})\}$")  # a synchronizing literal ends the line


def _put_literals(query: list, literals: list[bytes], token: bytes) -> list:
    """``query`` with each placeholder ``token-N`` replaced by the N-th literal (nested lists included)."""
    out: list = []
    for item in query:
        if isinstance(item, list):
            out.append(_put_literals(item, literals, token))
        elif isinstance(item, bytes) and item.startswith(token + b"-") and item[len(token) + 1:].isdigit():
            out.append(literals[int(item[len(token) + 1:])])
        else:
            out.append(item)
    return out


def _imap_text(value) -> str | None:
    """A MIME field for BODYSTRUCTURE: unfolded; non-ASCII text as an encoded word (an IMAP4rev1 string is 7-bit)."""
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text if text.isascii() else Header(text, "utf-8", maxlinelen=998).encode()


def _params(m, header: str = "content-type") -> list | None:
    """Parameters as (name value …): names lowercased, values unquoted and as sent (a boundary is case-sensitive),
    RFC 2231 values decoded; NIL when there are none."""
    out: list = []
    for name, value in (m.get_params(header=header) or [])[1:]:
        if isinstance(value, tuple):  # RFC 2231: (charset, language, text)
            value = email.utils.collapse_rfc2231_value(value)
        out += [_imap_text(name.lower()), _imap_text(value)]
    return out or None


def _extension(m) -> list:
    disposition = m.get_content_disposition()
    languages = [lang.strip() for lang in str(m.get("content-language", "")).split(",") if lang.strip()]
    return [[_imap_text(disposition), _params(m, "content-disposition")] if disposition else None,
            [_imap_text(lang) for lang in languages] or None, _imap_text(m.get("content-location"))]


def _structure(part, extended: bool) -> list:
    """BODY / BODYSTRUCTURE (RFC 3501 §7.4.2) from the parsed message: RFC 2045 §5.2's defaults where a field is
    missing or invalid (text/plain, charset us-ascii, 7bit), sizes of the body in octets, the fields of a
    message/rfc822 part in the order of §9 (envelope, body, lines, then the extension data). Twisted's split
    parameters on every ";", lowercased their values, gave NIL for a missing type or encoding and the whole part's
    size (headers included)."""
    m = part.msg
    if m.is_multipart() and isinstance(m.get_payload(), list) and m.get_content_maintype() == "multipart":
        children = [_structure(Part(child), extended) for child in m.get_payload()] or \
            [["text", "plain", ["charset", "us-ascii"], None, None, "7bit", 0, 0]]
        out = [_Adjacent(children), _imap_text(m.get_content_subtype())]
        if extended:
            out += [_params(m)] + _extension(m)
        return out
    main, sub = m.get_content_maintype(), m.get_content_subtype()
    params = _params(m)
    if main == "text" and "charset" not in (params or [])[::2]:  # RFC 2045 §5.2, RFC 2046 §4.1.2; as Dovecot
        params = ["charset", "us-ascii"] + (params or [])
    body = part.getBodyFile().read()  # as it travels (transfer encoding kept), CRLF line ends
    out = [_imap_text(main), _imap_text(sub), params, _imap_text(m.get("content-id")),
           _imap_text(m.get("content-description")),
           _imap_text(m.get("content-transfer-encoding") or "7bit"), len(body)]
    if (main, sub) == ("message", "rfc822") and isinstance(m.get_payload(), list) and m.get_payload():
        inner = Part(m.get_payload()[0])
        out += [_envelope(_AsciiView(inner)), _structure(inner, extended), body.count(b"\n")]
    elif main == "text":
        out.append(body.count(b"\n"))
    if extended:
        out += [_imap_text(m.get("content-md5"))] + _extension(m)
    return out


def _body_matches(msg, needle) -> bool:
    """Whether ``needle`` (bytes or text) is in the message's body, raw or decoded, ignoring case."""
    raw = needle if isinstance(needle, bytes) else needle.encode("utf-8")
    if raw.lower() in msg.getBodyFile().read().lower():
        return True
    text = raw.decode("utf-8", "replace").lower()
    for part in msg.msg.walk():
        if part.get_content_maintype() != "text" or part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
            decoded = payload.decode(part.get_content_charset() or "us-ascii", "replace")
        except (LookupError, ValueError, AssertionError):  # an unknown charset, a broken encoding
            decoded = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        if text in decoded.lower():
            return True
    return False


def _section_part(msg, numbers: list[int]):
    """The part a section's numbers name (RFC 3501 §6.4.5; 0-based here): in a multipart, its n-th part; in a
    message/rfc822 part, the parts of the message it encapsulates (its body, for a single-part one); a part that
    is not multipart has only a part 1, itself (a single-part message: BODY[1] is its body, BODY[1.1] nothing —
    what Dovecot answers). Anything else does not exist (LookupError): Twisted took BODY[1.1] of a single-part
    message for its body and BODY[2.1] of an encapsulated message for all of it."""
    target, implicit = msg, True  # implicit: the part's own "1" (a part that is not multipart) is still unused
    for depth, number in enumerate(numbers):
        m = target.msg
        if depth and m.get_content_type() == "message/rfc822" and isinstance(m.get_payload(), list):
            m = m.get_payload()[0]
            if m.get_content_maintype() != "multipart":
                if number:
                    raise LookupError("no such part")
                target, implicit = Part(m), False
                continue
        if m.get_content_maintype() == "multipart" and isinstance(m.get_payload(), list):
            parts = m.get_payload()
            if number >= len(parts):
                raise LookupError("no such part")
            target, implicit = Part(parts[number]), True
        elif number or not implicit:  # as Dovecot: a leaf's "1" is itself, once
            raise LookupError("no such part")
        else:
            implicit = False
    return target


def _section_label(part) -> bytes:
    """``BODY[section]`` without the request's ``<origin.length>`` (Twisted's label writes it, or ``<0>``)."""
    begin = part.partialBegin
    part.partialBegin = None
    try:
        return part.getBytes()
    finally:
        part.partialBegin = begin


def _empty_item(part, msg) -> bytes:
    """What a FETCH item says when it cannot be made for a message (:meth:`LabIMAP4Server.spewMessage`)."""
    kind = getattr(part, "type", "")
    if kind == "envelope":
        return b"ENVELOPE (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    if kind == "bodystructure" or (kind == "body" and not (part.header or part.mime or part.text or part.empty)):
        raw = msg.raw if isinstance(msg, Message) else b""
        body = raw.partition(b"\r\n\r\n")[2]
        structure = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d %d)' % (len(body), body.count(b"\n"))
        return (b"BODYSTRUCTURE " if kind == "bodystructure" else b"BODY ") + structure
    if kind == "body":
        return _section_label(part) + (b"<%d>" % part.partialBegin if part.partialBegin is not None else b"") + b" {0}\r\n"
    return str(part).upper().encode("ascii", "replace") + b" NIL"


def _decode_words(value: str) -> str:
    """A header value with its RFC 2047 encoded words decoded (as it is when the value has none, or bad ones)."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, email.errors.HeaderParseError):
        return value


class _AsciiView:
    """A message (or part) whose headers read as IMAP4rev1 strings can carry them (ENVELOPE, BODYSTRUCTURE)."""

    def __init__(self, part) -> None:
        self._part = part

    def __getattr__(self, name):
        return getattr(self._part, name)

    @staticmethod
    def _value(name: str, value: str) -> str | None:
        """The header's value as this view reads it; None: the header reads as absent."""
        return _ascii(name, value) if _readable(name, value) else None

    def getHeaders(self, negate, *names):  # noqa: N802 - Twisted's name
        pairs = ((k, self._value(k, v)) for k, v in self._part.getHeaders(negate, *names).items())
        return _AllHeaders([(k, v) for k, v in pairs if v is not None])

    def getSubPart(self, part):  # noqa: N802 - Twisted's name
        return type(self)(self._part.getSubPart(part))


class _DecodedView(_AsciiView):
    """A message whose headers read with their encoded words decoded (SEARCH on header keys)."""

    @staticmethod
    def _value(name: str, value: str) -> str | None:
        return _decode_words(value)


#: The largest message APPEND takes: what the lab's SMTP takes, announced as APPENDLIMIT (RFC 7889).
MAX_APPEND = MAX_MESSAGE_SIZE


class _TooBig(imap4.IllegalOperation):
    """An APPEND literal larger than :data:`MAX_APPEND` (answered ``NO [TOOBIG]``, RFC 7889 §3)."""


@implementer(IHandshakeListener)
class LabIMAP4Server(imap4.IMAP4Server):
    """Twisted's server with the fixes the course needs."""

    IDENT = b"labmail IMAP4rev1 ready."  # Twisted's said "Twisted IMAP4rev1 Ready"

    #: bytes of command lines a client may send while one of its commands is still running (Twisted queues them)
    MAX_QUEUED_BYTES = 1024 * 1024
    _queued_bytes = 0  # queued since the running command began

    def lineReceived(self, line):  # noqa: N802 - Twisted's name
        """Twisted queues every line that arrives while a command runs (a FETCH the client does not read, stalled on
        flow control): without a bound, one authenticated client grew the lab by as much as it sent. Past 1 MiB of
        queued lines the session is closed, as Dovecot closes a client whose output it cannot flush."""
        if self.blocked is not None:
            self._queued_bytes += len(line)
            if self._queued_bytes > self.MAX_QUEUED_BYTES:
                self.blocked = None
                self.sendLine(b"* BYE Too many commands sent without reading the replies")
                self.transport.loseConnection()
                return None
        else:
            self._queued_bytes = 0
        return super().lineReceived(line)

    def parse_command(self, line):
        """Parentheses nested deeper than 100 are refused before parsing: Twisted's parser recursed into them until
        Python's recursion limit, answered BAD and logged 142 KB of traceback each time (found by review)."""
        if line.count(b"(") > 100:
            tag = line.split(None, 1)[0] if line.strip() else None
            self.sendBadResponse(tag, b"Too many parentheses")
            return None
        return super().parse_command(line)

    def _fileLiteral(self, size):  # noqa: N802 - Twisted's name
        """APPEND's message literal: one larger than :data:`MAX_APPEND` is refused before any of it is read —
        ``NO [TOOBIG]`` instead of the continuation, nothing spooled — wherever the size comes (the first line, or
        the line after a mailbox name sent as a literal). Twisted took any size into a temporary file (3 GB
        accepted): on a class lab, one student could have filled the teacher's disk."""
        if size > MAX_APPEND:
            raise _TooBig(f"[TOOBIG] Message too large: at most {MAX_APPEND} octets (APPENDLIMIT)")
        return super()._fileLiteral(size)

    def sendNegativeResponse(self, tag=None, message=b""):  # noqa: N802 - Twisted's name
        # Twisted writes "NO Illegal operation: <reason>": a response code must come first (RFC 9051 §7.1)
        prefix = b"Illegal operation: ["
        if message.startswith(prefix):
            message = message[len(prefix) - 1:]
        super().sendNegativeResponse(tag, message)

    _lost = False
    _handshake_done = False
    HANDSHAKE_TIMEOUT = 20  # seconds for a TLS handshake, as on the lab's other TLS ports (SMTP, POP3, HTTPS)

    def handshakeCompleted(self) -> None:  # noqa: N802 - Twisted's IHandshakeListener
        self._handshake_done = True

    def _bound_handshake(self) -> None:
        """A TLS handshake (993 from the start, 143 after STARTTLS) gets 20 s; a client stalled in it is cut off
        then, instead of holding its connection for the 60 s of the idle timeout."""
        self._handshake_done = False
        self.callLater(self.HANDSHAKE_TIMEOUT, self._abort_if_no_handshake)

    def _abort_if_no_handshake(self) -> None:
        if not self._handshake_done and not self._lost and self.transport is not None:
            log.info("IMAP: TLS handshake not done within %d s: connection closed", self.HANDSHAKE_TIMEOUT)
            self.transport.abortConnection()

    def timeoutConnection(self):  # noqa: N802 - Twisted's name
        """Twisted closes an idle session gently (``* BYE``, then ``loseConnection``), which waits for the BYE to be
        written: on a connection stalled in the middle of a TLS handshake (993, or 143 after STARTTLS) it never is,
        and such connections stayed open for good (an outside review held 60 of them for 130 s, each counting
        against the lab's connection budget). Still open 2 s after the BYE: aborted."""
        super().timeoutConnection()
        self.callLater(2, self._abort_if_still_open)

    def _abort_if_still_open(self) -> None:
        if not self._lost and self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason):  # noqa: N802 - Twisted's name
        """A session that ends (LOGOUT, a client gone) stops listening to its folder. Twisted forgets it: the
        folder of every session ever closed stayed registered, and each new message re-read that folder once per
        dead session (measured: 1,000 messages after one IMAP client had come and gone, 171 → 112 msg/s)."""
        self._lost = True
        mbox, self.mbox = self.mbox, None
        if mbox is not None:
            try:
                mbox.removeListener(self)
            finally:
                closeable = imap4.ICloseableMailbox(mbox, None)
                if closeable is not None:
                    closeable.close()
        super().connectionLost(reason)

    def connectionMade(self):  # noqa: N802 - Twisted's name
        """No Nagle delay (TCP_NODELAY, as Dovecot and asyncio's servers set): Twisted writes a reply in several
        small pieces (untagged lines, then the tagged one), and Nagle held the last one until the client's delayed
        ACK — about 40 ms added to a command that follows new mail (measured: SELECT + SEARCH 50 ms instead of 1)."""
        transport = self.transport
        for candidate in (transport, getattr(transport, "transport", None)):  # TCP, or TLS over TCP
            set_nodelay = getattr(candidate, "setTcpNoDelay", None)
            if set_nodelay is not None:
                try:
                    set_nodelay(True)
                    break
                except (OSError, AttributeError):
                    pass
        super().connectionMade()
        if ISSLTransport.providedBy(self.transport):  # 993: TLS from the first byte
            self._bound_handshake()

    def do_STARTTLS(self, tag):  # noqa: N802 - Twisted's name
        """Whatever the client sent in clear behind STARTTLS is thrown away once TLS starts: a man in the middle
        could otherwise append a command that would run inside the encrypted session (CVE-2011-0411, fixed this way
        in Postfix and Dovecot). Twisted kept its line buffer and ran it (test_security)."""
        started = self.startedTLS
        super().do_STARTTLS(tag)
        if self.startedTLS and not started:
            self.clearLineBuffer()
            self._bound_handshake()

    unauth_STARTTLS = (do_STARTTLS,)

    def _secure(self) -> bool:
        from twisted.internet import interfaces

        return bool(self.startedTLS) or interfaces.ISSLTransport(self.transport, None) is not None

    def capabilities(self):
        """Before TLS, no login of any kind is offered (LOGINDISABLED, no AUTH=): RFC 9051 §6.2.3, RFC 3501 §6.2."""
        cap = super().capabilities()
        cap[b"APPENDLIMIT"] = [str(MAX_APPEND).encode()]
        if not self._secure():
            cap.pop(b"AUTH", None)
            cap[b"LOGINDISABLED"] = None
        return cap

    def _refuse_in_clear(self, tag) -> None:
        self.sendNegativeResponse(tag, b"[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
                                       b"connections: STARTTLS first (RFC 9051 6.2.3)")

    def do_AUTHENTICATE(self, tag, args):  # noqa: N802 - Twisted's name
        if not self._secure():
            return self._refuse_in_clear(tag)
        return super().do_AUTHENTICATE(tag, args)

    unauth_AUTHENTICATE = (do_AUTHENTICATE, imap4.IMAP4Server.arg_atom)

    def do_LOGIN(self, tag, user, passwd):  # noqa: N802 - Twisted's name
        if not self._secure():
            return self._refuse_in_clear(tag)
        return super().do_LOGIN(tag, user, passwd)

    unauth_LOGIN = (do_LOGIN, imap4.IMAP4Server.arg_astring, imap4.IMAP4Server.arg_finalastring)

    def _client(self) -> str:
        """Who is logging in, for the password-guessing guard (the local user on this host)."""
        peer, host = self.transport.getPeer(), self.transport.getHost()
        return client_of((getattr(peer, "host", None), getattr(peer, "port", 0)),
                         (getattr(host, "host", None), getattr(host, "port", 0)))

    def _session(self, method: str) -> str:
        """How a login came, as Dovecot logs it: ``method=PLAIN, rip=…, lip=…, TLS``."""
        peer, host = self.transport.getPeer(), self.transport.getHost()
        return (f"method={method}, rip={getattr(peer, 'host', '?')}, lip={getattr(host, 'host', '?')}, "
                f"lport={getattr(host, 'port', '?')}, {'TLS' if self._secure() else 'cleartext'}")

    def authenticateLogin(self, user, passwd):  # noqa: N802 - LOGIN, with who is logging in
        creds = credentials.UsernamePassword(user, passwd)
        creds.labmail_client = self._client()
        creds.labmail_session = self._session("LOGIN")
        return self.portal.login(creds, None, imap4.IAccount)

    def authenticate(self, chal, tag):  # AUTHENTICATE, with who is logging in
        chal.labmail_client = self._client()
        chal.labmail_session = self._session(type(chal).__name__.removesuffix("Credentials").upper())
        return super().authenticate(chal, tag)

    def sendUntaggedResponse(self, message, isAsync=None):  # noqa: N802 - Twisted's name
        if message.startswith(b"SEARCH"):
            self._searched = True
        return super().sendUntaggedResponse(message, isAsync)

    def sendPositiveResponse(self, tag=None, message=b""):  # noqa: N802 - an empty SEARCH still answers "* SEARCH"
        if message == b"SEARCH completed" and not self.__dict__.pop("_searched", False):
            super().sendUntaggedResponse(b"SEARCH")  # RFC 3501 §7.2.5: the untagged SEARCH is always sent
        return super().sendPositiveResponse(tag, message)

    def spewMessage(self, id, msg, query, uid):  # noqa: N802 - Twisted's name
        """Twisted's, with each item of the answer made before any of it is written: an item that fails on one
        message (a malformed MIME header, an address in 8-bit, nesting past Python's recursion limit, a part that
        does not exist) is answered with what RFC 3501 gives for "nothing there" — an all-NIL ENVELOPE, the
        RFC 2045 §5.2 default structure (text/plain, us-ascii), an empty string — and a line in the log. Twisted
        dropped the connection instead, at every FETCH of that folder: one message anybody could send made a
        classmate's folder unreadable by every mail client that lists it with ENVELOPE or BODYSTRUCTURE."""
        wbuf = imap4.WriteBuffer(self.transport)

        def spew():
            seen_uid = False
            wbuf.write(b"* %d FETCH (" % (id,))
            for part in query:
                seen_uid = seen_uid or part.type == "uid"
                item: list[bytes] = []
                streamed: list[bool] = []

                def flush(item=item, streamed=streamed):  # a body sent by a producer: what is made goes first
                    for chunk in item:
                        wbuf.write(chunk)
                    item.clear()
                    streamed.append(True)
                    wbuf.flush()

                try:
                    if part.type == "body":
                        result = self.spew_body(part, id, msg, item.append, flush)
                    else:
                        result = getattr(self, "spew_" + part.type)(id, msg, item.append, flush)
                except Exception as exc:  # noqa: BLE001 - whatever one message does, the session goes on
                    if streamed:
                        raise
                    log.warning("IMAP FETCH %s of message %d answered as empty: %s: %s", str(part).upper(),
                                id, type(exc).__name__, str(exc)[:120])
                    item[:] = [_empty_item(part, msg)]
                    result = None
                for chunk in item:
                    wbuf.write(chunk)
                yield result
                if part is not query[-1]:
                    wbuf.write(b" ")
            if uid and not seen_uid:
                wbuf.write(b" ")
                yield self.spew_uid(id, msg, wbuf.write, wbuf.flush)
            wbuf.write(b")\r\n")
            wbuf.flush()

        return self._scheduler(spew())

    def spew_envelope(self, id, msg, _w=None, _f=None):  # noqa: A002 - Twisted's signature
        (_w or self.transport.write)(b"ENVELOPE " + _sexp(_envelope(_AsciiView(msg))))

    def spew_bodystructure(self, id, msg, _w=None, _f=None):  # noqa: A002 - Twisted's signature
        (_w or self.transport.write)(b"BODYSTRUCTURE " + _sexp(_structure(msg, True)))

    def spew_rfc822header(self, id, msg, _w=None, _f=None):  # noqa: A002 - the header as stored, 8-bit included
        (_w or self.transport.write)(b"RFC822.HEADER " + imap4._literal(msg.header_bytes()))

    def spew_body(self, part, id, msg, _w=None, _f=None):  # noqa: A002 - Twisted's signature
        """BODY[section]<partial>: header sections as stored (8-bit included); a section's bytes made before
        anything is written (a part that cannot be read fails cleanly: :meth:`spewMessage`); a partial fetch
        ``<origin.length>`` sends those bytes only, labelled ``BODY[section]<origin>`` (RFC 3501 §6.4.5, §7.4.2) —
        Twisted sent the whole section under the request's label, so a client fetching a large message in chunks
        (Thunderbird does) rebuilt it several times over. BODY[] without a range streams the stored file."""
        if not (part.header or part.mime or part.text or part.empty):  # BODY (the structure)
            (_w or self.transport.write)(b"BODY " + _sexp(_structure(msg, False)))
            return None
        if part.empty and not part.part and part.partialBegin is None:
            return super().spew_body(part, id, msg, _w, _f)
        target = _section_part(msg, part.part or [])
        if part.header or part.text:  # of the message, or of the message a message/rfc822 part encapsulates
            if part.part:
                if target.msg.get_content_type() != "message/rfc822" or not isinstance(target.msg.get_payload(), list):
                    raise LookupError("HEADER and TEXT name a message: this part is none")
                target = Part(target.msg.get_payload()[0])
            data = (target.header_bytes(part.header.negate, part.header.fields or ()) if part.header
                    else target.getBodyFile().read())
        elif part.mime:
            data = target.header_bytes()
        elif part.part:
            data = target.getBodyFile().read()
        else:
            data = msg.raw
        label = _section_label(part)
        if part.partialBegin is not None:
            data = data[part.partialBegin:part.partialBegin + part.partialLength]
            label += b"<%d>" % part.partialBegin
        (_w or self.transport.write)(label + b" " + imap4._literal(data))
        return None

    def _cbSelectWork(self, mbox, cmdName, tag):  # noqa: N802 - Twisted's name
        """Twisted's, with the OK responses RFC 3501 §6.3.1 requires and Twisted left out: PERMANENTFLAGS (\\* —
        keywords may be created — or () for EXAMINE), UIDNEXT, and UNSEEN when a message is unseen. Without
        PERMANENTFLAGS a client may take every flag for session-only; FLAGS lists the keywords in use."""
        if mbox is None:
            self.sendNegativeResponse(tag, b"No such mailbox")
            return
        self.sendUntaggedResponse(b"%d EXISTS" % (mbox.getMessageCount(),))
        self.sendUntaggedResponse(b"%d RECENT" % (mbox.getRecentCount(),))
        self.sendUntaggedResponse(b"FLAGS (" + " ".join(mbox.getFlags()).encode("ascii") + b")")
        permanent = " ".join(SYSTEM_FLAGS + mbox.folder.keywords_in_use() + ["\\*"]) if mbox.isWriteable() else ""
        self.sendPositiveResponse(None, b"[PERMANENTFLAGS (" + permanent.encode("ascii") + b")] Flags permitted.")
        first_unseen = mbox.first_unseen()
        if first_unseen:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen." % first_unseen)
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % (mbox.getUIDValidity(),))
        self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % (mbox.getUIDNext(),))
        mbox.addListener(self)
        state = b"READ-WRITE" if mbox.isWriteable() else b"READ-ONLY"
        self.sendPositiveResponse(tag, b"[" + state + b"] " + cmdName + b" successful")
        self.state = "select"
        self.mbox = mbox

    def arg_searchkeys(self, line):
        """SEARCH keys with strings sent as literals (RFC 3501 §4.3: how a client sends non-ASCII text — imaplib,
        Thunderbird): Twisted's parser never asked for the literal, searched for "{5}" (nearly every message
        matched) and took the literal's bytes for a new command. Each literal is read (``+`` continuation), stands
        as a placeholder while the rest is parsed, then takes its place in the query."""
        return self._searchkeys(line, [], secrets.token_hex(8).encode())

    def do_SEARCH(self, tag, charset, query, uid=0):  # noqa: N802 - Twisted's name
        """RFC 3501 §6.4.4: a charset other than UTF-8 and US-ASCII is ``NO [BADCHARSET (…)]`` (it was taken and
        ignored); no search key at all is BAD (every message matched)."""
        if charset is not None and charset.upper() not in (b"UTF-8", b"US-ASCII"):
            self.sendNegativeResponse(tag, b"[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            return None
        if not query:
            self.sendBadResponse(tag, b"Missing search criteria")
            return None
        return super().do_SEARCH(tag, charset, query, uid)

    select_SEARCH = (do_SEARCH, imap4.IMAP4Server.opt_charset, arg_searchkeys)

    def _IMAP4Server__ebSearch(self, failure, tag):  # noqa: N802 - Twisted's private name
        """A malformed search says what is wrong (Twisted sent Python's own words: "pop from empty list")."""
        if failure.check(IndexError):
            self.sendBadResponse(tag, b"Missing parameter for a search key")
        elif failure.check(imap4.IllegalQueryError, imap4.IllegalIdentifierError, ValueError):
            self.sendBadResponse(tag, b"Invalid search: " + str(failure.value).encode("ascii", "replace")[:200])
        else:
            log.error("IMAP SEARCH failed: %s", failure.getTraceback())
            self.sendBadResponse(tag, b"SEARCH failed")

    def _searchkeys(self, line, literals: list, token: bytes):
        found = _TRAILING_LITERAL.search(line)
        if found is None:
            query = imap4.parseNestedParens(line)
            return (_put_literals(query, literals, token) if literals else query), b""
        head = line[:found.start()] + b'"%s-%d"' % (token, len(literals))
        waiting = self._stringLiteral(int(found.group(1)))
        return waiting.addCallback(lambda got: self._searchkeys(head + got[1], literals + [got[0]], token))

    def lookupCommand(self, cmd):  # noqa: N802 - Twisted's name; a non-ASCII command is unknown, not a crash
        try:
            cmd.decode("ascii")
        except UnicodeDecodeError:
            return None
        return super().lookupCommand(cmd)

    def dispatchCommand(self, tag, cmd, rest, uid=None):  # noqa: N802 - "a1 LOGIN" with nothing after: BAD, not a crash
        return super().dispatchCommand(tag, cmd, b"" if rest is None else rest, uid)

    def _IMAP4Server__cbManualSearch(self, result, tag, mbox, query, uid, searchResults=None):  # noqa: N802
        """SEARCH over the messages Twisted fetched, in a worker thread: a BODY/TEXT search reads and parses every
        message (a 20 MB one takes ~0.25 s), and in the reactor thread it made every other IMAP user wait (another
        user's NOOP: up to 1 s on a mailbox with five such messages). The same filter as Twisted's, on the same
        snapshot; the answer is sent from the reactor."""
        import copy

        last_sequence = result and result[-1][0]
        last_uid = result and result[-1][1].getUID()

        def run() -> list[bytes]:
            found = []
            for sequence, msg in result:
                if self._searchFilter(copy.deepcopy(query), sequence, msg, last_sequence, last_uid):
                    found.append(b"%d" % (msg.getUID() if uid else sequence,))
            return found

        def answer(found: list[bytes]) -> None:
            if found:
                self.sendUntaggedResponse(b"SEARCH " + b" ".join(found))
            self.sendPositiveResponse(tag, b"SEARCH completed")

        return threads.deferToThread(run).addCallback(answer)  # an error: do_SEARCH's errback answers NO

    def _cbCopySelectedMailbox(self, mbox, tag, messages, mailbox, uid):  # noqa: N802 - Twisted's name
        """COPY to a folder that does not exist: ``NO [TRYCREATE]`` (RFC 9051 §6.4.7: the client may CREATE it and
        try again, as Thunderbird does). Twisted's own answer mixes text and bytes and came out as BAD server error."""
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return None
        return super()._cbCopySelectedMailbox(mbox, tag, messages, mailbox, uid)

    def _IMAP4Server__ebLogin(self, failure, tag):  # noqa: N802 - Twisted's private name, to say *why* LOGIN failed
        if failure.check(_Locked):
            self.sendNegativeResponse(tag, b"[UNAVAILABLE] " + str(failure.value).encode("ascii", "replace"))
            return
        super()._IMAP4Server__ebLogin(failure, tag)

    def do_FETCH(self, tag, messages, query, uid=0):  # a non-PEEK body fetch sets \Seen (RFC 3501 §6.4.5)
        sets_seen = any((getattr(q, "type", None) == "body" and not getattr(q, "peek", False)  # BODY[…], not BODY
                         and bool(q.header or q.mime or q.text or q.empty))
                        or getattr(q, "type", None) in ("rfc822", "rfc822text") for q in query)
        if sets_seen and self.mbox is not None and self.mbox.isWriteable():
            try:
                self.mbox.store(messages, ["\\Seen"], 1, uid)
            except Exception:
                log.exception("setting \\Seen")
        return super().do_FETCH(tag, messages, query, uid)

    select_FETCH = (do_FETCH, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_fetchatt)

    def _decoded(self, name, count, query, id, msg):
        """SEARCH on header keys: the string as text (Twisted compared bytes with str), against the header's text
        with its RFC 2047 encoded words decoded — ``SUBJECT Café`` finds ``=?utf-8?q?Caf=C3=A9?=``, as Dovecot
        does (RFC 3501 §6.4.4: a substring of the field's text)."""
        for i in range(count):
            if i < len(query) and isinstance(query[i], bytes):
                query[i] = query[i].decode("utf-8", "replace")
        return getattr(imap4.IMAP4Server, f"search_{name}")(self, query, id, _DecodedView(msg))

    def search_SUBJECT(self, query, id, msg):
        return self._decoded("SUBJECT", 1, query, id, msg)

    def search_FROM(self, query, id, msg):
        return self._decoded("FROM", 1, query, id, msg)

    def search_TO(self, query, id, msg):
        return self._decoded("TO", 1, query, id, msg)

    def search_CC(self, query, id, msg):
        return self._decoded("CC", 1, query, id, msg)

    def search_BCC(self, query, id, msg):
        return self._decoded("BCC", 1, query, id, msg)

    def search_HEADER(self, query, id, msg):
        """HEADER field "": every message that has the field (RFC 3501 §6.4.4), not every message."""
        if len(query) >= 2 and query[1] in (b"", ""):
            name = query.pop(0)
            query.pop(0)
            name = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            return any(k.lower() == name.lower() for k, _v in msg.getHeaders(False, name).items())
        return self._decoded("HEADER", 2, query, id, msg)

    def search_BODY(self, query, id, msg):
        """The body as stored, or its text once decoded (quoted-printable, base64, the part's charset): ``BODY
        crème`` finds a message whose text says "cr=C3=A8me" — a substring of the text, RFC 3501 §6.4.4, as Dovecot."""
        needle = query.pop(0)
        return _body_matches(msg, needle)

    def search_TEXT(self, query, id, msg):
        """The header or the body (RFC 3501 §6.4.4; Twisted searched the body only)."""
        needle = query.pop(0)
        text = needle.decode("utf-8", "replace") if isinstance(needle, bytes) else needle
        headers = " ".join(_decode_words(v) for _k, v in msg.getHeaders(True).items())
        return text.lower() in headers.lower() or _body_matches(msg, needle)

    # Date keys (RFC 3501 §6.4.4): "disregarding time and timezone". Twisted parses the date with a str pattern on
    # the bytes it was given, and compares whole time tuples: each SEARCH SINCE from a real client failed with BAD.
    def _day(self, query) -> tuple[int, int, int]:
        token = query.pop(0)
        text = (token.decode("ascii", "replace") if isinstance(token, bytes) else str(token)).strip('"')
        try:
            parsed = time.strptime(text, "%d-%b-%Y")
        except ValueError:
            raise imap4.IllegalQueryError(f"date {text!r}: d-Mon-yyyy expected, e.g. 1-Dec-2026") from None
        return parsed.tm_year, parsed.tm_mon, parsed.tm_mday

    @staticmethod
    def _internal_day(msg) -> tuple[int, int, int]:
        when = time.localtime(getattr(msg, "date", 0) or 0)  # the internal date, as getInternalDate writes it
        return when.tm_year, when.tm_mon, when.tm_mday

    @staticmethod
    def _sent_day(msg) -> tuple[int, int, int] | None:
        value = msg.getHeaders(False, "date").get("date", "")
        parsed = email.utils.parsedate_tz(value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
        return (parsed[0], parsed[1], parsed[2]) if parsed else None

    def search_SINCE(self, query, id, msg):
        return self._internal_day(msg) >= self._day(query)

    def search_BEFORE(self, query, id, msg):
        return self._internal_day(msg) < self._day(query)

    def search_ON(self, query, id, msg):
        return self._internal_day(msg) == self._day(query)

    def search_SENTSINCE(self, query, id, msg):
        day, sent = self._day(query), self._sent_day(msg)
        return sent is not None and sent >= day

    def search_SENTBEFORE(self, query, id, msg):
        day, sent = self._day(query), self._sent_day(msg)
        return sent is not None and sent < day

    def search_SENTON(self, query, id, msg):
        day, sent = self._day(query), self._sent_day(msg)
        return sent is not None and sent == day

    def _cbAppendGotMailbox(self, mbox, tag, flags, date, message):  # APPEND without flags: Twisted gets None
        return super()._cbAppendGotMailbox(mbox, tag, flags or [], date, message)


class _Refusal(Protocol):
    """Beyond the lab's connection budget: ``* BYE [UNAVAILABLE]`` on port 143 (RFC 5530), the connection
    aborted at once on 993 (nothing can be said before the TLS handshake)."""

    def __init__(self, tls: bool) -> None:
        self.tls = tls

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        if self.tls:
            self.transport.abortConnection()
        else:
            self.transport.write(IMAP_REFUSAL)
            self.transport.loseConnection()


class _GuardedFactory(Factory):
    """One IMAP session per connection, within the lab's connection budget (labmail.lab.limits)."""

    def __init__(self, build, *, tls: bool) -> None:
        self.build, self.tls = build, tls

    def buildProtocol(self, addr):  # noqa: N802 - Twisted's name
        protocol = self.build() if budget().admit() else _Refusal(self.tls)
        protocol.factory = self
        return protocol


class IMAPServer:
    """The school's IMAP listeners (Twisted reactor in a thread)."""

    def __init__(self, store, domains: set[str], host_name: str, pem: bytes, *, listen: str = "127.0.0.1") -> None:
        self.store, self.domains, self.host_name, self.pem, self.listen = store, domains, host_name, pem, listen
        self.open: dict[tuple[str, str], list[Mailbox]] = {}
        self._folders: dict[tuple[str, str], Folder] = {}
        self._lock = threading.Lock()
        self.portal = portal.Portal(_Realm(self), [_Checker(self)])
        self.ports: list = []

    def folder(self, address: str, name: str) -> Folder:
        with self._lock:
            key = (address, name)
            if key not in self._folders:
                self._folders[key] = Folder(self.store.maildir(address, name))
            return self._folders[key]

    def register(self, mbox: Mailbox) -> None:
        with self._lock:
            boxes = self.open.setdefault((mbox.address, mbox.name), [])
            if mbox not in boxes:
                boxes.append(mbox)

    def unregister(self, mbox: Mailbox) -> None:
        with self._lock:
            boxes = self.open.get((mbox.address, mbox.name), [])
            if mbox in boxes:
                boxes.remove(mbox)

    def broadcast(self, source: Mailbox, method: str, payload) -> None:
        """Tell the other sessions on the same folder what ``source`` changed (flags, expunges)."""
        if not payload:
            return
        for mbox in list(self.open.get((source.address, source.name), [])):
            if mbox is not source:
                getattr(mbox, method)(payload)

    def delivered(self, address: str, folder: str) -> None:
        """Called from any thread after a delivery: push ``EXISTS`` to open sessions of that folder."""
        boxes = list(self.open.get((address, folder), []))
        if boxes:
            reactor.callFromThread(lambda: [b.notify() for b in boxes])

    def _protocol(self, tls_context):
        server = LabIMAP4Server(contextFactory=tls_context)
        server.portal = self.portal
        server.challengers = {b"PLAIN": imap4.PLAINCredentials, b"LOGIN": imap4.LOGINCredentials}
        return server

    def start(self, port_993: int = 0, port_143: int = 0) -> tuple[int, int]:
        """Start the reactor thread (once) and listen; returns the two ports."""
        from twisted.internet.threads import blockingCallFromThread

        certificate = tssl.PrivateCertificate.loadPEM(self.pem)
        options = certificate.options()
        ensure_reactor()

        def listen():
            out = []
            for port, use_tls in ((port_993, True), (port_143, False)):
                factory = _GuardedFactory(lambda: self._protocol(options), tls=use_tls)
                for candidate in (port, 0):
                    try:
                        if use_tls:
                            listening = reactor.listenSSL(candidate, factory, options, interface=self.listen)
                        else:
                            listening = reactor.listenTCP(candidate, factory, interface=self.listen)
                        break
                    except Exception:
                        if candidate == 0:
                            raise
                self.ports.append(listening)
                out.append(listening.getHost().port)
            return out

        a, b = blockingCallFromThread(reactor, listen)
        return a, b

    def stop(self) -> None:
        for listening in self.ports:
            reactor.callFromThread(listening.stopListening)


_reactor_thread: threading.Thread | None = None


def ensure_reactor() -> None:
    """Run Twisted's (global, not restartable) reactor in a daemon thread, once per process."""
    global _reactor_thread
    if _reactor_thread is None:
        from twisted.python import log as twisted_log

        twisted_log.PythonLoggingObserver(loggerName="labmail.lab.twisted").start()
        _reactor_thread = threading.Thread(target=lambda: reactor.run(installSignalHandlers=False), name="twisted",
                                           daemon=True)
        _reactor_thread.start()
        deadline = time.monotonic() + 10
        while not reactor.running and time.monotonic() < deadline:
            time.sleep(0.005)
