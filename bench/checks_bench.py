"""Domain-audit benchmark (issue 5): 200 provisioned student domains fully audited against the lab, and
checkdmarc's ``check_domains`` on the same domains, in the same run (its ratio reported).

What each covers — labmail.checks.domain: server A/AAAA, PTR/FCrDNS, DNSBL, MX (+ targets, CNAME/IP/null MX),
SPF *evaluated* for the server's address, DKIM key compared, DMARC validated (+ report authorization),
autodiscover/autoconfig CNAMEs, autodiscover and RFC 6186 SRV, MTA-STS/TLS-RPT presence, doubled names.
checkdmarc: NS, MX (+ FCrDNS), SPF parsed statically (lookup counts), DMARC (RFC 9989 walk, tags, report
authorization), BIMI, MTA-STS, TLS-RPT, DNSSEC — no DKIM, no autodiscover/SRV, no SPF evaluation for an IP.

Run: ``.venv/bin/python bench/checks_bench.py``. Both tools run sequentially, then with one worker per core
(checkdmarc one domain per task in a thread pool of that size). Target: ≤ 1.5 s for the 200 domains, ≥ 2× checkdmarc.
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
            cores = os.cpu_count() or 1
            ours = {}
            for workers in (1, cores):  # the same two process models as checkdmarc below
                t0 = time.perf_counter()
                report = classroom.classroom(roster, world=world, workers=workers)
                ours[workers] = time.perf_counter() - t0
            rows = sum(len(a.rows) for a in report.audits)
            print(f"labmail.checks: {count} domains audited   sequential {ours[1]:.2f} s, {cores} workers "
                  f"{ours[cores]:.2f} s ({rows} rows)   target ≤ 1.5 s")
            try:
                import checkdmarc
                import dns.nameserver
                import dns.resolver
            except ImportError:
                print("checkdmarc not installed: no comparison")
                return 0
            from concurrent.futures import ThreadPoolExecutor

            host, port = world.resolvers[0]
            resolver = dns.resolver.make_resolver_at(host, port=port)
            domains = [f"eleve{i}.labmail.cloud" for i in range(count)]

            def one(name):
                return checkdmarc.check_domains([name], resolver=resolver, check_mx_tls=False, timeout=2.0,
                                                nameservers=[dns.nameserver.Do53Nameserver(host, port)])

            theirs = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for workers in (1, cores):
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(max_workers=workers) as pool:
                        list(pool.map(one, domains))
                    theirs[workers] = time.perf_counter() - t0
            print(f"checkdmarc: same {count} domains   sequential {theirs[1]:.2f} s, {cores} workers {theirs[cores]:.2f} s")
            # DMARC policy discovery alone, both sequential, same names, same DNS. The students' domains themselves:
            # for a name that does not exist (www.…) checkdmarc stops at NXDOMAIN where RFC 9989 §4.10 goes on to the
            # organizational domain's policy — not the same work
            from labmail import dmarc
            from labmail.dns import Resolver

            import base64

            import dns.tsig

            from labmail.loadtest import _credentials
            from labmail.zonepanel import ZonePanel

            for row in _credentials(state)[::2]:  # half the students publish a policy, as a class mid-course
                key = dns.tsig.Key(row["tsig_nom"], base64.b64decode(row["tsig_secret"]), "hmac-sha256")
                ZonePanel(row["domaine"], world=world, key=key).add("_dmarc", "TXT", "v=DMARC1; p=quarantine")
            ours_resolver = Resolver([(host, port)])
            names = [f"eleve{i}.labmail.cloud" for i in range(count)]
            t0 = time.perf_counter()
            found = [dmarc.discover(n, resolver=ours_resolver) for n in names]
            ours_dmarc = time.perf_counter() - t0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                for n in names:
                    checkdmarc.dmarc.check_dmarc(n, resolver=resolver, nameservers=[dns.nameserver.Do53Nameserver(host, port)],
                                                 timeout=2.0)
                theirs_dmarc = time.perf_counter() - t0
            policies = sum(1 for d in found if d.record is not None)
            print(f"DMARC discovery, {count} domains (half with a policy), sequential   labmail {ours_dmarc:.2f} s ({policies} policies found), "
                  f"checkdmarc {theirs_dmarc:.2f} s")
            from _report import record

            record(f"DMARC policy discovery, {count} domains, half with a policy (sequential)", round(ours_dmarc, 2), "s",
                   peer="checkdmarc.dmarc.check_dmarc (same names, same DNS)", peer_value=round(theirs_dmarc, 2),
                   higher_is_better=False)
            for workers in (1, cores):
                model = "sequential" if workers == 1 else f"{workers} workers each"
                record(f"class audit, {count} domains ({model})", round(ours[workers], 2), "s",
                       target="≤ 1.5 s, ≥ 2× checkdmarc", peer="checkdmarc (same domains, same workers)",
                       peer_value=round(theirs[workers], 2), higher_is_better=False)
        finally:
            lab.stop(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
