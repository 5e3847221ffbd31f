"""Password-guessing protection shared by every login of the lab (SMTP AUTH, IMAP LOGIN, POP3 PASS/AUTH).

Like fail2ban in front of Mailcow, but per account: after :data:`LOCK_AFTER` failed logins within :data:`WINDOW`
seconds, the account refuses every login — even with the right password — for :data:`LOCK_FOR` seconds, and each
protocol says so in a clear reply. Every failure and every lockout is logged (the address and the protocol, never
the password).
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


class LoginGuard:
    """Counts failed logins per account and locks an account that fails too often."""

    def __init__(self, *, lock_after: int = LOCK_AFTER, window: float = WINDOW, lock_for: float = LOCK_FOR,
                 clock=time.monotonic) -> None:
        self.lock_after, self.window, self.lock_for, self.clock = lock_after, window, lock_for, clock
        self._failures: dict[str, deque[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Raise :class:`AccountLocked` if ``address`` is locked now."""
        with self._lock:
            until = self._locked.get(address)
            if until is None:
                return
            left = until - self.clock()
            if left <= 0:
                del self._locked[address]
                return
        raise AccountLocked(address, left)

    def failed(self, address: str, protocol: str) -> None:
        """Record a failed login; lock the account when it has failed too often in the window."""
        now = self.clock()
        with self._lock:
            if address not in self._failures and len(self._failures) >= _MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
            failures = self._failures.setdefault(address, deque())
            failures.append(now)
            while failures and failures[0] < now - self.window:
                failures.popleft()
            count = len(failures)
            if count >= self.lock_after:
                self._locked[address] = now + self.lock_for
                failures.clear()
        log.warning("%s login failed for %s (%d in %.0f s)", protocol, address, count, self.window)
        if count >= self.lock_after:
            log.warning("%s: %s locked for %.0f s after %d failed logins (password guessing)", protocol, address,
                        self.lock_for, count)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)
