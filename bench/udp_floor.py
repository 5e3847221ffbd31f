"""What a Python DNS responder can do at best on this machine, over UDP: the floor the lab's DNS rows stand on.

Two bare responders answer from a dictionary (the reply to each distinct question built once with dnspython, then
the query's ID patched in — the least work a caching server can do), measured with dnsperf like the lab and BIND
(same clients, same outstanding queries):

* ``asyncio``: a ``DatagramProtocol`` (what the lab used before issue 17's last change): an epoll round and a
  callback per packet;
* ``blocking``: one thread in a ``recvfrom``/``sendto`` loop (what the lab's UDP thread does for cached answers).

Run: ``.venv/bin/python bench/udp_floor.py`` (needs dnsperf: ``scripts/system-deps.sh bench``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dns_bench import QUERIES, qps_dnsperf  # noqa: E402

RESPONDER = r'''
import asyncio, socket, sys
import dns.message, dns.rcode
mode, port = sys.argv[1], int(sys.argv[2])
cache = {}
def answer(data):
    tail = cache.get(data[2:])
    if tail is None:
        response = dns.message.make_response(dns.message.from_wire(data))
        response.set_rcode(dns.rcode.NXDOMAIN)
        tail = cache[data[2:]] = response.to_wire()[2:]
    return data[:2] + tail
if mode == "blocking":
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(answer(data), addr)
class Protocol(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def datagram_received(self, data, addr):
        self.transport.sendto(answer(data), addr)
async def main():
    await asyncio.get_running_loop().create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", port))
    print("ready", flush=True)
    await asyncio.Future()
asyncio.run(main())
'''


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def floor(mode: str, seconds: float = 8, clients: int = 4) -> float:
    port = _free_udp_port()
    proc = subprocess.Popen([sys.executable, "-c", RESPONDER, mode, str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        return qps_dnsperf(port, clients, seconds, QUERIES)[0]
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    if not shutil.which("dnsperf"):
        print("dnsperf is not installed: sudo bash scripts/system-deps.sh bench")
        return 1
    for mode in ("asyncio", "blocking"):
        print(f"bare Python UDP responder ({mode}), the lab's 12 questions, dnsperf 4 clients   {floor(mode):,.0f} q/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
