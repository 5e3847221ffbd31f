"""The course's "DNS panel": list, add, replace and delete records of the student's zone with RFC 2136 updates signed
by the student's TSIG key, catching the classic mistakes (quotes pasted into a TXT value, a doubled name, an MX
pointing to an IP or a CNAME…); the same code drives a real BIND or Knot server in the live world. Also
:func:`txt_strings` and :func:`export_zone`. Part of :mod:`labmail.dns`, which re-exports every name.
"""

from __future__ import annotations

import ipaddress
import re
import builtins
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from . import _nodoh  # noqa: F401 - before dnspython: no DNS-over-HTTPS stack
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig
import dns.update
import dns.xfr
import dns.zone

from .config import is_ip_address
from .errors import DNSLookupFailed, RecordError, UpdateRefused
from .i18n import frame, tr
from .world import World, current
from .resolver import Record, _check_query_name, _check_type, _value_text, lookup

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = ["ZonePanel", "Change", "panel", "export_zone", "txt_strings"]


# ---------------------------------------------------------------------------
# The DNS panel (RFC 2136 + TSIG)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Change:
    """What a panel operation did: the records sent, and notes on what was corrected or checked."""

    action: str
    name: str
    type: str | None
    values: tuple[str, ...]
    ttl: int | None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = {"add": tr("ajouté", "added"), "replace": tr("remplacé", "replaced"), "delete": tr("supprimé", "deleted")}[self.action]
        lines = [f"{what} : {self.name} {self.type or ''} {' | '.join(self.values)}".rstrip()]
        lines += [f"  ⚠ {n}" for n in self.notes]
        return "\n".join(lines)


_TXT_STRINGS = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*')
_ZONE_LINE = re.compile(r"(?i)(^|\s)IN\s+(TXT|MX|A|AAAA|CNAME|SRV)\s")


class ZonePanel:
    """Edit one zone through RFC 2136 dynamic updates signed with TSIG.

    >>> p = panel()                                          # doctest: +SKIP
    >>> p.add("@", "MX", "10 mailcow.labmail.cloud.")        # doctest: +SKIP
    >>> p.add("@", "TXT", '"v=spf1 mx -all"')                # doctest: +SKIP  (quotes removed, with a note)
    >>> p.to_dataframe()                                     # doctest: +SKIP
    """

    def __init__(self, zone: str | None = None, *, world: World | None = None, key: dns.tsig.Key | None = None,
                 server: tuple[str, int] | None = None, default_ttl: int = 300, timeout: float = 5.0) -> None:
        self.world = world or current()
        self.zone = _check_query_name(zone or self.world.config.domain)
        self.server = server or self.world.dns_server
        self._key = key
        self.default_ttl = default_ttl
        self.timeout = timeout

    @property
    def _tsig(self) -> dns.tsig.Key:
        """The zone's TSIG key (private: its repr shows the secret)."""
        if self._key is None:
            self._key = self.world.tsig_key()
        return self._key

    def __repr__(self) -> str:
        return f"ZonePanel(zone={self.zone.to_text()!r}, server={self.server[0]}#{self.server[1]})"

    # -- reading -------------------------------------------------------------
    def _transfer(self) -> dns.zone.Zone:
        try:
            xfr = dns.query.xfr(self.server[0], self.zone, port=self.server[1], keyring={self._tsig.name: self._tsig},
                                keyname=self._tsig.name, lifetime=self.timeout, relativize=False)
            return dns.zone.from_xfr(xfr, relativize=False, check_origin=False)
        except dns.xfr.TransferError as exc:
            raise UpdateRefused(
                f"Le serveur refuse le transfert de la zone {self.zone} ({dns.rcode.to_text(exc.rcode)}) : "
                "la clé n'est pas celle de cette zone.",
                f"The server refuses to transfer the zone {self.zone} ({dns.rcode.to_text(exc.rcode)}): "
                "the key is not this zone's key.",
                rfc="RFC 5936",
            ) from None
        except (dns.tsig.PeerError, dns.message.UnknownTSIGKey):
            raise UpdateRefused(
                f"Clé TSIG refusée par le serveur pour {self.zone} : vérifiez le nom et le secret de la clé.",
                f"TSIG key refused by the server for {self.zone}: check the key's name and secret.",
                rfc="RFC 8945",
            ) from None
        except (dns.exception.Timeout, OSError) as exc:
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> DNSLookupFailed:
        return DNSLookupFailed(
            f"Le serveur DNS {self.server[0]}#{self.server[1]} ne répond pas ({exc}). Le lab est-il démarré ?",
            f"The DNS server {self.server[0]}#{self.server[1]} does not answer ({exc}). Is the lab running?",
        )

    def list(self) -> builtins.list[Record]:
        """Every record of the zone (zone transfer with the zone's key), in zone order."""
        zone = self._transfer()
        return [Record.from_rdata(name, rds.ttl, rdata) for name, rds in zone.iterate_rdatasets() for rdata in rds]

    def to_dataframe(self) -> "pandas.DataFrame":
        return frame([{"nom": r.name, "ttl": r.ttl, "type": r.type, "valeur": r.value} for r in self.list()],
                            columns=["nom", "ttl", "type", "valeur"])

    def export(self) -> str:
        """The zone as a BIND master file (see :func:`export_zone`)."""
        return export_zone(self._transfer())

    # -- normalising what students type ---------------------------------------
    def _name(self, name: str, notes: builtins.list[str]) -> dns.name.Name:
        zone_text = self.zone.to_text(omit_final_dot=True)
        raw = (name or "").strip()
        if raw in ("", "@"):
            return self.zone
        text = raw.lower()
        absolute = text.endswith(".")
        body = text.rstrip(".")
        if body == f"{zone_text}.{zone_text}" or body.endswith(f".{zone_text}.{zone_text}"):
            fixed = body[: -len(zone_text) - 1] + "."
            raise RecordError(
                f"Le nom « {raw} » contient deux fois votre zone. Écrivez « {fixed} » (avec le point final) ou "
                f"seulement « {fixed[: -len(zone_text) - 2] or '@'} ».",
                f"The name \"{raw}\" contains your zone twice. Write \"{fixed}\" (with the final dot) or just "
                f"\"{fixed[: -len(zone_text) - 2] or '@'}\".",
            )
        if not absolute and (body == zone_text or body.endswith("." + zone_text)):
            absolute = True
            notes.append(tr(
                f"« {raw} » lu comme le nom complet « {body}. ». Dans un fichier de zone BIND, mettez le point final, "
                f"sinon le nom devient « {body}.{zone_text}. ».",
                f"\"{raw}\" read as the full name \"{body}.\". In a BIND zone file, add the final dot, otherwise the "
                f"name becomes \"{body}.{zone_text}.\".",
            ))
        full = body + "." if absolute else f"{body}.{zone_text}."
        try:
            result = dns.name.from_text(full)
        except dns.exception.DNSException as exc:
            raise RecordError(f"Nom « {raw} » invalide ({exc}).", f"Invalid name \"{raw}\" ({exc}).") from None
        for label in result.relativize(dns.name.root).labels:
            if not re.fullmatch(rb"[a-z0-9_*]([a-z0-9_-]*[a-z0-9_])?", label):
                raise RecordError(
                    f"Le nom « {raw} » contient un label invalide « {label.decode(errors='replace')} » : lettres, chiffres, "
                    "tirets (pas au début ni à la fin) et « _ » seulement.",
                    f"The name \"{raw}\" has an invalid label \"{label.decode(errors='replace')}\": letters, digits, "
                    "hyphens (not first or last) and \"_\" only.",
                    rfc="RFC 1035 §2.3.1",
                )
        if not result.is_subdomain(self.zone):
            raise RecordError(
                f"« {raw} » n'est pas dans votre zone {zone_text} : vous ne pouvez modifier que les noms qui finissent "
                f"par {zone_text}. Pour _dmarc par exemple : « _dmarc.{zone_text}. » ou simplement « _dmarc ».",
                f"\"{raw}\" is not in your zone {zone_text}: you can only change names ending in {zone_text}. For "
                f"_dmarc for example: \"_dmarc.{zone_text}.\" or just \"_dmarc\".",
            )
        return result

    def _target(self, target: str, what: str, notes: builtins.list[str]) -> str:
        text = target.strip()
        if text == ".":
            return text
        if text.endswith("."):
            return text.lower()
        if "." in text:
            notes.append(tr(
                f"Cible « {text} » lue comme le nom complet « {text}. » (dans un fichier de zone, le point final est "
                "obligatoire).",
                f"Target \"{text}\" read as the full name \"{text}.\" (in a zone file the final dot is required).",
            ))
            return text.lower() + "."
        return f"{text.lower()}.{self.zone.to_text()}"

    def _txt(self, value: str, notes: builtins.list[str]) -> dns.rdata.Rdata:
        text = value.strip()
        if _ZONE_LINE.search(" " + text):
            raise RecordError(
                "La valeur ressemble à une ligne entière de fichier de zone (« … IN TXT … »). Ne collez que la valeur, "
                "par exemple : v=spf1 mx -all",
                "The value looks like a whole zone-file line (\"… IN TXT …\"). Paste only the value, for example: "
                "v=spf1 mx -all",
            )
        if text.startswith('"'):
            pieces = _TXT_STRINGS.findall(text)
            if not pieces or _TXT_STRINGS.sub("", text):
                raise RecordError(
                    f"Guillemets mal appariés dans « {value} ». Tapez la valeur sans guillemets : le panneau les gère.",
                    f"Unbalanced quotes in \"{value}\". Type the value without quotes: the panel handles them.",
                )
            text = "".join(re.sub(r"\\(.)", r"\1", p) for p in pieces)
            notes.append(tr(
                "Guillemets retirés : ils délimitent les chaînes dans un fichier de zone mais ne font pas partie de la "
                "valeur. Avec des guillemets dans la valeur, SPF/DKIM/DMARC échoueraient.",
                "Quotes removed: they delimit strings in a zone file but are not part of the value. With quotes inside "
                "the value, SPF/DKIM/DMARC would fail.",
            ))
        elif '"' in text:
            raise RecordError(
                f"La valeur contient des guillemets au milieu : « {value} ». Retirez-les : les récepteurs liraient "
                "les guillemets comme du texte et l'enregistrement serait invalide.",
                f"The value contains quotes in the middle: \"{value}\". Remove them: receivers would read the quotes as "
                "text and the record would be invalid.",
            )
        data = text.encode("utf-8")
        if not data:
            raise RecordError("Valeur TXT vide.", "Empty TXT value.")
        chunks = [data[i : i + 255] for i in range(0, len(data), 255)]
        if len(chunks) > 1:
            notes.append(tr(
                f"Valeur de {len(data)} octets découpée en {len(chunks)} chaînes de 255 octets au plus (RFC 1035 §3.3) ; "
                "les récepteurs les recollent sans espace (RFC 7208 §3.3, RFC 6376 §3.6.2.2).",
                f"{len(data)}-byte value split into {len(chunks)} strings of at most 255 bytes (RFC 1035 §3.3); "
                "receivers join them without spaces (RFC 7208 §3.3, RFC 6376 §3.6.2.2).",
            ))
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)

    def _rdata(self, rdtype: dns.rdatatype.RdataType, value: str, notes: builtins.list[str]) -> dns.rdata.Rdata:
        value = str(value).strip()
        tname = dns.rdatatype.to_text(rdtype)
        if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
            return self._txt(value, notes)
        if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                addr = ipaddress.ip_address(value)
            except ValueError:
                raise RecordError(f"« {value} » n'est pas une adresse IP.", f"\"{value}\" is not an IP address.") from None
            if (addr.version == 4) != (rdtype == dns.rdatatype.A):
                right = "A" if addr.version == 4 else "AAAA"
                raise RecordError(
                    f"{value} est une adresse IPv{addr.version} : utilisez le type {right}.",
                    f"{value} is an IPv{addr.version} address: use type {right}.",
                )
        elif rdtype == dns.rdatatype.MX:
            parts = value.split()
            if len(parts) != 2 or not parts[0].isdigit():
                raise RecordError(
                    f"Un MX s'écrit « priorité cible », par exemple « 10 mailcow.labmail.cloud. » (reçu : « {value} »).",
                    f"An MX is written \"priority target\", e.g. \"10 mailcow.labmail.cloud.\" (got \"{value}\").",
                    rfc="RFC 1035 §3.3.9",
                )
            target = parts[1]
            if is_ip_address(target.rstrip(".")):
                raise RecordError(
                    f"Un MX doit pointer vers un nom d'hôte, pas vers une adresse IP ({target}). Utilisez le nom du "
                    "serveur, par exemple « mailcow.labmail.cloud. », qui a lui-même un enregistrement A.",
                    f"An MX must point to a host name, not an IP address ({target}). Use the server's name, e.g. "
                    "\"mailcow.labmail.cloud.\", which has an A record itself.",
                    rfc="RFC 5321 §5.1",
                )
            value = f"{parts[0]} {self._target(target, 'MX', notes)}"
        elif rdtype in (dns.rdatatype.CNAME, dns.rdatatype.NS, dns.rdatatype.PTR):
            if is_ip_address(value.rstrip(".")):
                raise RecordError(
                    f"Un {tname} pointe vers un nom, pas vers une adresse IP ({value}) : pour une adresse, utilisez A ou AAAA.",
                    f"A {tname} points to a name, not an IP address ({value}): for an address, use A or AAAA.",
                )
            value = self._target(value, tname, notes)
        elif rdtype == dns.rdatatype.SRV:
            parts = value.split()
            if len(parts) != 4:
                raise RecordError(
                    f"Un SRV s'écrit « priorité poids port cible », par exemple « 0 0 443 mailcow.labmail.cloud. » "
                    f"(reçu : « {value} »).",
                    f"An SRV is written \"priority weight port target\", e.g. \"0 0 443 mailcow.labmail.cloud.\" "
                    f"(got \"{value}\").",
                    rfc="RFC 2782",
                )
            value = " ".join(parts[:3] + [self._target(parts[3], "SRV", notes)])
        elif rdtype == dns.rdatatype.SOA or rdtype == dns.rdatatype.ANY:
            raise RecordError(
                "Le SOA de la zone est géré par le serveur : vous ne pouvez pas le modifier.",
                "The zone's SOA is managed by the server: you cannot change it.",
            )
        try:
            return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=self.zone, relativize=False)
        except Exception as exc:
            raise RecordError(
                f"Valeur {tname} invalide « {value} » ({exc}).", f"Invalid {tname} value \"{value}\" ({exc}).",
            ) from None

    def _ttl(self, ttl: int | None) -> int:
        if ttl is None:
            return self.default_ttl
        if not isinstance(ttl, int) or not 0 <= ttl <= 2**31 - 1:
            raise RecordError(
                f"TTL « {ttl} » invalide : un nombre de secondes, par exemple 300 (5 minutes) ou 3600 (1 heure).",
                f"Invalid TTL \"{ttl}\": a number of seconds, e.g. 300 (5 minutes) or 3600 (1 hour).",
                rfc="RFC 2181 §8",
            )
        return ttl

    def _check_semantics(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, rdatas: Iterable[dns.rdata.Rdata], notes: builtins.list[str],
                         replacing: bool) -> None:
        """Checks that need the zone's current content or other names (CNAME rules, MX targets)."""
        if rdtype == dns.rdatatype.CNAME and name == self.zone:
            raise RecordError(
                "Un CNAME ne peut pas être à l'apex de la zone : il y a déjà le SOA et les NS (et le MX…).",
                "A CNAME cannot be at the zone apex: the SOA and NS (and MX…) are already there.",
                rfc="RFC 1034 §3.6.2",
            )
        current = self.list()
        at_name = {r.type for r in current if r.name == name.to_text()}
        if rdtype == dns.rdatatype.CNAME and (at_name - {"CNAME"}):
            raise RecordError(
                f"{name} a déjà d'autres enregistrements ({', '.join(sorted(at_name))}) : un CNAME doit être seul à son "
                "nom. Supprimez-les d'abord, ou choisissez un autre nom.",
                f"{name} already has other records ({', '.join(sorted(at_name))}): a CNAME must be alone at its name. "
                "Delete them first, or choose another name.",
                rfc="RFC 1034 §3.6.2",
            )
        if rdtype != dns.rdatatype.CNAME and "CNAME" in at_name:
            raise RecordError(
                f"{name} est un alias (CNAME) : il ne peut pas avoir d'autre enregistrement. Supprimez le CNAME d'abord.",
                f"{name} is an alias (CNAME): it cannot have other records. Delete the CNAME first.",
                rfc="RFC 1034 §3.6.2",
            )
        if rdtype in (dns.rdatatype.MX, dns.rdatatype.SRV):
            for rdata in rdatas:
                target = rdata.exchange if rdtype == dns.rdatatype.MX else rdata.target  # type: ignore[attr-defined]
                if target == dns.name.root:
                    continue
                alias = lookup(target.to_text(), "A", world=self.world)
                if alias.cnames:
                    kind = "MX" if rdtype == dns.rdatatype.MX else "SRV"
                    raise RecordError(
                        f"La cible {target} est un alias (CNAME vers {alias.cnames[-1].value}) : un {kind} doit pointer "
                        f"vers le nom canonique. Utilisez « {alias.cnames[-1].value} ».",
                        f"The target {target} is an alias (CNAME to {alias.cnames[-1].value}): an {kind} must point to "
                        f"the canonical name. Use \"{alias.cnames[-1].value}\".",
                        rfc="RFC 2181 §10.3",
                    )
                if not alias.ok and not lookup(target.to_text(), "AAAA", world=self.world).ok:
                    notes.append(tr(
                        f"Attention : {target} n'a pas (encore) d'adresse A ni AAAA : le courrier ne pourra pas y être livré.",
                        f"Warning: {target} has no A or AAAA address (yet): mail cannot be delivered there.",
                    ))
        if rdtype == dns.rdatatype.TXT and not replacing:
            for rdata in rdatas:
                value = b"".join(rdata.strings).decode(errors="replace").lower()  # type: ignore[attr-defined]
                if value.startswith("v=spf1") and any(r.name == name.to_text() and r.type == "TXT" and r.value.lower().startswith("v=spf1") for r in current):
                    raise RecordError(
                        f"{name} a déjà un enregistrement SPF : un domaine ne doit en avoir qu'un (sinon permerror). "
                        "Utilisez replace() pour le remplacer.",
                        f"{name} already has an SPF record: a domain must have only one (else permerror). Use replace() "
                        "to replace it.",
                        rfc="RFC 7208 §4.5",
                    )

    def _send(self, update: dns.update.UpdateMessage) -> None:
        try:
            response = dns.query.tcp(update, self.server[0], port=self.server[1], timeout=self.timeout)
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerError):
            raise UpdateRefused(
                f"Le serveur rejette la clé TSIG « {self._tsig.name} » (NOTAUTH) : nom ou secret faux. Reprenez la clé "
                "fournie pour votre zone.",
                f"The server rejects the TSIG key \"{self._tsig.name}\" (NOTAUTH): wrong name or secret. Use the key "
                "given for your zone.",
                rfc="RFC 8945 §5.2",
            ) from None
        except (dns.exception.Timeout, OSError) as exc:
            raise self._unreachable(exc) from None
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        name = dns.rcode.to_text(rcode)
        reasons = {
            dns.rcode.REFUSED: ("le serveur refuse : cette clé ne peut pas modifier cette zone, ou la modification touche "
                                "au SOA/NS de l'apex, mêle un CNAME à d'autres données, ou rendrait un enregistrement "
                                "trop gros pour être servi (plus de 16 Ko ou de 100 valeurs au même nom et type)",
                                "the server refuses: this key may not change this zone, or the change touches the apex "
                                "SOA/NS, mixes a CNAME with other data, or would make a record set too big to be served "
                                "(over 16 KiB or 100 values at one name and type)"),
            dns.rcode.NOTAUTH: ("le serveur ne fait pas autorité pour cette zone, ou la clé est inconnue",
                                "the server is not authoritative for this zone, or the key is unknown"),
            dns.rcode.NOTZONE: ("un nom est hors de la zone", "a name is outside the zone"),
            dns.rcode.SERVFAIL: ("le serveur n'a pas pu enregistrer la modification ; réessayez",
                                 "the server could not save the change; retry"),
        }
        fr, en = reasons.get(rcode, ("réponse inattendue", "unexpected reply"))
        raise UpdateRefused(f"Mise à jour refusée ({name}) : {fr}.", f"Update refused ({name}): {en}.", rfc="RFC 2136", rcode=name)

    def _update(self) -> dns.update.UpdateMessage:
        return dns.update.UpdateMessage(self.zone, keyring={self._tsig.name: self._tsig}, keyname=self._tsig.name,
                                        keyalgorithm=self._tsig.algorithm)

    # -- changing ------------------------------------------------------------
    def add(self, name: str, rdtype: str, value: str, ttl: int | None = None) -> Change:
        """Add one record (the RRset keeps its other records)."""
        notes: builtins.list[str] = []
        owner, qtype = self._name(name, notes), _check_type(rdtype)
        rdata, seconds = self._rdata(qtype, value, notes), self._ttl(ttl)
        self._check_semantics(owner, qtype, [rdata], notes, replacing=False)
        update = self._update()
        update.add(owner, seconds, rdata)
        self._send(update)
        return Change("add", owner.to_text(), dns.rdatatype.to_text(qtype), (_value_text(rdata),), seconds, tuple(notes))

    def replace(self, name: str, rdtype: str, values: str | builtins.list[str], ttl: int | None = None) -> Change:
        """Replace the whole RRset ``name``/``rdtype`` by ``values``, atomically (one update message)."""
        notes: builtins.list[str] = []
        owner, qtype = self._name(name, notes), _check_type(rdtype)
        rdatas = [self._rdata(qtype, v, notes) for v in ([values] if isinstance(values, str) else values)]
        seconds = self._ttl(ttl)
        self._check_semantics(owner, qtype, rdatas, notes, replacing=True)
        update = self._update()
        update.replace(owner, seconds, *rdatas)
        self._send(update)
        return Change("replace", owner.to_text(), dns.rdatatype.to_text(qtype), tuple(_value_text(r) for r in rdatas),
                      seconds, tuple(notes))

    def delete(self, name: str, rdtype: str | None = None, value: str | None = None) -> Change:
        """Delete a name (all its records), one RRset (``rdtype``), or one record (``rdtype`` and ``value``)."""
        notes: builtins.list[str] = []
        owner = self._name(name, notes)
        update = self._update()
        if rdtype is None:
            update.delete(owner)
            values: tuple[str, ...] = ()
        else:
            qtype = _check_type(rdtype)
            if value is None:
                update.delete(owner, qtype)
                values = ()
            else:
                rdata = self._rdata(qtype, value, notes)
                rdata = self._published(owner, qtype, rdata)
                update.delete(owner, rdata)
                values = (_value_text(rdata),)
        self._send(update)
        return Change("delete", owner.to_text(), rdtype.upper() if rdtype else None, values, None, tuple(notes))


    def _published(self, owner: dns.name.Name, qtype: dns.rdatatype.RdataType, rdata: dns.rdata.Rdata) -> dns.rdata.Rdata:
        """The published record equal to ``rdata`` — for TXT, the one with the same joined text however its strings
        are split — so that a delete really deletes; a record that is not there is an error, not a silent no-op."""
        same_rrset = [r for r in self.list() if r.rdata is not None and r.rdata.rdtype == qtype
                      and dns.name.from_text(r.name) == owner]
        wanted = _value_text(rdata)
        for record in same_rrset:
            if record.rdata is not None and (record.rdata == rdata or (qtype == dns.rdatatype.TXT and record.value == wanted)):
                return record.rdata
        there = "; ".join(r.value for r in same_rrset) or tr("aucun", "none")
        kind = dns.rdatatype.to_text(qtype)
        raise RecordError(f"{owner} {kind} « {wanted} » n'est pas publié : rien n'a été supprimé. Publiés pour ce nom et "
                          f"ce type : {there}.", f"{owner} {kind} \"{wanted}\" is not published: nothing was deleted. "
                          f"Published for this name and type: {there}.")


def panel(zone: str | None = None, *, world: World | None = None) -> ZonePanel:
    """The DNS panel of the student's zone (or of ``zone``) in the current world."""
    return ZonePanel(zone, world=world)


def txt_strings(value: str) -> str:
    """A TXT value as zone files and ``nsupdate`` take it: quoted strings of at most 255 bytes (RFC 1035 §3.3),
    which receivers join without spaces (RFC 6376 §3.6.2.2). A 2048-bit DKIM key (about 400 characters) pasted as
    one string gives BIND's bare "syntax error"; this form is accepted.

    >>> txt_strings("v=DKIM1; k=rsa; p=" + "A" * 300)[:30]
    '"v=DKIM1; k=rsa; p=AAAAAAAAAAA'
    """
    data = value.strip().encode("utf-8")
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    # dnspython writes each string as BIND reads it: quotes and backslashes escaped, other bytes as \DDD
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks).to_text()


def export_zone(zone: dns.zone.Zone | Iterable[Record], origin: str | None = None, *, default_ttl: int = 300) -> str:
    """A zone as a BIND master file: ``$ORIGIN``/``$TTL``, full names with final dots, MX priorities,
    TXT split into quoted strings of at most 255 bytes. ``named-checkzone`` accepts it.
    """
    if not isinstance(zone, dns.zone.Zone):
        recs = list(zone)
        if origin is None:
            raise RecordError("export_zone : indiquez origin pour une liste d'enregistrements.",
                              "export_zone: give origin for a list of records.")
        built = dns.zone.Zone(dns.name.from_text(origin), relativize=False)
        with built.writer() as txn:
            for r in recs:
                rdata = r.rdata or dns.rdata.from_text("IN", r.type, r.value)
                txn.add(dns.name.from_text(r.name), r.ttl, rdata)
        zone = built
    body = zone.to_text(relativize=False, want_origin=False)
    assert zone.origin is not None  # a zone built or read here always has one
    header = f"$ORIGIN {zone.origin.to_text()}\n$TTL {default_ttl}\n"
    return header + body
