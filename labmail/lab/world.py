"""The local world: a faithful miniature Internet, described as data.

Addresses come from the documentation ranges (RFC 5737, RFC 3849), so SPF
``ip4:``, PTR and DNSBL lessons read exactly as they would on the Internet:

==========================  ===============  =======================
host                        IPv4             IPv6
==========================  ===============  =======================
mailcow.<parent>            203.0.113.10     2001:db8:113::10
ns1.<parent> (registry)    203.0.113.53     2001:db8:113::53
dns.<parent> (students')    203.0.113.54     2001:db8:113::54
gmail-smtp-in.l.gmail.test  198.51.100.25    2001:db8:5100::25
outlook MX                  198.51.100.145   2001:db8:5100::145
mx.arnaque.test (spoofer)   192.0.2.66       2001:db8:2::66
==========================  ===============  =======================

Two authoritative servers share the zones, as on the Internet:
``ns1.<parent>`` serves the root, the TLDs, ``<parent>`` (which delegates
each student's zone), the providers, the reverse zones and the DNSBL;
``dns.<parent>`` — the course's "serveur DNS autoritatif" — serves the
students' zones and accepts their updates. Between them, the world is
complete: every name gets NOERROR, NXDOMAIN or NODATA, never REFUSED.
This module only builds zone texts and names; it does no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..state import PROVIDERS

# Hosts of the world (name relative to its zone is computed from the parent domain).
MAILCOW_V4, MAILCOW_V6 = "203.0.113.10", "2001:db8:113::10"
NS_V4, NS_V6 = "203.0.113.53", "2001:db8:113::53"
STUDENT_NS_V4, STUDENT_NS_V6 = "203.0.113.54", "2001:db8:113::54"
WEB_V4 = "203.0.113.80"
_GMAIL, _OUTLOOK = PROVIDERS["gmail"], PROVIDERS["outlook"]  # the providers' table lives in labmail.state
SPOOFER_V4, SPOOFER_V6 = "192.0.2.66", "2001:db8:2::66"
SPOOFER_NS_V4 = "192.0.2.53"

#: DKIM selectors of the providers (as the real ones name them) and of the school server.
GMAIL_SELECTOR = _GMAIL.selector
OUTLOOK_SELECTOR = _OUTLOOK.selector
SCHOOL_SELECTOR = "dkim"

#: SOA timers: refresh, retry, expire, minimum (negative-caching TTL, RFC 2308).
_SOA_TIMERS = "3600 900 1209600 300"
STUDENT_SOA_MINIMUM = 60
STUDENT_DEFAULT_TTL = 300

REVERSE_ZONES = (
    "113.0.203.in-addr.arpa.",
    "100.51.198.in-addr.arpa.",
    "2.0.192.in-addr.arpa.",
    "8.b.d.0.1.0.0.2.ip6.arpa.",
)
DNSBL_ZONE = "dnsbl.test."


@dataclass(frozen=True)
class WorldSpec:
    """What the world is made of: the parent domain, the school mail host, the students."""

    parent_domain: str = "labmail.cloud"
    mail_host: str = "mailcow.labmail.cloud"
    students: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tld(self) -> str:
        return self.parent_domain.rsplit(".", 1)[-1]

    @property
    def ns_host(self) -> str:
        """The registry's server: root, TLDs, the parent domain, providers."""
        return f"ns1.{self.parent_domain}"

    @property
    def student_ns_host(self) -> str:
        """The class's authoritative server for the students' zones (it accepts their updates)."""
        return f"dns.{self.parent_domain}"

    def student_zone(self, label: str) -> str:
        return f"{label}.{self.parent_domain}."

    def hosts(self) -> dict[str, tuple[str, ...]]:
        """Every named host of the world with its simulated addresses."""
        return {
            self.mail_host: (MAILCOW_V4, MAILCOW_V6),
            self.ns_host: (NS_V4, NS_V6),
            self.student_ns_host: (STUDENT_NS_V4, STUDENT_NS_V6),
            **{p.mx_host: (p.mx_v4, p.mx_v6) for p in PROVIDERS.values()},
            **{f"ns1.{p.domain}": (p.ns_v4,) for p in PROVIDERS.values()},
            **{p.imap_host: (p.imap_v4,) for p in PROVIDERS.values()},
            "mx.arnaque.test": (SPOOFER_V4, SPOOFER_V6),
            "ns1.arnaque.test": (SPOOFER_NS_V4,),
        }


def dns_server_roles(spec: WorldSpec) -> dict[str, str]:
    """Which lab DNS server answers at each simulated nameserver address: ``registry`` or ``students``."""
    hosts = spec.hosts()
    roles = {}
    for host in (spec.ns_host, "ns1.gmail.test", "ns1.outlook.test", "ns1.arnaque.test"):
        roles.update({addr: "registry" for addr in hosts[host]})
    roles.update({addr: "students" for addr in hosts[spec.student_ns_host]})
    return roles


def _soa(origin: str, ns: str, serial: int, minimum: int | None = None) -> str:
    timers = _SOA_TIMERS if minimum is None else _SOA_TIMERS.rsplit(" ", 1)[0] + f" {minimum}"
    hostmaster = "hostmaster." + (origin if origin != "." else "labmail.test.")
    return f"{origin} 3600 IN SOA {ns}. {hostmaster} {serial} {timers}"


def _txt(value: str) -> str:
    """TXT presentation, split into ≤255-byte strings."""
    data = value.encode()
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _address_records(name: str, addresses: tuple[str, ...], ttl: int = 3600) -> list[str]:
    out = []
    for addr in addresses:
        rtype = "A" if ipaddress.ip_address(addr).version == 4 else "AAAA"
        out.append(f"{name}. {ttl} IN {rtype} {addr}")
    return out


def _in_zone(name: str, origin: str) -> bool:
    origin = origin.rstrip(".")
    return origin == "" or name == origin or name.endswith("." + origin)


def build_zones(spec: WorldSpec, serial: int, dkim_records: dict[str, str]) -> dict[str, str]:
    """Zone texts (origin → master-file text) for the whole initial world.

    ``dkim_records`` maps ``"<selector>._domainkey.<domain>"`` to the DKIM
    key record text of the providers (the school domains' keys are not
    published: publishing them is the student's work).
    """
    parent = spec.parent_domain
    tld = spec.tld
    ns = spec.ns_host
    hosts = spec.hosts()
    zones: dict[str, list[str]] = {}

    def zone(origin: str, nameserver: str = ns, minimum: int | None = None) -> list[str]:
        lines = [_soa(origin, nameserver, serial, minimum), f"{origin} 3600 IN NS {nameserver}."]
        zones[origin] = lines
        return lines

    # The root and the top-level domains, each delegating to its children (all hosted here).
    root = zone(".")
    for child in sorted({f"{tld}.", "test.", "arpa."}):
        root.append(f"{child} 86400 IN NS {ns}.")
    root += _address_records(ns, hosts[ns], 86400)  # glue

    cloud = zone(f"{tld}.")
    cloud.append(f"{parent}. 86400 IN NS {ns}.")
    cloud += _address_records(ns, hosts[ns], 86400)

    test = zone("test.")
    for child, nsname in (("gmail.test", "ns1.gmail.test"), ("outlook.test", "ns1.outlook.test"),
                          ("arnaque.test", "ns1.arnaque.test"), ("dnsbl.test", ns)):
        test.append(f"{child}. 86400 IN NS {nsname}.")
        if nsname != ns:
            test += _address_records(nsname, hosts[nsname], 86400)

    arpa = zone("arpa.")
    for rev in REVERSE_ZONES:
        arpa.append(f"{rev} 86400 IN NS {ns}.")

    # The school's parent domain.
    lab = zone(f"{parent}.")
    lab += _address_records(parent, (WEB_V4,))
    lab += _address_records(spec.mail_host, hosts[spec.mail_host]) if _in_zone(spec.mail_host, parent) else []
    lab += _address_records(ns, hosts[ns])
    lab += _address_records(spec.student_ns_host, hosts[spec.student_ns_host])
    lab.append(f"{parent}. 3600 IN MX 10 {spec.mail_host}.")
    lab.append(f"{parent}. 3600 IN TXT {_txt('v=spf1 mx -all')}")
    for label in spec.students:
        lab.append(f"{label}.{parent}. 3600 IN NS {spec.student_ns_host}.")

    for label in spec.students:
        zones[spec.student_zone(label)] = student_zone_text(spec, label, serial).splitlines()

    # The providers, modelled on the real ones.
    gmail = zone("gmail.test.", "ns1.gmail.test")
    gmail += _address_records("ns1.gmail.test", hosts["ns1.gmail.test"])
    gmail += _address_records("gmail-smtp-in.l.gmail.test", hosts["gmail-smtp-in.l.gmail.test"], 300)
    gmail += _address_records("imap.gmail.test", hosts["imap.gmail.test"], 300)
    gmail.append("gmail.test. 3600 IN MX 5 gmail-smtp-in.l.gmail.test.")
    gmail.append(f"gmail.test. 300 IN TXT {_txt('v=spf1 redirect=_spf.gmail.test')}")
    gmail.append(f"_spf.gmail.test. 300 IN TXT {_txt('v=spf1 ip4:198.51.100.0/26 ip6:2001:db8:5100::/64 ~all')}")
    gmail.append(f"_dmarc.gmail.test. 300 IN TXT {_txt('v=DMARC1; p=none; sp=quarantine; rua=mailto:mailauth-reports@gmail.test')}")

    outlook = zone("outlook.test.", "ns1.outlook.test")
    outlook += _address_records("ns1.outlook.test", hosts["ns1.outlook.test"])
    mx = "outlook-test.mail.protection.outlook.test"
    outlook += _address_records(mx, hosts[mx], 300)
    outlook += _address_records("imap-mail.outlook.test", hosts["imap-mail.outlook.test"], 300)
    outlook.append(f"outlook.test. 3600 IN MX 5 {mx}.")
    outlook.append(f"outlook.test. 300 IN TXT {_txt('v=spf1 include:spf.protection.outlook.test -all')}")
    outlook.append(f"spf.protection.outlook.test. 300 IN TXT {_txt('v=spf1 ip4:198.51.100.128/26 ip6:2001:db8:5100::/64 -all')}")
    outlook.append(f"_dmarc.outlook.test. 300 IN TXT {_txt('v=DMARC1; p=none; rua=mailto:d@rua.outlook.test; fo=1')}")

    for name, record in dkim_records.items():
        origin = next(o for o in ("gmail.test.", "outlook.test.", f"{parent}.") if _in_zone(name, o))
        zones[origin].append(f"{name}. 300 IN TXT {_txt(record)}")

    # The spoofer: a perfectly "legitimate" domain of its own, which forges others' From.
    spoof = zone("arnaque.test.", "ns1.arnaque.test")
    spoof += _address_records("ns1.arnaque.test", hosts["ns1.arnaque.test"])
    spoof += _address_records("mx.arnaque.test", hosts["mx.arnaque.test"])
    spoof.append("arnaque.test. 3600 IN MX 10 mx.arnaque.test.")
    spoof.append(f"arnaque.test. 3600 IN TXT {_txt('v=spf1 ip4:192.0.2.66 -all')}")

    # A DNSBL following RFC 5782: test entries 127.0.0.2 (v4) and ::FFFF:7F00:2 (v6), never 127.0.0.1.
    bl = zone(DNSBL_ZONE)
    reason = "Listed for the lab: see https://www.rfc-editor.org/rfc/rfc5782"
    for owner in ("2.0.0.127", _v6_reverse_labels("::ffff:7f00:2"), _v4_reverse_labels(SPOOFER_V4)):
        bl.append(f"{owner}.{DNSBL_ZONE} 300 IN A 127.0.0.2")
        bl.append(f"{owner}.{DNSBL_ZONE} 300 IN TXT {_txt(reason)}")

    # Reverse zones: PTR of every host (FCrDNS holds: the PTR name resolves back to the address).
    for rev in REVERSE_ZONES:
        zone(rev)
    for host, addrs in hosts.items():
        for addr in addrs:
            ptr = ipaddress.ip_address(addr).reverse_pointer + "."
            origin = next((r for r in REVERSE_ZONES if ptr.endswith("." + r)), None)
            if origin:
                zones[origin].append(f"{ptr} 3600 IN PTR {host}.")

    return {origin: "\n".join(lines) + "\n" for origin, lines in zones.items()}


def student_zone_text(spec: WorldSpec, label: str, serial: int) -> str:
    """The student's delegated zone at step 0: SOA and NS only (the rest is the student's work)."""
    origin = spec.student_zone(label)
    ns = spec.student_ns_host
    return "\n".join([_soa(origin, ns, serial, STUDENT_SOA_MINIMUM), f"{origin} 3600 IN NS {ns}."]) + "\n"


def _v4_reverse_labels(addr: str) -> str:
    return ".".join(reversed(addr.split(".")))


def _v6_reverse_labels(addr: str) -> str:
    return ipaddress.ip_address(addr).reverse_pointer.removesuffix(".ip6.arpa")
