"""labmail never speaks DNS over HTTPS: keep dnspython from importing its DoH stack (httpx, httpcore, h2 — ~90 ms, a
third of the engines' import time) when ``dns.query`` is first imported. Imported, before any ``dns.query`` or
``dns.resolver``, by the modules that use them (not by ``import labmail``: reading dnspython's feature table loads
``importlib.metadata``, 25 ms). No effect if ``dns.query`` was imported before; ``dns._features.force("doh", True)``
before importing ``dns.query`` brings DoH back for code that wants it."""

from __future__ import annotations

import sys

if "dns.query" not in sys.modules:
    try:
        import dns._features

        dns._features.force("doh", False)
    except (ImportError, AttributeError):  # another dnspython: nothing to do
        pass
