"""The receiving server's view (offline LearnDMARC): steps, figure and widget, for the course's five cases."""

from __future__ import annotations

import dns.message
import matplotlib
import pytest

matplotlib.use("Agg")

from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from labmail import dkim, plots, replay  # noqa: E402
from labmail.dns import Resolver  # noqa: E402
from labmail import errors
from labmail.headers import Envelope  # noqa: E402

MSG = (b"From: Tintin <tintin@alice.labmail.cloud>\r\nTo: jean@gmail.test\r\nSubject: Bonjour\r\n"
       b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\nMessage-ID: <1@alice.labmail.cloud>\r\n\r\nBonjour Milou,\r\na demain.\r\n")
SCHOOL = Envelope("203.0.113.10", "tintin@alice.labmail.cloud", "mailcow.labmail.cloud")


@pytest.fixture(scope="module")
def key():
    return dkim.generate_key(2048)


@pytest.fixture
def resolver(world_lab, key):
    zones = {
        "alice.labmail.cloud.": ['alice.labmail.cloud. 300 IN TXT "v=spf1 ip4:203.0.113.10 -all"',
                                 key.zone_line("alice.labmail.cloud", "dkim"),
                                 '_dmarc.alice.labmail.cloud. 300 IN TXT "v=DMARC1; p=quarantine"'],
        "bob.labmail.cloud.": ['bob.labmail.cloud. 300 IN TXT "v=spf1 ip4:198.51.100.1 ~all"'],
        "carol.labmail.cloud.": ['carol.labmail.cloud. 300 IN TXT "v=spf1 ip4:203.0.113.10 -all"',
                                 '_dmarc.carol.labmail.cloud. 300 IN TXT "v=DMARC1; p=reject"'],
    }
    for origin, lines in zones.items():
        head = [f"{origin} 300 IN SOA dns.labmail.cloud. h.{origin} 1 3600 900 1209600 60", f"{origin} 300 IN NS dns.labmail.cloud."]
        world_lab.zones.add_zone_text(origin, "\n".join(head + lines) + "\n")
    engine = world_lab.engine("resolver")
    return Resolver(exchange=lambda q: dns.message.from_wire(engine.handle(q.to_wire(), tcp=True)[0]))


def signed(key, message=MSG):
    return dkim.sign(message, "alice.labmail.cloud", "dkim", key.private_pem)


def faces(ax):
    return [to_hex(p.get_facecolor()) for p in ax.patches if isinstance(p, FancyBboxPatch)]


def texts(ax):
    return " ".join(t.get_text() for t in ax.texts)


def test_pass_every_step_in_order(resolver, key):
    chain = replay.replay(signed(key), SCHOOL, receiver="gmail", resolver=resolver)
    assert [s.title for s in chain.steps] == ["Connexion TCP", "EHLO", "MAIL FROM", "RCPT TO", "DATA", "From", "SPF",
                                              "DKIM", "DMARC", "Verdict (gmail)"]
    assert chain.step("smtp").summary.fr == "203.0.113.10 → PTR mailcow.labmail.cloud"
    assert chain.step("spf").status == "pass" and any("ip4:203.0.113.10" in line for line, _ in chain.step("spf").lines)
    assert [s for _l, s in chain.step("dkim").lines] == ["pass", "pass", "pass"]
    assert "2048 bits" in chain.step("dkim").lines[0][0]
    dmarc_lines = [line for line, _ in chain.step("dmarc").lines]
    assert "_dmarc.alice.labmail.cloud" in dmarc_lines[0] and chain.step("dmarc").status == "pass"
    assert chain.folder == "INBOX" and chain.disposition == "inbox"
    ax = plots.trust_chain(chain)
    assert len(faces(ax)) == len(chain.steps) == 10
    assert faces(ax)[-1] == plots.CHAIN_COLORS["pass"] and "fail" not in [s.status for s in chain.steps]
    assert "✔ SPF" in texts(ax) and "dkim=pass" in texts(ax) and "boîte de réception" in ax.get_title()
    frame = chain.to_dataframe()
    assert list(frame["phase"])[-4:] == ["spf", "dkim", "dmarc", "verdict"]


def test_softfail_without_dkim_goes_to_spam(resolver):
    message = MSG.replace(b"alice", b"bob")
    chain = replay.replay(message, Envelope("203.0.113.10", "tintin@bob.labmail.cloud", "mailcow.labmail.cloud"),
                          resolver=resolver)
    assert chain.step("spf").summary.fr.startswith("spf=softfail") and chain.step("spf").status == "fail"
    assert chain.step("dkim").summary.fr == "aucune signature" and chain.step("dkim").status == "neutral"
    assert chain.folder == "Junk"
    ax = plots.trust_chain(chain)
    colours = dict(zip([s.phase + s.title for s in chain.steps], faces(ax)))
    assert colours["spfSPF"] == plots.CHAIN_COLORS["fail"] and colours["dkimDKIM"] == plots.CHAIN_COLORS["neutral"]
    assert "✘ SPF" in texts(ax) and "indésirables" in ax.get_title()


def test_dkim_body_hash_failure_stops_before_the_signature(resolver, key):
    tampered = signed(key).replace(b"a demain.", b"a demain. Virement urgent !")
    chain = replay.replay(tampered, SCHOOL, resolver=resolver)
    lines = chain.step("dkim").lines
    assert [s for _l, s in lines] == ["pass", "fail", "neutral"]
    assert "bh=" in lines[1][0] and "non vérifiée" in lines[2][0]
    assert chain.step("dkim").status == "fail"
    assert chain.step("dmarc").status == "pass" and chain.folder == "INBOX"  # SPF still aligned: DMARC passes
    assert texts(plots.trust_chain(chain)).count("✘") == 1


def test_spoof_refused_by_dmarc(resolver):
    spoof = MSG.replace(b"tintin@alice", b"direction@carol")
    chain = replay.replay(spoof, Envelope("192.0.2.66", "direction@carol.labmail.cloud", "arnaque.test"),
                          receiver="gmail", resolver=resolver)
    assert chain.step("smtp").summary.fr == "192.0.2.66 → PTR mx.arnaque.test"  # a spoofer can have a clean PTR
    assert chain.step("spf").status == "fail" and chain.step("dmarc").summary.fr.startswith("dmarc=fail (p=reject")
    assert chain.folder is None and chain.disposition == "rejected" and "5.7.26" in chain.reply
    ax = plots.trust_chain(chain)
    assert faces(ax)[-1] == plots.CHAIN_COLORS["fail"] and "refusé" in ax.get_title() and "5.7.26" in texts(ax)
    outlook = replay.replay(spoof, Envelope("192.0.2.66", "direction@carol.labmail.cloud", "arnaque.test"),
                            receiver="outlook", resolver=resolver)
    assert "5.7.509" in outlook.reply


def test_forwarded_message_survives_by_dkim(resolver, key):
    """A forwarder relays the message from its own address: SPF fails for alice, DKIM still passes, DMARC passes."""
    chain = replay.replay(signed(key), Envelope("198.51.100.7", "tintin@alice.labmail.cloud", "relais.example"),
                          resolver=resolver)
    assert chain.step("spf").status == "fail" and chain.step("dkim").status == "pass"
    dmarc_step = chain.step("dmarc")
    assert dmarc_step.status == "pass" and [s for _l, s in dmarc_step.lines][2:] == ["fail", "pass"]
    assert chain.step("smtp").status == "fail"  # the forwarder has no PTR, and Gmail wants one
    assert chain.folder == "Junk" and "PTR" in chain.step("verdict").explanation.fr
    ax = plots.trust_chain(chain)
    colours = [(s.phase, face) for s, face in zip(chain.steps, faces(ax))]
    assert ("spf", plots.CHAIN_COLORS["fail"]) in colours and ("dkim", plots.CHAIN_COLORS["pass"]) in colours
    assert ("dmarc", plots.CHAIN_COLORS["pass"]) in colours and "SPF : " in texts(ax)


def test_before_and_after_and_envelope_from_headers(resolver, key, world_lab):
    received = (b"Authentication-Results: mx.gmail.test; spf=pass smtp.mailfrom=tintin@alice.labmail.cloud\r\n"
                b"Received: from mailcow.labmail.cloud (mailcow.labmail.cloud [203.0.113.10])\r\n"
                b"\tby gmail-smtp-in.l.gmail.test (Postfix) with ESMTPS id X1; Sun, 29 Nov 2026 08:00:01 +0000\r\n")
    before = replay.replay(received + signed(key), resolver=resolver)
    assert before.checks.ip == "203.0.113.10" and before.checks.mail_from == "tintin@alice.labmail.cloud"
    world_lab.zones.add_zone_text("alice.labmail.cloud.", "alice.labmail.cloud. 300 IN SOA dns.labmail.cloud. "
                                  "h.alice.labmail.cloud. 2 3600 900 1209600 60\nalice.labmail.cloud. 300 IN NS dns.labmail.cloud.\n")
    after = replay.replay(received + signed(key), resolver=resolver)  # the records are gone
    assert before.folder == "INBOX" and after.folder == "Junk"
    axes = plots.trust_chain_compare(before, after, labels=("avant", "après"))
    assert axes[0].get_title() == "avant — boîte de réception" and axes[1].get_title() == "après — indésirables"
    with pytest.raises(errors.MessageError, match="Received"):
        replay.replay(MSG, resolver=resolver)
    with pytest.raises(errors.UsageError, match="Destinataire inconnu"):
        replay.replay(MSG, SCHOOL, receiver="yahoo", resolver=resolver)


def test_step_by_step_widget(resolver, key):
    from labmail.widgets import replay_steps

    chain = replay.replay(signed(key).replace(b"a demain.", b"x"), SCHOOL, resolver=resolver)
    widget = replay_steps(chain)
    assert widget.position.value == "Étape 1/10" and widget.previous.disabled and not widget.next.disabled
    assert "Connexion TCP" in widget.explanation.value and "PTR" in widget.explanation.value
    for _ in range(7):
        widget.next.click()
    assert widget.position.value == "Étape 8/10"
    view = widget.explanation.value
    assert "dkim=fail d=alice.labmail.cloud" in view and "bh=" in view and "#c62828" in view  # the failed body hash, in red
    assert view.count("<li") == 3 and "class='step current'" in widget.chain_view.value
    widget.go(99)
    assert widget.position.value == "Étape 10/10" and widget.next.disabled
    widget.previous.click()
    assert widget.index == 8 and "DMARC" in widget.explanation.value


RECEIVED = (
    b"Authentication-Results: mx.gmail.test; dkim=pass header.d=alice.labmail.cloud; spf=pass "
    b"smtp.mailfrom=tintin@alice.labmail.cloud; dmarc=fail header.from=alice.labmail.cloud\r\n"
    b"Received: from mailcow.labmail.cloud (mailcow.labmail.cloud [203.0.113.10])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
    b"\tby gmail-smtp-in.l.gmail.test (Postfix) with ESMTPS id B2\r\n\tfor <jean@gmail.test>; Sun, 29 Nov 2026 08:00:03 +0000\r\n"
    b"Received: from poste-etudiant (unknown [192.0.2.50])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
    b"\t(Authenticated sender: tintin@alice.labmail.cloud)\r\n"
    b"\tby mailcow.labmail.cloud (Postfix) with ESMTPSA id A1; Sun, 29 Nov 2026 08:00:05 +0000\r\n")


def test_message_flow_from_received_headers():
    f = replay.flow(RECEIVED + MSG)
    assert [(n.role, n.host) for n in f.nodes] == [
        ("MUA", "poste-etudiant"), ("MSA", "mailcow.labmail.cloud"), ("MTA", "gmail-smtp-in.l.gmail.test"),
        ("MDA", "boîte jean@gmail.test"), ("MUA", "client de messagerie")]
    first, transfer = f.edges[0], f.edges[1]
    assert (first.protocol, first.port, first.tls, first.authenticated) == ("ESMTPSA", "587/465", True, True)
    assert (transfer.protocol, transfer.port, transfer.tls) == ("ESMTPS", "25", True)
    assert transfer.dns == ("MX gmail.test", "SPF pass", "DKIM pass", "DMARC fail") and transfer.delay_s == -2.0
    assert "guichet" in f.nodes[1].caption.fr and "facteur" in f.nodes[3].caption.fr
    ax = plots.message_flow(f)
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("MUA") == 2 and "MSA" in labels and "MDA" in labels
    badges = {t.get_text(): to_hex(t.get_bbox_patch().get_facecolor()) for t in ax.texts if t.get_bbox_patch()}
    assert badges["SPF pass"] == "#2e7d32" and badges["DMARC fail"] == "#c62828" and badges["MX gmail.test"] == "#757575"
    with pytest.raises(errors.MessageError, match="aucun en-tête Received"):
        replay.flow(MSG)


def test_hop_timeline_flags_clock_skew():
    ax = plots.hop_timeline(RECEIVED + MSG)
    texts = [t.get_text() for t in ax.texts]
    assert texts[0] == "mailcow.labmail.cloud" and "horloge décalée" in texts[1] and "-2 s" in texts[1]
    assert to_hex(ax.lines[1].get_color()) == "#c62828" and to_hex(ax.lines[0].get_color()) == "#1565c0"


def test_gallery_command_writes_every_figure(tmp_path):
    """The README's gallery is generated by `make gallery` from a private lab, not drawn by hand."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gallery.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("chaine-de-confiance.png", "avant-apres.png", "usurpation-refusee.png", "trajet.png", "chronologie.png",
                 "rapport-dmarc.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "Warning" not in out.stderr  # e.g. a glyph missing from the font
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert all(f"docs/gallery/{name}" in readme for name in ("chaine-de-confiance.png", "trajet.png", "rapport-dmarc.png"))
