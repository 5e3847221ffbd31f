"""labmail — learn how mail really works by doing it (DNS, SMTP, IMAP/POP, SPF, DKIM, DMARC).

Submodules are imported on first use, so ``import labmail`` stays fast and
the lab process never loads pandas or matplotlib::

    import labmail
    labmail.lab.ensure()                       # start the embedded lab if needed
    labmail.dns.lookup("labmail.cloud", "MX")  # ask the world's DNS
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = ("checks", "config", "dkim", "dmarc", "dns", "errors", "headers", "i18n", "lab", "mail", "spf", "world")
__all__ = ["__version__", *_SUBMODULES]

if TYPE_CHECKING:  # pragma: no cover
    from . import checks, config, dkim, dmarc, dns, errors, headers, i18n, lab, mail, spf, world  # noqa: F401


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'labmail' has no attribute {name!r}")
