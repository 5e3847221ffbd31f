"""The live tier's two stand-ins in a notebook kernel (tests/test_live_tier.py puts this folder on PYTHONPATH):

* the school's names resolve as its DNS answers them (``mail.ecole.test`` → 127.0.0.1), where a school's machine
  would ask the school's resolver;
* the passwords a student types at ``getpass`` prompts (their external mailboxes' app passwords) are typed from a
  file the test wrote, as nbclient cannot type.
"""

import json
import os
import socket

_PARENT = os.environ.get("LABMAIL_TEST_SCHOOL_PARENT")
if _PARENT:
    _real_getaddrinfo = socket.getaddrinfo

    def _getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.rstrip(".").endswith(_PARENT):
            host = "127.0.0.1"
        return _real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo

_TYPED = os.environ.get("LABMAIL_TEST_TYPED")
if _TYPED:
    try:
        import ipykernel.kernelbase
    except ImportError:  # not a kernel
        pass
    else:
        def _typed(self, prompt="", stream=None):
            with open(_TYPED, encoding="utf-8") as fh:
                known = json.load(fh)
            return next((password for who, password in known.items() if who in prompt), "")

        ipykernel.kernelbase.Kernel.getpass = _typed
