"""The lab DNS's zones and TSIG keys on disk.

Each zone lives in ``<state>/zones/<origin>.zone`` (the root zone in
``root.zone``) as a BIND master file, written atomically: after a crash or
a SIGKILL at any moment a zone file is the old one or the new one, never
half of one. TSIG keys and who may change what are in
``<state>/keys/tsig.json`` (mode 0600).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.zone

from .._files import atomic_write_text
from ..errors import LabError

log = logging.getLogger("labmail.lab.dns")

TSIG_ALGORITHM = "hmac-sha256"


def zone_filename(origin: dns.name.Name) -> str:
    text = origin.to_text(omit_final_dot=True)
    return ("root" if text == "" or origin == dns.name.root else text) + ".zone"


class ZoneStore:
    """All hosted zones, the longest-match lookup, and crash-safe persistence.

    ``lock`` is held by whoever changes a zone (these methods, an UPDATE, a delegation) and by the DNS engine
    for every answer: the UDP threads answer plain queries while the event loop changes zones."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.zones: dict[dns.name.Name, dns.zone.Zone] = {}
        self.existing: dict[dns.name.Name, frozenset[dns.name.Name]] = {}
        self.generation = 0
        self._max_depth = 0
        self.lock = threading.RLock()

    # -- loading and saving -------------------------------------------------
    def load(self) -> None:
        with self.lock:
            self._load()

    def _load(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*.tmp"):  # a write cut short by a crash: the old file is intact
            leftover.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.zone")):
            origin = dns.name.root if path.stem == "root" else dns.name.from_text(path.stem)
            try:
                zone = dns.zone.from_file(str(path), origin=origin, relativize=False, check_origin=True)
            except Exception as exc:  # a zone file edited by hand and broken
                raise LabError(
                    f"Le fichier de zone {path} est invalide ({exc}). Corrigez-le, ou remettez le lab à zéro "
                    "avec « labmail lab reset ».",
                    f"The zone file {path} is invalid ({exc}). Fix it, or reset the lab with \"labmail lab reset\".",
                ) from None
            self._install(zone)

    def _install(self, zone: dns.zone.Zone) -> None:
        self.zones[zone.origin] = zone
        self._max_depth = max(len(o) for o in self.zones)
        self._index(zone)

    def _index(self, zone: dns.zone.Zone) -> None:
        names: set[dns.name.Name] = set()
        origin = zone.origin
        for name in zone.nodes:
            while name not in names:
                names.add(name)
                if name == origin or len(name) <= len(origin):
                    break
                name = name.parent()
        self.existing[origin] = frozenset(names)
        self.generation += 1

    def add_zone_text(self, origin: str, text: str) -> dns.zone.Zone:
        """Create (or replace) a zone from master-file text and save it."""
        zone = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=True)
        with self.lock:
            self.save(zone)
            self._install(zone)
        return zone

    def touch(self) -> None:
        """Say that what the zones answer has changed without a zone changing (which server serves which zone):
        answers cached before are not given again."""
        with self.lock:
            self.generation += 1

    def save(self, zone: dns.zone.Zone) -> None:
        path = self.directory / zone_filename(zone.origin)
        atomic_write_text(path, zone.to_text(relativize=False, want_origin=True), mode=0o644)

    def committed(self, origin: dns.name.Name) -> None:
        """Persist a zone after a change; on failure restore the on-disk version and re-raise."""
        with self.lock:
            zone = self.zones[origin]
            try:
                self.save(zone)
            except OSError:
                path = self.directory / zone_filename(origin)
                self._install(dns.zone.from_file(str(path), origin=origin, relativize=False))
                raise
            self._index(zone)

    # -- lookups ------------------------------------------------------------
    def find_zone(self, name: dns.name.Name, served: Callable[[dns.name.Name], bool] | None = None) -> dns.zone.Zone | None:
        """The hosted zone with the longest origin that contains ``name`` (among the ``served`` ones)."""
        zones = self.zones
        depth = min(len(name), self._max_depth)
        while depth > 0:
            candidate = name if depth == len(name) else name.split(depth)[1]
            zone = zones.get(candidate)
            if zone is not None and (served is None or served(candidate)):
                return zone
            depth -= 1
        return None


@dataclass
class TsigKeyEntry:
    name: str
    algorithm: str
    secret: str
    zones: list[str]


class KeyStore:
    """TSIG keys and the zones each key may update and transfer (one key, one student zone)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, TsigKeyEntry] = {}
        self.keyring: dict[dns.name.Name, dns.tsig.Key] = {}
        self._zones: dict[dns.name.Name, frozenset[dns.name.Name]] = {}

    def load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            data = {}
        self.entries = {name: TsigKeyEntry(**entry) for name, entry in data.items()}
        self._rebuild()

    def _rebuild(self) -> None:
        self.keyring = {}
        self._zones = {}
        for entry in self.entries.values():
            name = dns.name.from_text(entry.name)
            self.keyring[name] = dns.tsig.Key(name, base64.b64decode(entry.secret), entry.algorithm)
            self._zones[name] = frozenset(dns.name.from_text(z) for z in entry.zones)

    def save(self) -> None:
        payload = {name: vars(entry) for name, entry in sorted(self.entries.items())}
        atomic_write_text(self.path, json.dumps(payload, indent=2) + "\n", mode=0o600)

    def create(self, key_name: str, zones: list[str]) -> TsigKeyEntry:
        """Make a new random HMAC-SHA256 key allowed on ``zones`` (replaces an existing key of that name)."""
        entry = TsigKeyEntry(
            name=dns.name.from_text(key_name).to_text(),
            algorithm=TSIG_ALGORITHM,
            secret=base64.b64encode(secrets.token_bytes(32)).decode(),
            zones=[dns.name.from_text(z).to_text() for z in zones],
        )
        self.entries[entry.name] = entry
        self.save()
        self._rebuild()
        return entry

    def may_change(self, key_name: dns.name.Name | None, origin: dns.name.Name) -> bool:
        return key_name is not None and origin in self._zones.get(key_name, ())


def bind_key_file(entry: TsigKeyEntry) -> str:
    """The key in BIND's syntax, for ``nsupdate -k FILE`` and ``dig -k FILE``."""
    return f'key "{entry.name}" {{\n\talgorithm {entry.algorithm};\n\tsecret "{entry.secret}";\n}};\n'
