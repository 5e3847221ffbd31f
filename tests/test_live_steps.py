"""Steps 7, 8 and 12 in the live world: the student's real mailboxes outside, read the live way — over IMAP (the
password typed with getpass, never kept) or pasted into the notebook's folder — and graded from there.

The "outside world" is the embedded lab's providers, reached as real servers are: the live configuration names the
student's addresses, the IMAP server ``host:port`` and the CA, exactly the keys a student at a school sets for Gmail
(``imap.gmail.com:993``) and Microsoft 365 (``outlook.office365.com:993``). The real Authentication-Results forms of
Gmail (authserv-id ``mx.google.com``, ARC) and Microsoft 365 (no authserv-id, ``compauth``) are taken verbatim from
public messages (sources cited) with the student's domain in place of the original one.
"""

from __future__ import annotations

import email.utils
import getpass
import json
import time

import pytest
from labs import private_lab, use_lab

from labmail import course, errors, grading, headers, mail
from labmail.errors import CourseError, UsageError
from labmail.world import current

DOMAIN = "jean-emile.labmail.cloud"
GMAIL, OUTLOOK = "jean-emile@gmail.test", "jean-emile@outlook.test"

# postalsys/mailauth test/fixtures/arc-fail.eml @ d2616c6 (a message received by Gmail), its AR's form with our domain
GMAIL_FORM = ("https://github.com/postalsys/mailauth/blob/d2616c6bee77cf0cf77fe6ea6743b856696f081e/test/fixtures/arc-fail.eml",
              "Authentication-Results: mx.google.com;\r\n"
              "       dkim=pass header.i=@{d} header.s=dkim header.b=0ZgeYqhD;\r\n"
              "       arc=pass (i=1 spf=pass spfdomain={d} dkim=pass dkdomain={d} dmarc=pass fromdomain={d});\r\n"
              "       spf=pass (google.com: domain of tintin@{d} designates 203.0.113.10 as permitted sender) "
              "smtp.mailfrom=tintin@{d};\r\n"
              "       dmarc=pass (p=QUARANTINE sp=QUARANTINE dis=NONE) header.from={d}")
# lieser/dkim_verifier test/unittest/arhParserSpec.mjs.js @ 1badb6c (Exchange Online / Microsoft 365), same
M365_FORM = ("https://github.com/lieser/dkim_verifier/blob/1badb6c8d639bd5973f870fa7bfc6f96facba9ca/test/unittest/arhParserSpec.mjs.js",
             "Authentication-Results: spf=pass (sender IP is 203.0.113.10)\r\n"
             " smtp.mailfrom={d}; dkim=pass (signature was verified)\r\n"
             " header.d={d};dmarc=pass action=none\r\n"
             " header.from={d};compauth=pass reason=100")


def _received_message(form: str, subject: str, *, sender_domain: str = DOMAIN, to: str = GMAIL) -> str:
    now = email.utils.formatdate(time.time() + 1)
    return (f"Received: from mailcow.labmail.cloud (mailcow.labmail.cloud [203.0.113.10]) by mx.example.net with ESMTPS "
            f"id 1a2b3c; {now}\r\n" + form.format(d=sender_domain) + "\r\n"
            f"From: Tintin <tintin@{sender_domain}>\r\nTo: {to}\r\nSubject: {subject}\r\nDate: {now}\r\n"
            f"Message-ID: <{time.time()}@{sender_domain}>\r\n\r\nBonjour !\r\n")


@pytest.fixture(scope="module")
def live_lab(tmp_path_factory, world_template):
    with private_lab(tmp_path_factory, world_template, "live-steps") as running:
        yield running


@pytest.fixture
def sent(live_lab, monkeypatch):
    """Step 12 done the reference way in the lab (SPF, DKIM, DMARC published; « Validation finale » sent to both)."""
    cfg, _passwords = live_lab
    use_lab(monkeypatch, cfg)
    etat = course.prepare(12)
    assert mail.submit(etat.tintin, [GMAIL, OUTLOOK], "Validation finale", "Bonjour !").accepted
    grading.final_message("Validation finale", since=etat.started)  # the embedded lab's own check first
    return cfg, etat


def _go_live(monkeypatch, cfg, tmp_path, *, imap: bool = True):
    """Switch this process's configuration to the live world, the lab's providers playing Gmail and Microsoft 365."""
    world = current(cfg)
    gmail_imap = world.connect_address(course.PROVIDER_IMAP["gmail.test"], 993)
    for key, value in {"world": "live", "dns_server": "{}:{}".format(*world.dns_server),
                       "resolver": "{}:{}".format(*world.resolvers[0]), "ca_file": world.ca_file,
                       "gmail_address": GMAIL, "outlook_address": OUTLOOK,
                       "imap_gmail": "{}:{}".format(*gmail_imap) if imap else "127.0.0.1:9",
                       "imap_outlook": "127.0.0.1:9"}.items():  # nothing listens: Microsoft's IMAP "closed"
        monkeypatch.setenv(f"LABMAIL_{key.upper()}", str(value))
    monkeypatch.chdir(tmp_path)  # the notebook's folder: pasted sources are kept here
    return world


def test_step_12_is_graded_from_an_imap_read_and_a_pasted_message(sent, monkeypatch, tmp_path):
    cfg, etat = sent
    local = current(cfg)
    secret = mail.stored_password(GMAIL, None, local)
    _folder, outlook_source = course.find(OUTLOOK, "Validation finale", since=etat.started)
    _go_live(monkeypatch, cfg, tmp_path)
    assert course.external_mailboxes() == (GMAIL, OUTLOOK) and current().kind == "live"
    asked = []

    def typed(prompt=""):
        asked.append(prompt)
        return secret

    monkeypatch.setattr(getpass, "getpass", typed)
    monkeypatch.setattr(course, "_TYPED", {})  # this kernel has typed nothing yet
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # nobody to type a password: only pasted sources count
    with pytest.raises(AssertionError, match="gmail.test : .*aucune source collée"):
        grading.final_message("Validation finale", since=etat.started)
    monkeypatch.delenv("NBGRADER_EXECUTION")
    with pytest.raises(AssertionError, match="outlook.test : IMAP injoignable"):  # Outlook: not pasted, IMAP closed
        grading.final_message("Validation finale", since=etat.started)
    assert len(asked) == 2  # typed for each mailbox (Outlook's dropped: its server did not answer)
    path = course.save_pasted(outlook_source.decode("utf-8", "surrogateescape").replace("\r\n", "\n"), folder="INBOX",
                              address=OUTLOOK)
    assert path.parent == tmp_path / course.PASTE_FOLDER and path.read_bytes() == outlook_source  # CRLF again
    grading.final_message("Validation finale", since=etat.started)  # Gmail over IMAP, Outlook pasted
    folder, source = course.find(GMAIL, "Validation finale", since=etat.started)
    assert len(asked) == 2 and all("jamais écrit sur le disque" in p for p in asked)  # Gmail's typed once this session
    assert secret not in "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    monkeypatch.setattr(course, "_TYPED", {GMAIL: "pas-le-bon"})  # a wrong one: said, dropped, asked again next time
    with pytest.raises(errors.MailError):
        course.find(GMAIL, "Validation finale", since=etat.started)
    assert course._TYPED == {}
    assert folder == "INBOX" and b"dkim=pass" in source
    # step 8's graded exercise on the message read the live way
    verdict = headers.analyze(source).authentication_results[0]
    grading.verdict({m: verdict.get(m).result for m in ("spf", "dkim", "dmarc")}, source)
    with pytest.raises(AssertionError):
        grading.verdict({"spf": "none", "dkim": "none", "dmarc": "none"}, source)
    # the unmodified student version (nothing sent): not found, said
    with pytest.raises(AssertionError, match="ni dans la boîte de réception ni dans le spam"):
        grading.final_message("Jamais envoyé", since=etat.started, timeout=0.5)


def test_pasted_sources_with_gmail_and_microsoft_365_forms_are_graded(live_lab, monkeypatch, tmp_path):
    """Only pasted (e.g. a school where IMAP is closed): Gmail's form with ARC, Microsoft 365's without authserv-id
    and with compauth; a message from another domain, or with a fail, does not pass; under nbgrader nothing is typed."""
    cfg, _passwords = live_lab
    use_lab(monkeypatch, cfg)
    started = time.time() - 5
    _go_live(monkeypatch, cfg, tmp_path, imap=False)
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": pytest.fail("no password is asked under nbgrader"))
    course.save_pasted(_received_message(GMAIL_FORM[1], "Validation finale", to=GMAIL), address=GMAIL)
    with pytest.raises(AssertionError, match="outlook.test : .*aucune source collée"):
        grading.final_message("Validation finale", since=started)
    course.save_pasted(_received_message(M365_FORM[1], "Validation finale", to=OUTLOOK).encode(), folder="INBOX",
                       address=OUTLOOK)
    grading.final_message("Validation finale", since=started)
    _folder, m365 = course.find(OUTLOOK, "Validation finale", since=started)
    report = headers.analyze(m365, recompute=False)
    assert report.authentication_results[0].authserv_id in (None, "")
    assert report.authentication_results[0].get("compauth").result == "pass"
    gmail_ar = headers.analyze(course.find(GMAIL, "Validation finale", since=started)[1], recompute=False)
    assert gmail_ar.authentication_results[0].get("arc").result == "pass"
    # a pass from someone else's domain is not the student's
    course.save_pasted(_received_message(GMAIL_FORM[1], "Autre", sender_domain="posteo.net"), address=GMAIL)
    course.save_pasted(_received_message(M365_FORM[1], "Autre", sender_domain="posteo.net", to=OUTLOOK), address=OUTLOOK)
    with pytest.raises(AssertionError, match="pas de votre domaine"):
        grading.final_message("Autre", since=started)
    # a spam-folder copy does not pass the final check
    course.save_pasted(_received_message(GMAIL_FORM[1], "En spam"), folder="Junk", address=GMAIL)
    course.save_pasted(_received_message(M365_FORM[1], "En spam", to=OUTLOOK), address=OUTLOOK)
    with pytest.raises(AssertionError, match="dans Junk"):
        grading.final_message("En spam", since=started)
    failing = GMAIL_FORM[1].replace("dmarc=pass", "dmarc=fail")
    course.save_pasted(_received_message(failing, "Échec"), address=GMAIL)
    course.save_pasted(_received_message(M365_FORM[1], "Échec", to=OUTLOOK), address=OUTLOOK)
    with pytest.raises(AssertionError, match="dmarc=fail"):
        grading.final_message("Échec", since=started)


@pytest.mark.parametrize("source, fragment", [
    ("Subject: coucou\n\nbonjour\n", "pas la source complète"),
    ("", "pas la source complète"),
    (b"\xff\xfe" * 10, "pas la source complète"),
    ("Received: from x by y; Mon, 1 Dec 2026 10:00:00 +0000\nAuthentication-Results: a; spf=pass\n"
     + "X: " + "y" * (11 * 1024 * 1024) + "\n\n", "au plus 10 Mio"),
])
def test_a_paste_that_is_not_a_received_message_is_refused_and_nothing_is_kept(tmp_path, source, fragment):
    with pytest.raises(UsageError, match=fragment):
        course.save_pasted(source, directory=tmp_path / "m")
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").iterdir())
    with pytest.raises(UsageError, match="INBOX"):
        course.save_pasted(_received_message(M365_FORM[1], "x"), folder="Spam", directory=tmp_path / "m")


def test_8_bit_pasted_sources_are_kept_byte_for_byte(tmp_path):
    raw = _received_message(M365_FORM[1], "Élève à l'étape 8").encode("utf-8") + "Écrit en UTF-8 brut\r\n".encode()
    path = course.save_pasted(raw, directory=tmp_path)
    assert path.read_bytes() == raw
    assert course.pasted(tmp_path) == [("INBOX", None, raw)]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["folder"] == "INBOX" and meta["address"] is None


def test_the_paste_widget_saves_what_the_function_saves(tmp_path, monkeypatch):
    from labmail.widgets import paste_message

    monkeypatch.chdir(tmp_path)
    form = paste_message(OUTLOOK)
    form.source.value = "pas un message"
    form.button.click()
    assert "pas la source complète" in form.message.value and form.saved is None
    form.source.value = _received_message(M365_FORM[1], "Collé")
    form.folder.value = "Junk"
    form.button.click()
    assert form.saved is not None and "dmarc=pass" in form.message.value and form.source.value == ""
    assert course.pasted() == [("Junk", OUTLOOK, form.saved.read_bytes())]


def test_live_world_without_external_addresses_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("LABMAIL_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("LABMAIL_WORLD", "live")
    monkeypatch.setenv("LABMAIL_PRENOM", "jean-emile")
    with pytest.raises(CourseError, match="gmail_address, outlook_address"):
        course.external_mailboxes()
    from labmail import config
    from labmail.errors import ConfigError

    with pytest.raises(ConfigError, match="adresse de courriel complète"):
        config.save(gmail_address="jean")


def test_imap_search_by_date_follows_rfc_3501(sent):
    """RFC 3501 §6.4.4: SINCE/BEFORE/ON compare the internal date's day, SENT* the Date: header's, "disregarding time
    and timezone" — what a real client (here imaplib, as mail.imap_search) sends to find a recent message. Twisted's
    own keys answered BAD to any SINCE (a str pattern on bytes)."""
    import imaplib

    cfg, _etat = sent
    world = current(cfg)
    client = mail.imap_connect(GMAIL, host=course.PROVIDER_IMAP["gmail.test"], world=world)
    try:
        client.select("INBOX", readonly=True)
        today = time.strftime("%d-%b-%Y", time.localtime())
        tomorrow = time.strftime("%d-%b-%Y", time.localtime(time.time() + 86400))
        yesterday = time.strftime("%d-%b-%Y", time.localtime(time.time() - 86400))

        def search(*keys):
            typ, data = client.uid("SEARCH", *keys)
            assert typ == "OK", data
            return data[0].split()

        every = search("ALL")
        assert every and search("SINCE", today) == every and search("ON", today) == every
        assert search("SINCE", tomorrow) == [] and search("BEFORE", today) == [] and search("BEFORE", tomorrow) == every
        assert search("SENTSINCE", yesterday) == every and search("SENTBEFORE", yesterday) == []
        assert search("SINCE", today, "SUBJECT", '"Validation finale"')
        with pytest.raises(imaplib.IMAP4.error, match="d-Mon-yyyy"):
            search("SINCE", "2026-12-01")
    finally:
        client.logout()
