"""RFC 2920 pipelining of the lab's relay client (labmail.lab.outbound._sendmail), against a scripted server that
only answers once the whole batch is in: a client that waited for each reply would hang there. The lab's own MX
announces PIPELINING and takes pipelined commands (relayed mail in the other tests goes that way)."""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from labmail.lab.outbound import _NoReply, _sendmail


class Scripted:
    """One SMTP session on loopback: ``replies`` maps a command's first word (or an address) to its reply; the
    envelope commands are answered only once DATA has arrived (or, without PIPELINING, one at a time)."""

    def __init__(self, *, pipelining: bool = True, mail: str = "250 2.1.0 Ok", refuse: tuple[str, ...] = (),
                 data: str = "354 End data with <CR><LF>.<CR><LF>", close_at_once: bool = False) -> None:
        self.pipelining, self.mail, self.refuse, self.data, self.close_at_once = pipelining, mail, refuse, data, close_at_once
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []  # what arrived, read by read
        self.content = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.listener:
            conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            stream = conn.makefile("rb")
            conn.sendall(b"220 mx.test ESMTP\r\n")
            stream.readline()  # EHLO
            extensions = [b"250-mx.test", b"250-SIZE 1000000"] + ([b"250-PIPELINING"] if self.pipelining else [])
            conn.sendall(b"\r\n".join(extensions + [b"250 8BITMIME"]) + b"\r\n")
            if self.close_at_once:
                return
            batch: list[bytes] = []
            while True:
                line = stream.readline()
                if not line:
                    return
                self.received.append(line)
                batch.append(line)
                word = line.split()[0].upper()
                if self.pipelining and word != b"DATA":
                    continue
                for command in batch:
                    conn.sendall(self._reply(command).encode() + b"\r\n")
                batch = []
                if word == b"DATA":
                    break
            if not self.data.startswith("354"):
                return
            while True:
                line = stream.readline()
                if not line:
                    return
                self.content += line
                if line == b".\r\n":
                    break
            conn.sendall(b"250 2.0.0 Ok: queued as ABC\r\n")
            stream.readline()  # QUIT, or the end

    def _reply(self, command: bytes) -> str:
        text = command.decode().strip()
        word = text.split()[0].upper()
        if word == "RSET":
            return "250 2.0.0 Ok"
        if word == "MAIL":
            return self.mail
        if word == "RCPT":
            if any(r in text for r in self.refuse):
                return "550 5.1.1 <user>: Recipient address rejected"
            return "503 5.5.1 Error: need MAIL command" if not self.mail.startswith("250") else "250 2.1.5 Ok"
        if word == "DATA":
            return self.data
        return "502 5.5.2 Error: command not recognized"

    def client(self) -> smtplib.SMTP:
        client = smtplib.SMTP("127.0.0.1", self.port, timeout=5)
        client.ehlo("relay.test")
        return client


MESSAGE = b"From: a@school.test\r\nTo: b@mx.test\r\nSubject: pipelined\r\n\r\n.leading dot\r\nbody\r\n"


def test_envelope_and_data_go_in_one_batch_and_the_content_is_dot_stuffed():
    server = Scripted()
    with server.client() as client:
        assert _sendmail(client, "a@school.test", ["b@mx.test", "c@mx.test"], MESSAGE, [], reset=True) == {}
    assert [line.split(b":")[0].split()[0] for line in server.received] == [b"RSET", b"MAIL", b"RCPT", b"RCPT", b"DATA"]
    assert server.received[1] == b"MAIL FROM:<a@school.test> SIZE=%d\r\n" % len(MESSAGE)
    assert server.content.endswith(b"\r\n..leading dot\r\nbody\r\n.\r\n")  # RFC 5321 §4.5.2


def test_one_refused_recipient_is_reported_the_others_get_the_message():
    server = Scripted(refuse=("c@mx.test",))
    with server.client() as client:
        refused = _sendmail(client, "a@school.test", ["b@mx.test", "c@mx.test"], MESSAGE, [], reset=False)
    assert list(refused) == ["c@mx.test"] and refused["c@mx.test"][0] == 550
    assert server.content.endswith(b".\r\n")


def test_every_recipient_refused_ends_a_354_with_a_lone_dot():
    """RFC 2920 §3.1: a server that answers DATA with 354 after refusing every recipient gets an empty message."""
    server = Scripted(refuse=("b@mx.test",))
    with server.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        _sendmail(client, "a@school.test", ["b@mx.test"], MESSAGE, [], reset=False)
    assert refused.value.recipients["b@mx.test"][0] == 550
    assert server.content == b".\r\n"


def test_a_refused_sender_raises_as_smtplib_does():
    server = Scripted(mail="553 5.7.1 <a@school.test>: Sender address rejected", data="503 5.5.1 Error: need RCPT command")
    with server.client() as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        _sendmail(client, "a@school.test", ["b@mx.test"], MESSAGE, [], reset=False)
    assert refused.value.smtp_code == 553 and server.content == b""


def test_a_kept_session_the_server_closed_says_so_and_nothing_was_taken():
    server = Scripted(close_at_once=True)
    client = server.client()
    server.thread.join(5)
    with pytest.raises(_NoReply):
        _sendmail(client, "a@school.test", ["b@mx.test"], MESSAGE, [], reset=True)
    client.close()


def test_without_pipelining_one_command_at_a_time():
    server = Scripted(pipelining=False)
    with server.client() as client:
        assert _sendmail(client, "a@school.test", ["b@mx.test"], MESSAGE, [], reset=True) == {}
    assert [line.split()[0].split(b":")[0].upper() for line in server.received] == [b"RSET", b"MAIL", b"RCPT", b"DATA"]
