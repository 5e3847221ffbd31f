"""How many client connections the lab holds at once — one budget shared by every service (SMTP, IMAP, POP3,
HTTPS, DNS over TCP), kept below the process's limit of open files.

Without it, a client that opens connections and sends nothing (thousands of them: one loop in a notebook) takes
every file descriptor of the process: the lab can then neither accept a classmate's connection nor open a mailbox
file, and asyncio logs "accept() out of system resource" for every try (megabytes a second). With it, a connection
beyond the budget is refused at once, the way Postfix and Dovecot say it — ``421 4.3.2`` (SMTP), ``-ERR [SYS/TEMP]``
(POP3, RFC 3206), ``* BYE [UNAVAILABLE]`` (IMAP, RFC 5530); dropped on the TLS ports and for HTTPS and DNS, where no
text can be sent before a handshake — and a reserve of descriptors stays for the lab's own work (mailbox and queue
files, the internal relays, its own DNS lookups). Sessions already open go on; new ones are accepted again as soon
as connections close (an idle one is closed by each protocol's timeout: 60 s before login for IMAP and POP3).

The budget is the soft limit of open files (raised to the hard limit at start, at most 65,536) minus a reserve of an
eighth (at least 128) and of what a burst of accepted connections can take before it is asked (:data:`BURST`);
``LABMAIL_MAX_CONNECTIONS`` lowers it (an instructor's choice, and the tests'). What is counted is what the kernel
counts — the process's open descriptors, read from ``/proc/self/fd`` (connections, and the ~35 the lab holds itself:
listeners, log, files) — so a connection that ends in any way (closed, reset, a TLS handshake that never finishes)
frees its place without bookkeeping. On a host whose hard limit is low (a few thousand), the budget is small: the
lab says so at start; raise ``ulimit -Hn`` for a class lab.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("labmail.lab.limits")

NOFILE_TARGET = 65_536
RESERVE_MIN = 128
#: the lab's asyncio listeners' backlog: each accepts up to this many waiting connections at once, before the
#: budget is asked about any of them (Twisted's ask it one by one)
LISTEN_BACKLOG = 64
#: descriptors such a burst can take at once, on the lab's dozen asyncio listeners: kept out of the budget too
BURST = 12 * LISTEN_BACKLOG
_RECOUNT = 0.25  # seconds between two counts of the open descriptors when far from the budget
_RECOUNT_NEAR = 0.02  # and when the estimate says the budget is reached
_LOG_EVERY = 10.0

SMTP_REFUSAL = b"421 4.3.2 Service not available: too many connections, try again later\r\n"
POP3_REFUSAL = b"-ERR [SYS/TEMP] too many connections, try again later\r\n"
IMAP_REFUSAL = b"* BYE [UNAVAILABLE] too many connections, try again later\r\n"


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files towards the hard one (at most :data:`NOFILE_TARGET`), as mail servers
    do at start (Debian's default soft limit is 1,024); returns the soft limit in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, NOFILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return int(soft)


def _soft_limit() -> int:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return NOFILE_TARGET if soft == resource.RLIM_INFINITY else int(soft)
    except ImportError:  # pragma: no cover - not on Linux
        return 1024


def _open_descriptors() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (not Linux): nothing to count, nothing refused
        return None


class Budget:
    """The lab's connection budget. :meth:`admit` is called once per accepted connection, from any thread."""

    def __init__(self, limit: int | None = None) -> None:
        soft = _soft_limit()
        computed = max(16, soft - max(RESERVE_MIN, soft // 8) - BURST)
        configured = os.environ.get("LABMAIL_MAX_CONNECTIONS", "").strip()
        if limit is None and configured.isdigit() and int(configured) > 0:
            limit = int(configured)
        self.limit = min(limit, computed) if limit else computed
        self._lock = threading.Lock()
        self._counted = 0  # descriptors at the last count
        self._since = 0  # connections admitted since then
        self._counted_at = -1e9
        self._refused_unlogged = 0
        self._logged_at = -1e9

    def admit(self) -> bool:
        """Whether one more connection fits; a refusal is counted and logged (at most once per 10 s)."""
        now = time.monotonic()
        with self._lock:
            estimate = self._counted + self._since
            stale = now - self._counted_at > (_RECOUNT_NEAR if estimate >= self.limit else _RECOUNT)
            if stale:
                counted = _open_descriptors()
                if counted is None:
                    return True
                self._counted, self._since, self._counted_at = counted, 0, now
                estimate = counted
            if estimate < self.limit:
                self._since += 1
                return True
            self._refused_unlogged += 1
            if now - self._logged_at >= _LOG_EVERY:
                log.warning("too many connections (%d descriptors open, budget %d): %d refused since the last notice",
                            estimate, self.limit, self._refused_unlogged)
                self._refused_unlogged, self._logged_at = 0, now
            return False


_budget: Budget | None = None
_budget_lock = threading.Lock()


def budget() -> Budget:
    """The process's budget (created at first use, after :func:`raise_open_files_limit` if the lab called it)."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = Budget()
        return _budget


class Refused(Exception):
    """Raised by a guarded factory where nothing can be said (a TLS port, DNS over TCP): asyncio gives up the
    accepted connection, and its socket — referenced by nothing any more — is closed at once (CPython frees it when
    the accepting task ends; tests/test_connection_budget.py checks such ports close at once)."""


class _Refusal(asyncio.Protocol):
    """Says why (a plain-text port) and closes."""

    def __init__(self, text: bytes) -> None:
        self.text = text

    def connection_made(self, transport) -> None:  # type: ignore[override]
        transport.write(self.text)
        transport.close()


def guarded(factory: Callable[[], asyncio.BaseProtocol], refusal: bytes | None) -> Callable[[], asyncio.BaseProtocol]:
    """An asyncio protocol factory that admits a connection within the budget, else refuses it: with ``refusal``
    written on a plain-text port, dropped at accept on a TLS port (``refusal=None``)."""
    def build() -> asyncio.BaseProtocol:
        if budget().admit():
            return factory()
        if refusal is None:
            raise Refused()
        return _Refusal(refusal)

    return build


async def start_stream_server(handler, host: str, port: int, *, refusal: bytes | None, ssl=None, limit: int = 2 ** 16,
                              **kwargs) -> asyncio.AbstractServer:
    """:func:`asyncio.start_server`, each connection admitted by the budget first (``refusal`` as in :func:`guarded`)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.BaseProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(limit=limit, loop=loop), handler, loop=loop)

    return await loop.create_server(guarded(factory, refusal), host, port, ssl=ssl, backlog=LISTEN_BACKLOG, **kwargs)
