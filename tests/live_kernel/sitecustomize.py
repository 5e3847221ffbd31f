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

# And, as in the test process (tests/conftest.py), nothing leaves the loopback: a kernel of the live tier reaches the
# school's servers and the lab on 127.0.0.0/8 only.
import ipaddress as _ipaddress

_real_connect = socket.socket.connect


def _loopback_only(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            if not _ipaddress.ip_address(host.split("%")[0]).is_loopback:
                raise OSError(f"live tier: no network beyond loopback ({host})")
        except ValueError:  # a name: resolved by getaddrinfo above, connected by address by the callers
            pass
    return _real_connect(self, address)


socket.socket.connect = _loopback_only
