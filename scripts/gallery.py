"""Generate the README's figure gallery from a private lab: real messages, real verdicts.

Run: ``make gallery`` (or ``.venv/bin/python scripts/gallery.py [DIR]``, default ``docs/gallery``).
Starts a throw-away lab in a temporary folder, plays steps 7 to 12 of the course for ``jean-emile``,
a spoof and the end-of-day DMARC reports, and writes one PNG per figure.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

FIGURES = ("chaine-de-confiance.png", "avant-apres.png", "usurpation-refusee.png", "trajet.png", "chronologie.png",
           "rapport-dmarc.png")


def _wait(store, address: str, before: dict) -> bytes:
    arrived = store.wait_new(address, before)
    if arrived is None:
        raise RuntimeError(f"no message reached {address}")
    return arrived[1]


def main(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LABMAIL_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ["LABMAIL_CONFIG"] = str(Path(tmp) / "config.toml")
        os.environ["LABMAIL_PRENOM"] = "jean-emile"
        from labmail import config, dns, lab, mail, plots, replay, reports
        from labmail.headers import Envelope
        from labmail.lab.mailstore import MailStore

        cfg = config.load()
        lab.start(cfg)
        try:
            domain, sender = cfg.domain, f"tintin@{cfg.domain}"
            password = secrets.token_urlsafe(12)
            lab.add_mailbox(sender, password, config=cfg)
            store = MailStore(cfg.state_dir / "mail")
            rcpt = "jean-emile@gmail.test"

            def deliver(subject: str) -> bytes:
                before = store.counts(rcpt)
                mail.submit(sender, rcpt, subject, "Bonjour !", password=password)
                return _wait(store, rcpt, before)

            step7 = deliver("étape 7")
            before = replay.replay(step7)
            panel = dns.ZonePanel()
            panel.add("@", "MX", f"10 {cfg.mail_host}.")
            panel.add("@", "TXT", "v=spf1 ip4:203.0.113.10 -all")
            panel.add("dkim._domainkey", "TXT", (cfg.state_dir / "keys" / "dkim" / f"{domain}.dkim.txt").read_text().strip())
            panel.add("_dmarc", "TXT", f"v=DMARC1; p=reject; rua=mailto:{sender}")
            after = replay.replay(step7)
            step12 = deliver("étape 12")
            written = []

            def save(ax_or_axes, name: str) -> None:
                fig = (ax_or_axes[0] if hasattr(ax_or_axes, "__len__") else ax_or_axes).figure
                fig.savefig(out / name, dpi=110, bbox_inches="tight")
                plt.close(fig)
                written.append(out / name)

            save(plots.trust_chain(replay.replay(step12)), FIGURES[0])
            save(plots.trust_chain_compare(before, after, labels=("étape 7 (rien de publié)", "étapes 9–12 publiées")),
                 FIGURES[1])
            spoof = (f"From: Direction <direction@{domain}>\r\nTo: {rcpt}\r\nSubject: Virement urgent\r\n"
                     f"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\nMessage-ID: <1@arnaque.test>\r\n\r\nCliquez ici.\r\n")
            lab.spoof(f"direction@{domain}", rcpt, subject="Virement urgent")
            save(plots.trust_chain(replay.replay(spoof, Envelope("192.0.2.66", "bounce@arnaque.test", "mx.arnaque.test"))),
                 FIGURES[2])
            save(plots.message_flow(replay.flow(step12)), FIGURES[3])
            save(plots.hop_timeline(step12), FIGURES[4])
            inbox = len(store.messages(sender, "INBOX"))
            lab.send_dmarc_reports(cfg)
            report = _wait(store, sender, {"INBOX": inbox})
            save(plots.dmarc_report(reports.parse(report)), FIGURES[5])
            return written
        finally:
            lab.stop(cfg)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "gallery"
    for path in main(target):
        print(path)
