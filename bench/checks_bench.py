"""Domain-audit benchmark (issue 5): 200 provisioned student domains fully audited against the lab, and
checkdmarc's ``check_domains`` on the same domains, in the same run (its ratio reported).

What each covers — labmail.checks.domain: server A/AAAA, PTR/FCrDNS, DNSBL, MX (+ targets, CNAME/IP/null MX),
SPF *evaluated* for the server's address, DKIM key compared, DMARC validated (+ report authorization),
autodiscover/autoconfig CNAMEs, autodiscover and RFC 6186 SRV, MTA-STS/TLS-RPT presence, doubled names.
checkdmarc: NS, MX (+ FCrDNS), SPF parsed statically (lookup counts), DMARC (RFC 9989 walk, tags, report
authorization), BIMI, MTA-STS, TLS-RPT, DNSSEC — no DKIM, no autodiscover/SRV, no SPF evaluation for an IP.

Run: ``.venv/bin/python bench/checks_bench.py``. Target: ≤ 2 s for the 200 domains.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labmail import checks, classroom, config, lab  # noqa: E402
from labmail.world import current  # noqa: E402


def main(count: int = 200) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        os.environ["LABMAIL_STATE_DIR"] = str(state)
        os.environ["LABMAIL_CONFIG"] = str(Path(tmp) / "config.toml")
        cfg = config.Config(prenom="eleve0", state_dir=state)
        roster = Path(tmp) / "roster.csv"
        roster.write_text("prenom,nom\n" + "".join(f"eleve{i},X\n" for i in range(count)))
        lab.start(cfg)
        try:
            t0 = time.perf_counter()
            lab.provision_class(roster, cfg)
            print(f"provisioning {count} students (keys, zones, mailboxes)   {time.perf_counter() - t0:.1f} s")
            world = current(cfg)
            checks.domain("eleve0.labmail.cloud", world=world)  # warm-up (imports)
            t0 = time.perf_counter()
            report = classroom.classroom(roster, world=world)
            ours = time.perf_counter() - t0
            rows = sum(len(a.rows) for a in report.audits)
            print(f"labmail.checks: {count} domains audited   {ours:.2f} s ({rows} rows)   target ≤ 2 s")
            try:
                import checkdmarc
                import dns.nameserver
                import dns.resolver
            except ImportError:
                print("checkdmarc not installed: no comparison")
                return 0
            host, port = world.resolvers[0]
            resolver = dns.resolver.make_resolver_at(host, port=port)
            domains = [f"eleve{i}.labmail.cloud" for i in range(count)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                checkdmarc.check_domains(domains, resolver=resolver, nameservers=[dns.nameserver.Do53Nameserver(host, port)],
                                         check_mx_tls=False, timeout=2.0)
                theirs = time.perf_counter() - t0
            print(f"checkdmarc.check_domains: same {count} domains   {theirs:.2f} s   "
                  f"(labmail is {theirs / ours:.1f}× faster)")
            from _report import record

            record(f"class audit, {count} domains (classroom.classroom)", round(ours, 2), "s", target="≤ 2 s",
                   peer="checkdmarc (same domains)", peer_value=round(theirs, 2), higher_is_better=False)
        finally:
            lab.stop(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
