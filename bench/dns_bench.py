"""DNS benchmark of the lab: process start to first answer, and UDP queries per second.

Run: ``.venv/bin/python bench/dns_bench.py`` (or ``make bench``). Targets (issue 2): first answer
≤ 0.3 s after the process starts; ≥ 3,000 UDP queries/s on 2 cores with several concurrent clients.

Queries/s are measured with dnsperf (Debian package ``dnsperf``, the standard tool) when it is
installed, else with Python clients in separate processes (slower clients: a lower bound).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.message  # noqa: E402

from labmail.lab.server import Lab  # noqa: E402

from _report import record  # noqa: E402

QUERIES = [
    ("bench.labmail.cloud", "SOA"), ("labmail.cloud", "MX"), ("mailcow.labmail.cloud", "A"),
    ("mailcow.labmail.cloud", "AAAA"), ("gmail.test", "MX"), ("_dmarc.gmail.test", "TXT"),
    ("20230601._domainkey.gmail.test", "TXT"), ("outlook.test", "TXT"), ("nothing.bench.labmail.cloud", "A"),
    ("10.113.0.203.in-addr.arpa", "PTR"), ("2.0.0.127.dnsbl.test", "A"), ("bench.labmail.cloud", "MX"),
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_state(path: Path) -> float:
    """Create a provisioned world; returns the seconds it took (keys generated here)."""
    start = time.perf_counter()
    lab = Lab(path)
    lab.open("labmail.cloud", "mailcow.labmail.cloud")
    lab.provision(["bench"])
    return time.perf_counter() - start


def start_lab(state: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "labmail.lab", "serve", "--state", str(state), "--dns-port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def time_to_first_answer(state: Path, port: int) -> float:
    query = dns.message.make_query("bench.labmail.cloud", "SOA").to_wire()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.002)
    t0 = time.perf_counter()
    proc = start_lab(state, port)
    try:
        while True:
            sock.sendto(query, ("127.0.0.1", port))
            try:
                reply = sock.recv(4096)
            except (socket.timeout, ConnectionRefusedError):
                if proc.poll() is not None:
                    raise RuntimeError("lab exited")
                continue
            if reply[:2] == query[:2]:
                return time.perf_counter() - t0
    finally:
        sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def _python_client(port: int, seconds: float, window: int, out) -> None:
    wires = [dns.message.make_query(n, t).to_wire()[2:] for n, t in QUERIES]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1.0)
    answered, qid, outstanding = 0, 0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        while outstanding < window:
            qid = (qid + 1) & 0xFFFF
            sock.send(qid.to_bytes(2, "big") + wires[qid % len(wires)])
            outstanding += 1
        try:
            sock.recv(4096)
            answered += 1
            outstanding -= 1
        except socket.timeout:
            outstanding = 0
    out.put(answered)


def qps_python(port: int, clients: int, seconds: float) -> float:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_python_client, args=(port, seconds, 16, queue)) for _ in range(clients)]
    for p in procs:
        p.start()
    total = sum(queue.get() for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def _distinct_queries(count: int) -> list[tuple[str, str]]:
    """Queries that never repeat within a run: every one goes through the full lookup path (no answer cache)."""
    out = []
    for i in range(count):
        name, rtype = QUERIES[i % len(QUERIES)]
        out.append((f"q{i}.{name}" if i % 2 else name.upper() if i % 4 == 0 else f"x{i}.bench.labmail.cloud", rtype))
    return out


def qps_dnsperf(port: int, clients: int, seconds: float, queries: list[tuple[str, str]] = QUERIES) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        for name, rtype in queries:
            fh.write(f"{name} {rtype}\n")
        path = fh.name
    try:
        out = subprocess.run(["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", path, "-c", str(clients),
                              "-l", str(seconds), "-q", "64"], capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(path)
    qps = lost = None
    codes = ""
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith("Response codes:"):
            codes = line.split(":", 1)[1].strip()
        if line.startswith("Queries per second:"):
            qps = float(line.split(":")[1])
        if line.startswith("Queries lost:"):
            lost = float(line.split("(")[1].split("%")[0])
    if qps is None:
        raise RuntimeError("dnsperf output not understood:\n" + out.stdout + out.stderr)
    if "SERVFAIL" in codes or "REFUSED" in codes or "FORMERR" in codes:
        raise RuntimeError(f"unexpected response codes: {codes}")
    return qps, lost or 0.0


def start_bind(state: Path, work: Path, port: int) -> tuple[subprocess.Popen, float] | None:
    """BIND (Debian's named) serving the very zones of the lab, authoritative, on a loopback port: the peer.
    Returns the process and the seconds from its start to its first answer (polled every 2 ms, as the lab's)."""
    named = shutil.which("named") or "/usr/sbin/named"
    if not os.access(named, os.X_OK):
        return None
    zones = "".join(f'zone "{z.name[:-5]}" {{ type primary; file "{z}"; }};\n'
                    for z in sorted((state / "zones").glob("*.zone")) if z.name != "root.zone")
    (work / "named.conf").write_text(f"""
options {{
    directory "{work}"; pid-file "{work}/named.pid"; session-keyfile "{work}/session.key";
    managed-keys-directory "{work}"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
    recursion no; dnssec-validation no; allow-query {{ any; }}; notify no; minimal-responses no;
}};
controls {{ }};
{zones}""")
    query = dns.message.make_query("labmail.cloud", "SOA").to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.002)
        t0 = time.perf_counter()
        proc = subprocess.Popen([named, "-g", "-n", "2", "-c", str(work / "named.conf")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            sock.sendto(query, ("127.0.0.1", port))
            try:
                if sock.recv(4096)[:2] == query[:2]:
                    return proc, time.perf_counter() - t0
            except (socket.timeout, ConnectionRefusedError):
                pass
    proc.kill()
    return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        results["world_creation_s"] = round(make_state(state), 3)
        port = _free_port()
        times = [time_to_first_answer(state, port) for _ in range(args.runs)]
        results["first_answer_s"] = {"median": round(statistics.median(times), 3), "min": round(min(times), 3),
                                     "max": round(max(times), 3), "runs": args.runs}
        proc = start_lab(state, port)
        try:
            time.sleep(0.5)
            if shutil.which("dnsperf"):
                qps, lost = qps_dnsperf(port, args.clients, args.seconds)
                results["udp_qps"] = {"tool": "dnsperf", "clients": args.clients, "qps": round(qps), "lost_pct": lost}
                qps, lost = qps_dnsperf(port, args.clients, args.seconds, _distinct_queries(2_000_000))
                results["udp_qps_uncached"] = {"qps": round(qps), "lost_pct": lost}
            else:
                qps = qps_python(port, args.clients, args.seconds)
                results["udp_qps"] = {"tool": "python clients", "clients": args.clients, "qps": round(qps)}
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        bind_starts = []
        for run in range(args.runs if shutil.which("named") or os.access("/usr/sbin/named", os.X_OK) else 0):
            bind_port = _free_port()
            started = start_bind(state, Path(tmp), bind_port)
            if started is None:
                break
            bind, seconds = started
            bind_starts.append(seconds)
            try:
                if run == 0 and shutil.which("dnsperf"):  # same query lists, same clients as the lab's rows
                    qps, lost = qps_dnsperf(bind_port, args.clients, args.seconds)
                    results["bind_qps"] = {"qps": round(qps), "lost_pct": lost}
                    qps, lost = qps_dnsperf(bind_port, args.clients, args.seconds, _distinct_queries(2_000_000))
                    results["bind_qps_uncached"] = {"qps": round(qps), "lost_pct": lost}
            finally:
                bind.terminate()
                bind.wait(timeout=10)
        if bind_starts:
            results["bind_first_answer_s"] = round(statistics.median(bind_starts), 3)
    results["cores"] = os.cpu_count()
    fa, q = results["first_answer_s"], results["udp_qps"]
    named = "BIND 9 (named -n 2, same zones)"
    record("lab process start → first DNS answer", fa["median"], "s", target="≤ 0.3 s", higher_is_better=False,
           peer=named if "bind_first_answer_s" in results else "BIND not installed",
           peer_value=results.get("bind_first_answer_s"))
    record("DNS UDP queries/s, same queries (answer cache)", q["qps"], "q/s", target="≥ BIND's",
           peer=named if "bind_qps" in results else "BIND not installed", peer_value=results.get("bind_qps", {}).get("qps"))
    if "udp_qps_uncached" in results:
        bind = results.get("bind_qps_uncached", {})
        record("DNS UDP queries/s, every query distinct", results["udp_qps_uncached"]["qps"], "q/s", target="≥ 15,000",
               peer=named if bind else "BIND not installed", peer_value=bind.get("qps"))
    if args.json:
        print(json.dumps(results))
    else:
        fa = results["first_answer_s"]
        q = results["udp_qps"]
        print(f"world creation (keys generated)  {results['world_creation_s']:.3f} s")
        print(f"start → first answer             median {fa['median']:.3f} s (min {fa['min']:.3f}, max {fa['max']:.3f}, "
              f"{fa['runs']} runs)   target ≤ 0.3 s")
        print(f"UDP queries/s ({q['tool']}, {q['clients']} clients)  {q['qps']}   target ≥ 3000   on {results['cores']} cores")
        if "udp_qps_uncached" in results:
            u = results["udp_qps_uncached"]
            print(f"UDP queries/s, every query distinct (no cache hit)  {u['qps']} (lost {u['lost_pct']} %)")
        if "bind_first_answer_s" in results:
            print(f"BIND 9 on the same zones: start → first answer     median {results['bind_first_answer_s']:.3f} s")
        if "bind_qps" in results:
            print(f"BIND 9 on the same zones, same repeated queries    {results['bind_qps']['qps']}")
        if "bind_qps_uncached" in results:
            b = results["bind_qps_uncached"]
            print(f"BIND 9 on the same zones, same distinct queries     {b['qps']} (lost {b['lost_pct']} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
