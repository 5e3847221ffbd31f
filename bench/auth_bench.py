"""Authentication-engine benchmark (issue 3), in one run:

* header analysis throughput: ``labmail.headers.analyze(raw, recompute=False)`` on a generated corpus
  (Received chains, Gmail and Microsoft 365 Authentication-Results, DKIM-Signature); target ≥ 2,000 messages/s;
* SPF evaluation time, labmail vs pyspf, on the same records served by the lab DNS (a real loopback UDP server);
  target: labmail no slower than pyspf.

Run: ``.venv/bin/python bench/auth_bench.py``.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.resolver  # noqa: E402

from labmail import headers, spf  # noqa: E402
from labmail.dns import Resolver  # noqa: E402
from labmail.lab.dnsserver import ThreadedDNS  # noqa: E402
from labmail.lab.server import Lab  # noqa: E402


def corpus(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        hops = []
        for h in range(rng.randint(2, 5)):
            hops.append(f"Received: from relay{h}.example.test (relay{h}.example.test [192.0.2.{h + 1}]) (using TLSv1.3 with "
                        f"cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx{h}.example.net (Postfix) with ESMTPS id {i:X}{h} "
                        f"for <u{i}@example.net>; Sun, 29 Nov 2026 08:{h:02d}:{rng.randint(0, 59):02d} +0000")
        if rng.random() < 0.5:
            ar = (f"Authentication-Results: mx.google.com;\r\n dkim=pass header.i=@d{i}.test header.s=s1 header.b=AbCd{i};\r\n"
                  f" spf=pass (google.com: domain of a@d{i}.test designates 192.0.2.1 as permitted sender) smtp.mailfrom=a@d{i}.test;\r\n"
                  f" dmarc=pass (p=QUARANTINE sp=QUARANTINE dis=NONE) header.from=d{i}.test")
        else:
            ar = (f"Authentication-Results: spf=softfail (sender IP is 192.0.2.9) smtp.mailfrom=d{i}.test; dkim=none (message not "
                  f"signed) header.d=none;dmarc=fail action=quarantine header.from=d{i}.test;compauth=fail reason=601")
        sig = (f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=d{i}.test; s=s1; t=1795937443;\r\n"
               f" h=from:to:subject:date:message-id; bh=75+fhtGIJ+icz0+vB5fPesV9hYTEUc+oSK40sJx9NKE=;\r\n b=AbCd{i}xyz")
        body = "\r\n".join(hops[::-1] + [ar, sig, f"From: A <a@d{i}.test>", f"To: u{i}@example.net", f"Subject: message {i}",
                                         "Date: Sun, 29 Nov 2026 08:00:00 +0000", f"Message-ID: <{i}@d{i}.test>", "",
                                         "Bonjour,\r\n" * rng.randint(1, 20)])
        out.append(body.encode())
    return out


def bench_analyze(n: int = 4000) -> float:
    messages = corpus(n, random.Random(1))
    for m in messages[:50]:
        headers.analyze(m, recompute=False)
    start = time.perf_counter()
    for m in messages:
        headers.analyze(m, recompute=False)
    return n / (time.perf_counter() - start)


RECORDS = [
    "v=spf1 ip4:192.0.2.0/24 -all",
    "v=spf1 mx a -all",
    "v=spf1 include:_spf.bench.test ~all",
    "v=spf1 a:h1.bench.test a:h2.bench.test mx:bench.test -all",
    "v=spf1 exists:%{i}.bl.bench.test -all",
    "v=spf1 redirect=_spf.bench.test",
]


def bench_spf(rounds: int = 300) -> dict:
    import spf as pyspf

    tmp = tempfile.mkdtemp()
    lab = Lab(Path(tmp) / "state")
    lab.open("labmail.cloud", "mailcow.labmail.cloud")
    zone = ["bench.test. 300 IN SOA a. b. 1 1 1 1 1", "bench.test. 300 IN NS a.", "bench.test. 300 IN MX 10 h1.bench.test.",
            "bench.test. 300 IN A 192.0.2.10", "h1.bench.test. 300 IN A 192.0.2.11", "h2.bench.test. 300 IN A 192.0.2.12",
            '_spf.bench.test. 300 IN TXT "v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.11 -all"',
            "11.2.0.192.bl.bench.test. 300 IN A 127.0.0.2"]
    for i, record in enumerate(RECORDS):
        zone.append(f'd{i}.bench.test. 300 IN TXT "{record}"')
        zone.append(f"d{i}.bench.test. 300 IN MX 10 h1.bench.test.")
        zone.append(f"d{i}.bench.test. 300 IN A 192.0.2.10")
    lab.zones.add_zone_text("bench.test.", "\n".join(zone) + "\n")
    _host, port = ThreadedDNS(lab.engine("resolver")).start()
    dns.resolver.default_resolver = dns.resolver.make_resolver_at("127.0.0.1", port=port)
    resolver = Resolver([("127.0.0.1", port)])
    cases = [("192.0.2.11", f"u@d{i}.bench.test", "h1.bench.test") for i in range(len(RECORDS))]
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(rounds):
            for ip, sender, helo in cases:
                t0 = time.perf_counter()
                a = spf.evaluate(ip, sender, helo, resolver=resolver).result.value
                t1 = time.perf_counter()
                b = pyspf.check2(i=ip, s=sender, h=helo, querytime=20)[0]
                t2 = time.perf_counter()
                assert a == b, (sender, a, b)
                ours.append(t1 - t0)
                theirs.append(t2 - t1)
    return {"labmail_ms": statistics.median(ours) * 1000, "pyspf_ms": statistics.median(theirs) * 1000,
            "evaluations": len(ours)}


def bench_hostile_authres(properties: int = 20000) -> float:
    """One Authentication-Results of ``properties`` properties in Yahoo's order (once quadratic): seconds to parse."""
    from labmail.authres import parse_authentication_results

    header = "mx; a.b=c dkim=pass " + "h.d=x " * properties
    start = time.perf_counter()
    parse_authentication_results(header)
    return time.perf_counter() - start


def main() -> int:
    hostile = bench_hostile_authres()
    print(f"hostile Authentication-Results (20,000 properties)   {hostile:.2f} s   target: linear (≤ 1 s)")
    rate = bench_analyze()
    print(f"header analysis (no DNS)        {rate:,.0f} messages/s   target ≥ 2,000")
    s = bench_spf()
    ratio = s["pyspf_ms"] / s["labmail_ms"]
    print(f"SPF evaluation, median of {s['evaluations']}   labmail {s['labmail_ms']:.2f} ms, pyspf {s['pyspf_ms']:.2f} ms "
          f"(labmail {ratio:.2f}× pyspf's speed)   target: no slower than pyspf")
    from _report import record

    record("header analysis, no DNS", round(rate), "messages/s", target="≥ 2,000")
    record("hostile Authentication-Results, 20,000 properties", round(hostile, 2), "s", target="≤ 1 s",
           higher_is_better=False)
    record("SPF evaluation (lab DNS, median)", round(s["labmail_ms"], 2), "ms", target="no slower than pyspf",
           peer="pyspf 2.0.14", peer_value=round(s["pyspf_ms"], 2), higher_is_better=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
