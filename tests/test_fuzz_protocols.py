"""Hostile input to the lab's front-ends (SMTP, POP3, IMAP, HTTPS) and to the parsers that read what comes from
outside (autoconfig/Autodiscover documents, DMARC reports, received messages). Each example must leave the server
answering and the parser with a result or a labmail error — never a crash, never another exception.

Short here; ``make fuzz`` multiplies the examples (LABMAIL_FUZZ_SCALE).
"""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from fuzzing import count, examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labmail import autodiscover, headers, reports
from labmail.errors import LabmailError
from labmail.world import current

pytestmark = pytest.mark.fuzz
HOST = "mailcow.labmail.cloud"
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SMTP_WORDS = [b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"BDAT", b"RSET", b"NOOP", b"QUIT", b"VRFY",
              b"AUTH PLAIN", b"AUTH LOGIN", b"STARTTLS", b"PROXY TCP4", b"XCLIENT", b".", b"\x00", b"\xff\xfe"]
POP_WORDS = [b"USER", b"PASS", b"APOP", b"AUTH PLAIN", b"STAT", b"LIST", b"RETR 1", b"DELE 1", b"TOP 1 0", b"UIDL",
             b"RSET", b"NOOP", b"CAPA", b"STLS", b"QUIT"]
IMAP_WORDS = [b"LOGIN", b"AUTHENTICATE PLAIN", b"SELECT INBOX", b"FETCH 1:* (BODY[])", b"UID SEARCH ALL", b"LIST \"\" *",
              b"APPEND INBOX {5}", b"STARTTLS", b"IDLE", b"DONE", b"NOOP", b"LOGOUT", b"CAPABILITY", b"EXAMINE \"../x\""]


def _line(words):
    return st.builds(lambda w, tail, end: w + tail + end, st.sampled_from(words),
                     st.binary(max_size=120), st.sampled_from([b"\r\n", b"\n", b"\r", b""]))


def _session(words):
    return st.lists(st.one_of(_line(words), st.binary(max_size=300)), min_size=1, max_size=8)


def _exchange(address, data: bytes, *, tls: bool = False) -> None:
    sock = socket.create_connection(address, timeout=3)
    try:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            sock = context.wrap_socket(sock, server_hostname=HOST)
        sock.settimeout(0.15)
        sock.sendall(data)
        try:
            while sock.recv(65536):
                pass
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass
    except (ConnectionError, ssl.SSLError, OSError):
        pass  # the server may close on garbage: that is its right
    finally:
        sock.close()


def _still_answers(address, greeting: bytes, *, tls: bool = False) -> None:
    for _ in range(50):
        try:
            sock = socket.create_connection(address, timeout=3)
            if tls:
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
                sock = context.wrap_socket(sock, server_hostname=HOST)
            with sock:
                sock.settimeout(3)
                if greeting:
                    assert sock.recv(1024).startswith(greeting)
                else:
                    sock.sendall(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n")
                    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            return
        except (ConnectionRefusedError, TimeoutError):
            time.sleep(0.1)
    raise AssertionError(f"the server at {address} stopped answering")


@pytest.fixture(scope="module")
def endpoints(running_lab):
    return running_lab


def _where(port):
    return current().connect_address(HOST, port)


@settings(max_examples=examples(30), **FUZZ)
@given(_session(SMTP_WORDS), st.sampled_from([25, 587]))
def test_smtp_survives_hostile_sessions(lab_env, lines, port):
    count()
    address = _where(port)
    _exchange(address, b"".join(lines))
    _still_answers(address, b"220 ")


@settings(max_examples=examples(20), **FUZZ)
@given(_session(POP_WORDS))
def test_pop3_survives_hostile_sessions(lab_env, lines):
    count()
    address = _where(110)
    _exchange(address, b"".join(lines))
    _still_answers(address, b"+OK")


@settings(max_examples=examples(20), **FUZZ)
@given(st.lists(st.builds(lambda tag, line: tag + b" " + line, st.binary(min_size=1, max_size=8), _line(IMAP_WORDS)),
                min_size=1, max_size=6))
def test_imap_survives_hostile_sessions(lab_env, lines):
    count()
    address = _where(143)
    _exchange(address, b"".join(lines))
    _still_answers(address, b"* OK")


@settings(max_examples=examples(20), **FUZZ)
@given(st.sampled_from([b"GET", b"POST", b"PUT", b"\x00", b"DELETE", b"OPTIONS"]),
       st.one_of(st.sampled_from([b"/api/v1/get/domain/all", b"/Autodiscover/Autodiscover.xml", b"/../../etc/passwd",
                                  b"/mail/config-v1.1.xml", b"/%00", b"/api/v1/add/mailbox"]), st.binary(max_size=200)),
       st.binary(max_size=300))
def test_https_survives_hostile_requests(lab_env, method, path, tail):
    count()
    address = _where(443)
    _exchange(address, method + b" " + path + b" HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n" + tail + b"\r\n\r\n",
              tls=True)
    _still_answers(address, b"", tls=True)


def test_the_lab_log_shows_no_crash_after_the_fuzzing(lab_env):
    cfg, status = lab_env
    text = status.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in text and "Unhandled" not in text and "CRITICAL" not in text, text[-3000:]


# -- parsers of what comes from outside ----------------------------------------------------------------------------------
@settings(max_examples=examples(200), deadline=None)
@given(st.one_of(st.binary(max_size=500).map(lambda b: b.decode("latin-1")),
                 st.builds(lambda body: f'<?xml version="1.0"?><clientConfig><emailProvider>{body}</emailProvider>'
                                        "</clientConfig>", st.text(max_size=300))))
def test_client_configuration_documents(text):
    count()
    for parse in (autodiscover.parse_autoconfig, autodiscover.parse_autodiscover):
        try:
            servers = parse(text, "tintin@jean-emile.labmail.cloud")
        except LabmailError:
            continue
        assert all(isinstance(s.port, int) for s in servers)


@settings(max_examples=examples(150), deadline=None)
@given(st.one_of(st.binary(max_size=800),
                 st.builds(lambda inner: b"<?xml version='1.0'?><feedback>" + inner + b"</feedback>", st.binary(max_size=400))))
def test_dmarc_reports(data):
    count()
    try:
        reports.parse(data)
    except LabmailError:
        pass


@settings(max_examples=examples(150), deadline=None)
@given(st.binary(max_size=1200))
def test_received_messages_are_diagnosed_or_refused(data):
    count()
    try:
        report = headers.analyze(data, recompute=False)
    except LabmailError:
        return
    assert report.spf in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")
