"""The suite's own guard: a test that tries to leave loopback fails."""

import socket

import pytest
from conftest import NetworkGuardError


@pytest.mark.parametrize("address", [("192.0.2.1", 53), ("8.8.8.8", 53), ("10.0.0.1", 80)])
def test_connect_outside_loopback_is_blocked(address):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(NetworkGuardError):
        sock.connect(address)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, pytest.raises(NetworkGuardError):
        sock.sendto(b"x", address)


def test_names_are_refused_too():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(NetworkGuardError):
        sock.connect_ex(("example.org", 80))


def test_loopback_is_allowed():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", 0))
        client.sendto(b"ping", server.getsockname())
        assert server.recv(10) == b"ping"
