"""course.prepare: any step's starting state, from any other state, on the running lab."""

from __future__ import annotations

import secrets

import pytest

from labmail import course, mail
from labmail.dns import ZonePanel
from labmail import errors
from labmail.world import current

DOMAIN = "jean-emile.labmail.cloud"


def records(world):
    return {(r.name.rstrip(".").lower(), r.type, r.value[:10]) for r in ZonePanel(world=world).list()
            if r.type not in ("SOA", "NS")}


@pytest.fixture
def clean(lab_env):
    yield
    course.prepare(4)  # leave the zone as the other tests expect it: empty


def test_steps_in_any_order(lab_env, clean):
    world = current()
    state = course.prepare(10)
    assert state.domain == DOMAIN and state.tintin == f"tintin@{DOMAIN}"
    assert records(world) == {(DOMAIN, "MX", "10 mailcow"), (DOMAIN, "TXT", "v=spf1 ip4")}
    assert "MX publié" in " ".join(state.changes) and f"boîte tintin@{DOMAIN} créée" in state.changes
    assert course.prepare(10).changes == ()  # idempotent
    later = course.prepare(12)
    assert {r[0] for r in records(world)} == {DOMAIN, f"dkim._domainkey.{DOMAIN}", f"_dmarc.{DOMAIN}"}
    assert str(later).startswith("Étape 12 (validation finale)")
    earlier = course.prepare(9)  # back to the start of step 9: no SPF, no DKIM, no DMARC yet
    assert records(world) == {(DOMAIN, "MX", "10 mailcow")}
    assert any("retiré" in c for c in earlier.changes)
    password = earlier.password(earlier.tintin)
    assert mail.submit(earlier.tintin, earlier.milou, "prepare", "ok", password=password).accepted
    assert password not in str(earlier) and password not in repr(earlier)
    assert oct((lab_env[0].state_dir / "course-passwords.json").stat().st_mode & 0o777) == "0o600"


def test_the_instructor_step_has_autodiscover_and_going_back_removes_it(lab_env, clean):
    world = current()
    course.prepare(99)
    names = {r[0] for r in records(world)}
    assert {f"autodiscover.{DOMAIN}", f"autoconfig.{DOMAIN}", f"_autodiscover._tcp.{DOMAIN}"} <= names
    back = course.prepare(13)
    assert {r[0] for r in records(world)} == names - {f"autodiscover.{DOMAIN}", f"autoconfig.{DOMAIN}",
                                                      f"_autodiscover._tcp.{DOMAIN}"}
    assert "_autodiscover._tcp SRV retiré (étape 13 pas encore faite)" in back.changes


def test_bad_step_and_unknown_password(lab_env, clean):
    with pytest.raises(errors.ConfigError, match="Étape 42 inconnue"):
        course.prepare(42)
    state = course.prepare(6)
    with pytest.raises(errors.CourseError, match="inconnu"):
        state.password(f"nestor@{DOMAIN}")


def test_sample_message_is_a_real_delivery(lab_env, clean):
    from labmail import replay

    raw = course.sample_message()
    assert b"Authentication-Results: mx.gmail.test;" in raw and b"with ESMTPSA" in raw
    assert [n.role for n in replay.flow(raw).nodes] == ["MUA", "MSA", "MTA", "MDA", "MUA"]


def test_find_reads_the_provider_mailbox_over_imap(lab_env, clean):
    state = course.prepare(7)
    assert mail.submit(state.tintin, "jean-emile@gmail.test", "cherche-moi", "x", password=state.password(state.tintin)).accepted
    folder, data = course.find("jean-emile@gmail.test", "cherche-moi")
    assert folder == "Junk" and b"spf=none" in data
    with pytest.raises(errors.CourseError, match="ni dans INBOX ni dans Junk"):
        course.find("jean-emile@gmail.test", "jamais envoyé", timeout=0.2)


def test_find_answers_at_once_when_nothing_is_on_its_way_and_waits_while_the_queue_holds_a_message(lab_env, clean,
                                                                                                 monkeypatch):
    import time

    from labmail.state import Layout

    course.prepare(7)
    started = time.monotonic()
    with pytest.raises(errors.CourseError, match="ni dans INBOX ni dans Junk"):  # the lab's queue is empty
        course.find("jean-emile@gmail.test", "jamais envoyé", timeout=60)
    assert time.monotonic() - started < 10, "nothing in flight: the answer must not wait for the timeout"
    monkeypatch.setattr(Layout, "in_flight", lambda self: 1)  # a message still in the queue (a provider said 4xx)
    started = time.monotonic()
    with pytest.raises(errors.CourseError, match="ni dans INBOX ni dans Junk"):
        course.find("jean-emile@gmail.test", "jamais envoyé", timeout=1.5)
    assert time.monotonic() - started >= 1.5, "a message on its way: wait for it up to the timeout"


def test_in_flight_counts_the_queued_envelopes(tmp_path):
    from labmail.state import Layout

    layout = Layout(tmp_path)
    assert layout.in_flight() == 0  # no queue folder yet
    layout.queue_dir.mkdir()
    (layout.queue_dir / "a1.eml").write_bytes(b"x")  # a body written before its envelope: not accepted yet
    (layout.queue_dir / ".a1.json.tmp").write_text("{}")
    assert layout.in_flight() == 0
    (layout.queue_dir / "a1.json").write_text("{}")
    assert layout.in_flight() == 1


def test_step_5_starts_without_the_mailboxes(lab_env, clean):
    from labmail import lab

    course.prepare(6)
    state = course.prepare(5)
    assert f"boîte tintin@{DOMAIN} supprimée (étape 5 pas encore faite)" in state.changes
    api = mail.MailcowAPI(key=lab.api_key())
    assert api.get_mailbox(state.tintin) == {}
    mail.MailcowAPI.raise_for(api.add_mailbox("tintin", DOMAIN, state.new_password(state.tintin)))
    assert mail.submit(state.tintin, state.tintin, "moi", "x", password=state.password(state.tintin)).accepted
    assert course.prepare(6).changes == (f"boîte milou@{DOMAIN} créée",)  # tintin is the student's, and known


def test_clients_take_the_stored_password_and_only_that(lab_env, clean):
    state = course.prepare(6)
    assert mail.submit(state.tintin, state.milou, "sans mot de passe", "x").accepted  # the lab's stored one
    assert mail.imap("jean-emile@gmail.test", host="imap.gmail.test") is not None  # a provider mailbox too
    with pytest.raises(errors.MailError, match="Aucun mot de passe connu pour nestor"):
        mail.submit(f"nestor@{DOMAIN}", state.milou, "x", "x")
    refused = mail.submit(state.tintin, state.milou, "x", "x", password=secrets.token_urlsafe(12))  # an explicit one wins
    assert not refused.accepted and refused.reply.startswith("535")
