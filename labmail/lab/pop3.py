"""POP3 of the school's server (RFC 1939, CAPA RFC 2449, STLS RFC 2595), over the same Maildirs as the rest.

Ports: 995 (implicit TLS) and 110 (STLS; no password before TLS, like Dovecot's
``disable_plaintext_auth = yes``). The maildrop is locked for the session; ``DELE`` only marks, and the
messages are removed at ``QUIT`` (the UPDATE state): a client that drops the connection deletes nothing.
This is what the course's step 6 observes: with "leave messages on server" off, a POP client deletes the
message from the server, and the webmail no longer shows it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
from pathlib import Path

from .guard import AccountLocked, client_of

log = logging.getLogger("labmail.lab.pop3")

CAPS = ["CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "USER", "SASL PLAIN"]


class POP3Session:
    def __init__(self, server: "POP3Server", reader, writer, *, tls: bool, stls: bool) -> None:
        self.server, self.reader, self.writer = server, reader, writer
        self.tls, self.stls = tls, stls
        self.user: str | None = None
        self.address: str | None = None
        self.messages: list[tuple[str, Path, int]] = []  # (key, path, size on the wire)
        self.deleted: set[int] = set()
        self.lock: asyncio.Lock | None = None

    async def send(self, line: str) -> None:
        self.writer.write(line.encode("utf-8") + b"\r\n")
        await self.writer.drain()

    async def run(self) -> None:
        await self.send(f"+OK {self.server.host_name} POP3 ready.")
        try:
            while True:
                try:
                    # a minute to log in (Dovecot's login processes drop idle clients too), then RFC 1939's 10 minutes
                    raw = await asyncio.wait_for(self.reader.readline(), timeout=600 if self.address else 60)
                except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
                    await self.send("-ERR Line too long or idle for too long.")
                    return
                if not raw:
                    return  # dropped: nothing deleted (RFC 1939 §6)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                command, _, arg = line.partition(" ")
                handler = getattr(self, f"cmd_{command.upper()}", None)
                if handler is None:
                    await self.send("-ERR Unknown command.")
                    continue
                if await handler(arg.strip()) == "quit":
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            if self.lock is not None and self.lock.locked():
                self.lock.release()

    # -- AUTHORIZATION state ---------------------------------------------------
    def _cleartext_refused(self) -> bool:
        return not self.tls

    async def cmd_CAPA(self, arg):
        """Before STLS on port 110, no login method is announced (they are refused there, RFC 2595 §4 and §7: as
        Dovecot with disable_plaintext_auth): a client that took "SASL PLAIN" at its word would send its password
        with AUTH PLAIN's initial response before being told no."""
        caps = CAPS + (["STLS"] if self.stls and not self.tls else [])
        if self._cleartext_refused():
            caps = [cap for cap in caps if cap not in ("USER", "SASL PLAIN")]
        await self.send("+OK")
        for cap in caps:
            await self.send(cap)
        await self.send(".")

    async def cmd_STLS(self, arg):
        if not self.stls or self.tls or self.address:
            await self.send("-ERR STLS not available now.")
            return
        # What was sent in clear behind STLS is thrown away, never run inside TLS (CVE-2011-0411; as Dovecot, and as
        # aiosmtpd does for STARTTLS) — before the +OK: anything in the buffer now was sent before the client read it,
        # while its TLS handshake comes after. The reader has no public way to drop its buffer.
        self.reader._buffer.clear()  # type: ignore[attr-defined]  # noqa: SLF001
        await self.send("+OK Begin TLS negotiation now.")
        await self.writer.start_tls(self.server.tls_context)
        self.tls = True

    async def cmd_USER(self, arg):
        if self.address:
            await self.send("-ERR Already logged in.")
        elif self._cleartext_refused():
            await self.send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
        else:
            self.user = arg
            await self.send("+OK")

    async def cmd_PASS(self, arg):
        if self.address or self.user is None:
            await self.send("-ERR No username given.")
            return
        await self._login(self.user, arg, "USER")

    async def cmd_AUTH(self, arg):
        if self.address:  # AUTHORIZATION state only (RFC 5034 §4): it logged in again, the first lock kept
            await self.send("-ERR Already logged in.")
            return
        mechanism, _, initial = arg.partition(" ")
        if mechanism.upper() != "PLAIN":
            await self.send("-ERR Unsupported authentication mechanism.")
            return
        if self._cleartext_refused():
            await self.send("-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.")
            return
        if not initial:
            await self.send("+ ")
            try:
                initial = (await asyncio.wait_for(self.reader.readline(), 60)).decode("ascii", "replace").strip()
            except (ValueError, asyncio.LimitOverrunError, asyncio.TimeoutError):  # over 8 KiB, or nothing for a minute
                await self.send("-ERR Authentication line too long or too late.")
                return "quit"
        try:
            _authz, login, password = base64.b64decode(initial).decode("utf-8").split("\0")
        except (ValueError, UnicodeDecodeError):
            await self.send("-ERR Invalid base64 data.")
            return
        await self._login(login, password, "PLAIN")

    async def _login(self, login: str, password: str, method: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            client = client_of(self.writer.get_extra_info("peername"), self.writer.get_extra_info("sockname"))
            account = await loop.run_in_executor(self.server.executor, self.server.store.authenticate, login, password,
                                                 "POP3", client)
        except AccountLocked as exc:
            await self.send(f"-ERR [AUTH] {exc.text.en}")
            self.user = None
            return
        if account is None or account.domain not in self.server.domains:
            log.warning("POP3 authentication failed for %s", login)
            await asyncio.sleep(0.5)
            await self.send("-ERR [AUTH] Authentication failed.")
            self.user = None
            return
        lock = self.server.locks.setdefault(account.address, asyncio.Lock())
        if lock.locked():
            await self.send("-ERR [IN-USE] Mailbox is locked by another POP3 session.")
            return
        await lock.acquire()
        self.lock, self.address = lock, account.address
        # the maildrop as (key, path, size on the wire): sizes read once per file and remembered, messages read
        # when RETR or TOP asks — a session holds one message in memory, not the mailbox (3 GiB of quota)
        self.messages = await loop.run_in_executor(self.server.executor, self.server.maildrop, account.address)
        peer, sock = self.writer.get_extra_info("peername"), self.writer.get_extra_info("sockname")
        log.info("pop3-login: Login: user=<%s>, method=%s, rip=%s, lip=%s, lport=%s, %s (%d messages)", account.address,
                 method, peer[0] if isinstance(peer, tuple) else peer, sock[0] if isinstance(sock, tuple) else sock,
                 sock[1] if isinstance(sock, tuple) else "?",
                 "TLS" if self.tls else "cleartext", len(self.messages))
        await self.send("+OK Logged in.")

    # -- TRANSACTION state -----------------------------------------------------
    def _message(self, arg: str) -> tuple[int, int] | None:
        """(number, size) of message ``arg`` if it is in the maildrop and not marked deleted."""
        if not self.address or not (arg.isascii() and arg.isdigit()) or len(arg) > 9:  # "²" is a digit to isdigit()
            return None
        number = int(arg)
        if not 1 <= number <= len(self.messages) or number in self.deleted:
            return None
        return number, self.messages[number - 1][2]

    async def _read(self, number: int) -> bytes | None:
        """The message's bytes as POP3 sends them (CRLF), read now; None if it was removed meanwhile (IMAP). A
        message an IMAP client has seen or flagged since the login was renamed (Maildir keeps flags in the name,
        and moves it from new/ to cur/): it is found again by its key, as Dovecot does."""
        key, path, size = self.messages[number - 1]
        address = self.address

        def read() -> tuple[bytes, Path] | None:
            try:
                return _crlf(path.read_bytes()), path
            except FileNotFoundError:
                found = self.server.locate(address, key)
                return None if found is None else (_crlf(found.read_bytes()), found)

        try:
            result = await asyncio.get_running_loop().run_in_executor(self.server.executor, read)
        except FileNotFoundError:  # renamed again while being read: gone or moved, either way not here now
            return None
        if result is None:
            return None
        self.messages[number - 1] = (key, result[1], size)
        return result[0]

    async def _need_login(self) -> bool:
        if not self.address:
            await self.send("-ERR Unknown command in AUTHORIZATION state: log in first.")
            return True
        return False

    async def cmd_STAT(self, arg):
        if await self._need_login():
            return
        live = [size for i, (_k, _p, size) in enumerate(self.messages, 1) if i not in self.deleted]
        await self.send(f"+OK {len(live)} {sum(live)}")

    async def cmd_LIST(self, arg):
        await self._scan(arg, lambda i, _key, size: f"{i} {size}")

    async def cmd_UIDL(self, arg):
        await self._scan(arg, lambda i, key, _size: f"{i} {key}")

    async def _scan(self, arg, line) -> None:
        """LIST and UIDL: one message (``+OK`` and its line) or every message not marked deleted."""
        if await self._need_login():
            return
        if arg:
            found = self._message(arg)
            await self.send(f"+OK {line(found[0], self.messages[found[0] - 1][0], found[1])}" if found
                            else "-ERR No such message.")
            return
        await self.send("+OK")
        for i, (key, _path, size) in enumerate(self.messages, 1):
            if i not in self.deleted:
                await self.send(line(i, key, size))
        await self.send(".")

    async def _multiline(self, data: bytes) -> None:
        out = [b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n")]
        body = b"\r\n".join(out)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.writer.write(body + b".\r\n")
        await self.writer.drain()

    async def _need_message(self, arg):
        """The (number, size) of message ``arg`` for a logged-in session, or None after saying why not."""
        if await self._need_login():
            return None
        found = self._message(arg)
        if not found:
            await self.send("-ERR No such message.")
        return found or None

    async def cmd_RETR(self, arg):
        found = await self._need_message(arg)
        if not found:
            return
        data = await self._read(found[0])
        if data is None:
            await self.send("-ERR Message was expunged by another session.")
            return
        await self.send(f"+OK {len(data)} octets")
        await self._multiline(data)

    async def cmd_TOP(self, arg):
        if await self._need_login():
            return
        number, _, lines = arg.partition(" ")
        found = self._message(number)
        if not found or not (lines.strip().isascii() and lines.strip().isdigit()):
            await self.send("-ERR No such message.")
            return
        data = await self._read(found[0])
        if data is None:
            await self.send("-ERR Message was expunged by another session.")
            return
        head, sep, body = data.partition(b"\r\n\r\n")
        kept = b"\r\n".join(body.split(b"\r\n", int(lines[:9]))[: int(lines[:9])])
        await self.send("+OK")
        await self._multiline(head + sep + kept)

    async def cmd_DELE(self, arg):
        found = await self._need_message(arg)
        if not found:
            return
        self.deleted.add(found[0])
        await self.send("+OK Marked to be deleted.")

    async def cmd_RSET(self, arg):
        if await self._need_login():
            return
        self.deleted.clear()
        await self.send("+OK")

    async def cmd_NOOP(self, arg):
        await self.send("+OK")

    async def cmd_QUIT(self, arg):
        if self.address and self.deleted:
            keys = [self.messages[i - 1][0] for i in sorted(self.deleted)]
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.server.executor, self.server.remove, self.address, keys)
            log.info("POP3 %s: %d message(s) deleted at QUIT", self.address, len(keys))
        await self.send(f"+OK Logging out{', messages deleted' if self.deleted else ''}.")
        return "quit"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class POP3Server:
    """POP3 listeners (995 TLS, 110 STLS) for the school's mailboxes."""

    def __init__(self, store, domains: set[str], host_name: str, tls_context: ssl.SSLContext, executor, *,
                 listen: str = "127.0.0.1") -> None:
        self.store, self.domains, self.host_name, self.listen = store, domains, host_name, listen
        self.tls_context, self.executor = tls_context, executor
        self.locks: dict[str, asyncio.Lock] = {}
        self.servers: list = []
        self._sizes: dict[tuple[str, int, int], int] = {}  # (path, mtime, size on disk) → size on the wire (CRLF)

    def locate(self, address: str, key: str) -> Path | None:
        """Where the INBOX message ``key`` is now (new/ or cur/, whatever its flags), or None if it was removed."""
        for sub in ("cur", "new"):
            folder = self.store._base(address) / "Maildir" / sub  # noqa: SLF001 - the store's own layout
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.split(":", 1)[0] == key:
                            return Path(entry.path)
            except FileNotFoundError:
                pass
        return None

    def maildrop(self, address: str) -> list[tuple[str, Path, int]]:
        """(key, path, size as sent) of every message of the INBOX, oldest first. A message's size on the wire
        (bare LFs become CRLF) is read once per file and remembered: logging in again reads nothing."""
        out = []
        for key, path in self.store.message_files(address):
            try:
                stat = os.stat(path)
                cache_key = (str(path), stat.st_mtime_ns, stat.st_size)
                size = self._sizes.get(cache_key)
                if size is None:
                    size = len(_crlf(path.read_bytes()))
                    if len(self._sizes) > 200_000:
                        self._sizes.clear()
                    self._sizes[cache_key] = size
            except FileNotFoundError:  # expunged meanwhile
                continue
            out.append((key, path, size))
        return out

    def remove(self, address: str, keys: list[str]) -> None:
        """Remove the messages deleted in a session (at QUIT), then tell the IMAP sessions open on that INBOX: they
        send ``* n EXPUNGE`` (RFC 3501 §7.4.1) — without it a client's sequence numbers shifted silently."""
        box = self.store.maildir(address)
        for key in keys:
            try:
                box.remove(key)
            except KeyError:
                pass  # already removed elsewhere (IMAP expunge)
        if self.store.on_deliver is not None:  # "this folder changed": new mail, or mail gone
            self.store.on_deliver(address, "INBOX")

    async def start(self, port_995: int = 0, port_110: int = 0) -> tuple[int, int]:
        async def implicit(reader, writer):
            await POP3Session(self, reader, writer, tls=True, stls=False).run()
            writer.close()

        async def plain(reader, writer):
            await POP3Session(self, reader, writer, tls=False, stls=True).run()
            writer.close()

        from .limits import POP3_REFUSAL, start_stream_server

        ports = []
        for handler, port, context in ((implicit, port_995, self.tls_context), (plain, port_110, None)):
            options = {"refusal": None if context is not None else POP3_REFUSAL,  # no text before a TLS handshake
                       "ssl": context, "limit": 8192, "ssl_handshake_timeout": 20 if context is not None else None}
            try:
                server = await start_stream_server(handler, self.listen, port, **options)
            except OSError:
                server = await start_stream_server(handler, self.listen, 0, **options)
            self.servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        return ports[0], ports[1]

    def close(self) -> None:
        for server in self.servers:
            server.close()
