"""A student's machine that reaches the class lab only (tests/test_class_lab.py puts this folder on PYTHONPATH).

Every TCP connection and every UDP datagram of the process (a notebook kernel, the ``labmail`` command) must go to
``LABMAIL_TEST_ONLY_ADDRESS`` — the address the class lab listens on. Anything else (127.0.0.1, where a lab of the
student's own would be, or the Internet) fails loudly: the course must work through the class lab alone.
Unix sockets (the kernels' own transport) are not network and stay allowed.
"""

import os
import socket

_ONLY = os.environ.get("LABMAIL_TEST_ONLY_ADDRESS")
if _ONLY:
    _real_connect = socket.socket.connect
    _real_connect_ex = socket.socket.connect_ex
    _real_sendto = socket.socket.sendto

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]).split("%")[0] not in (_ONLY, f"::ffff:{_ONLY}"):
            raise OSError(f"class lab test: this student's machine reaches {_ONLY} only, not {address[0]}")

    def _connect(self, address):
        _check(self, address)
        return _real_connect(self, address)

    def _connect_ex(self, address):
        _check(self, address)
        return _real_connect_ex(self, address)

    def _sendto(self, data, *args):
        _check(self, args[-1])
        return _real_sendto(self, data, *args)

    socket.socket.connect = _connect
    socket.socket.connect_ex = _connect_ex
    socket.socket.sendto = _sendto
