"""Password-guessing protection shared by every login of the lab (SMTP AUTH, IMAP LOGIN, POP3 PASS/AUTH).

Like fail2ban in front of Mailcow, per account *and per client*: after :data:`LOCK_AFTER` failed logins within
:data:`WINDOW` seconds, that client may not log in to that account — even with the right password — for
:data:`LOCK_FOR` seconds, and each protocol says so in a clear reply. Every failure and every lockout is logged
(the address and the protocol, never the password).

A client is where the connection comes from. Everyone on a shared host comes from the same address (127.0.0.1, or
the host's own address when a class lab listens on a network address), so a connection opened on this host is
counted for the local *user* that opened it — found, as identd does, in the kernel's table of TCP sockets
(``/proc/net/tcp``). Another user who guesses passwords locks themselves out, never the mailbox's owner: nobody
can lock a classmate out. A connection from another machine (a student's container) counts for its address.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..errors import LabError

log = logging.getLogger("labmail.lab.guard")

LOCK_AFTER = 5
WINDOW = 600.0
LOCK_FOR = 300.0
_MAX_TRACKED = 20_000  # addresses remembered at most (a flood of random names cannot grow memory without bound)


class AccountLocked(LabError):
    """Too many failed logins: the account is locked for a while."""

    def __init__(self, address: str, seconds: float) -> None:
        minutes = max(1, round(seconds / 60))
        super().__init__(f"Trop d'échecs de connexion pour {address} : compte bloqué {minutes} min (protection contre "
                         "les essais de mots de passe). Vérifiez le mot de passe, puis réessayez plus tard.",
                         f"Too many failed logins for {address}: account locked for {minutes} min (password-guessing "
                         "protection). Check the password, then try again later.")
        self.address, self.seconds = address, seconds


def _proc_address(text: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6} (hex, host byte order per 32-bit word) as (ip, port)."""
    import ipaddress
    import struct

    host, port = text.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(struct.pack("<I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(words)
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def local_user(client: tuple | None, server: tuple | None) -> str | None:
    """The local user (``uid:N``) that opened the TCP connection ``client`` → ``server`` on this host, or None when
    the client is on another machine (the kernel's table holds only this host's sockets: the client's side of the
    connection is there only if it was opened here) or the table is not readable (not Linux)."""
    import ipaddress

    if not client or not server:
        return None
    try:
        ipaddress.ip_address(str(client[0]).split("%")[0])
    except ValueError:
        return None
    wanted = ((str(client[0]), int(client[1])), (str(server[0]), int(server[1])))
    needle = ":%04X " % int(client[1])  # the client's port as the table writes it: most lines are skipped unparsed
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                next(handle)
                for line in handle:
                    if needle not in line:
                        continue
                    fields = line.split()
                    if len(fields) > 7 and (_proc_address(fields[1]), _proc_address(fields[2])) == wanted:
                        return f"uid:{fields[7]}"
        except (OSError, ValueError, StopIteration):
            continue
    return None


def client_of(client: tuple | None, server: tuple | None) -> str:
    """Who is logging in, for the guard: the local user on this host, else the client's address."""
    user = local_user(client, server)
    if user is not None:
        return user
    return str(client[0]) if client else "?"


class LoginGuard:
    """Counts failed logins per account and locks an account that fails too often."""

    def __init__(self, *, lock_after: int = LOCK_AFTER, window: float = WINDOW, lock_for: float = LOCK_FOR,
                 clock=time.monotonic) -> None:
        self.lock_after, self.window, self.lock_for, self.clock = lock_after, window, lock_for, clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, address: str, client: str = "?") -> None:
        """Raise :class:`AccountLocked` if ``client`` may not log in to ``address`` now."""
        key = (address, client)
        with self._lock:
            until = self._locked.get(key)
            if until is None:
                return
            left = until - self.clock()
            if left <= 0:
                del self._locked[key]
                return
        raise AccountLocked(address, left)

    def failed(self, address: str, protocol: str, client: str = "?") -> None:
        """Record a failed login; lock that client out of the account when it has failed too often in the window."""
        now, key = self.clock(), (address, client)
        with self._lock:
            if key not in self._failures and len(self._failures) >= _MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
            failures = self._failures.setdefault(key, deque())
            failures.append(now)
            while failures and failures[0] < now - self.window:
                failures.popleft()
            count = len(failures)
            if count >= self.lock_after:
                self._locked[key] = now + self.lock_for
                failures.clear()
        log.warning("%s login failed for %s from %s (%d in %.0f s)", protocol, address, client, count, self.window)
        if count >= self.lock_after:
            log.warning("%s: %s locked for %.0f s for %s after %d failed logins (password guessing)", protocol, address,
                        self.lock_for, client, count)

    def succeeded(self, address: str, client: str = "?") -> None:
        with self._lock:
            self._failures.pop((address, client), None)
