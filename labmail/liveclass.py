"""The teacher's class set-up on real servers, DNS side: from a roster, everything BIND needs and every student's file.

``labmail provision-live classe.csv --dossier classe-live`` writes, under the folder:

* ``bind/named.conf.labmail`` — to ``include`` in ``named.conf``: one key and one zone per student, each zone
  changeable only with its own key (``update-policy { grant <clé> zonesub ANY; }``, RFC 2136 with TSIG, RFC 8945)
  and transferable only with it (``allow-transfer { key <clé>; }``);
* ``bind/keys/<prénom>.key`` (0600) — the ``key`` statements; ``bind/zones/<domaine>.zone`` — SOA and NS, written
  once (BIND changes them afterwards: a re-run never overwrites a zone);
* ``bind/delegations.txt`` — the NS records to add to the parent zone (``labmail.cloud``);
* ``etudiants/<prénom>/tsig.key`` (0600, the secret alone) and ``etudiants/<prénom>/config.toml`` — what each
  student receives (the live world's settings, ``tsig_secret_file`` pointing at the key);
* ``CHECKLIST.md`` — the steps that remain, in order (BIND, the parent zone, Mailcow, the files to hand out).

It is idempotent: a student already set up keeps their key and zone, a new line of the roster is added, nothing
is removed. ``dry_run=True`` says what would be written and writes nothing. (Mailcow's side — domains, DKIM keys,
domain administrators through its API — is not made here yet: the checklist says so.)

>>> plan = provision_live("classe.csv", "classe-live", dry_run=True)   # doctest: +SKIP
>>> plan.new                                                            # doctest: +SKIP
['jean-emile', 'milou']
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ._files import atomic_write_text
from .errors import ConfigError
from .roster import read_roster

__all__ = ["LivePlan", "provision_live"]


@dataclass
class LivePlan:
    """What :func:`provision_live` did (or, in a dry run, would do)."""

    folder: Path
    domains: dict[str, str] = field(default_factory=dict)  # label → domain
    new: list[str] = field(default_factory=list)  # labels set up by this run
    kept: list[str] = field(default_factory=list)  # labels found already set up
    written: list[Path] = field(default_factory=list)  # files written (or to write, in a dry run)
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "écrirait" if self.dry_run else "a écrit"
        return (f"{len(self.new)} nouvel·le(s) étudiant·e(s), {len(self.kept)} déjà prêt·e(s) ; {verb} "
                f"{len(self.written)} fichier(s) dans {self.folder} (voir CHECKLIST.md)")


def _key_statement(name: str, secret: str) -> str:
    return f'key "{name}" {{\n    algorithm hmac-sha256;\n    secret "{secret}";\n}};\n'


def _read_secret(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("secret "):
            return line.split('"')[1]
    raise ConfigError(f"{path} ne contient pas de ligne « secret \"…\"; » : corrigez-le ou supprimez-le pour le refaire.",
                      f"{path} holds no 'secret \"…\";' line: fix it or delete it to have it made again.")


def provision_live(roster: str | Path, folder: str | Path, *, parent_domain: str = "labmail.cloud",
                   nameserver: str = "ns1.labmail.cloud", nameserver_address: str | None = None,
                   dry_run: bool = False) -> LivePlan:
    """Write (or, with ``dry_run``, list) BIND's configuration and the students' files for ``roster``; see the
    module doc. ``nameserver`` is the authoritative server's name (the zones' NS), ``nameserver_address`` its
    address when it is inside a student zone's parent (glue, in the delegations)."""
    students = read_roster(roster)
    base = Path(folder)
    parent = parent_domain.strip().rstrip(".").lower()
    ns = nameserver.strip().rstrip(".").lower()
    plan = LivePlan(base, dry_run=dry_run)
    writes: list[tuple[Path, str, int]] = []
    stanzas = ['// labmail: one zone and one key per student (made by "labmail provision-live"; re-run to add students)\n']
    delegations = [f"; to add to the zone {parent}.: one delegation per student\n"]
    for student in students:
        label, domain = student.label, student.domain(parent)
        key_name = f"{domain}."
        plan.domains[label] = domain
        key_file = base / "bind" / "keys" / f"{label}.key"
        secret = _read_secret(key_file)
        if secret is None:
            secret = base64.b64encode(secrets.token_bytes(32)).decode()
            plan.new.append(label)
            writes.append((key_file, _key_statement(key_name, secret), 0o600))
            writes.append((base / "etudiants" / label / "tsig.key", secret + "\n", 0o600))
        else:
            plan.kept.append(label)
        zone_file = base / "bind" / "zones" / f"{domain}.zone"
        if not zone_file.exists():  # BIND owns the zone once it serves it: never overwritten
            writes.append((zone_file, f"$TTL 3600\n@ IN SOA {ns}. hostmaster.{parent}. ( 1 3600 600 604800 300 )\n"
                                      f"@ IN NS {ns}.\n", 0o644))
        writes.append((base / "etudiants" / label / "config.toml",
                       f'# labmail, monde live — pour {student.first_name} {student.last_name}\nworld = "live"\n'
                       f'prenom = "{label}"\nparent_domain = "{parent}"\ndns_server = "{ns}:53"\n'
                       f'tsig_algorithm = "hmac-sha256"\n'
                       f'tsig_secret_file = "~/.config/labmail/tsig.key"   # copiez-y etudiants/{label}/tsig.key (chmod 600)\n',
                       0o644))
        stanzas.append(f'include "{(base / "bind" / "keys" / f"{label}.key").resolve()}";\n'
                       f'zone "{domain}" {{\n    type primary;\n    file "{zone_file.resolve()}";\n'
                       f'    update-policy {{ grant "{key_name}" zonesub ANY; }};\n'
                       f'    allow-transfer {{ key "{key_name}"; }};\n}};\n')
        delegations.append(f"{label}.{parent}. 3600 IN NS {ns}.\n")
    if nameserver_address and (ns == parent or ns.endswith("." + parent)):
        delegations.append(f"{ns}. 3600 IN A {nameserver_address}\n")
    writes.append((base / "bind" / "named.conf.labmail", "".join(stanzas), 0o644))
    writes.append((base / "bind" / "delegations.txt", "".join(delegations), 0o644))
    writes.append((base / "CHECKLIST.md", _checklist(base, parent, ns, plan), 0o644))
    plan.written = [path for path, _text, _mode in writes]
    if dry_run:
        return plan
    for path, text, mode in writes:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if mode == 0o600:
                os.chmod(path.parent, 0o700)
            atomic_write_text(path, text, mode=mode)
        except OSError as exc:
            raise ConfigError(f"Impossible d'écrire {path} ({exc.strerror}) : choisissez un dossier où vous pouvez "
                              "écrire (--dossier) ; ce qui était déjà écrit reste valable, relancez la commande.",
                              f"Cannot write {path} ({exc.strerror}): choose a folder you can write to (--dossier); "
                              "what was already written stays valid, run the command again.") from None
    return plan


def _checklist(base: Path, parent: str, ns: str, plan: LivePlan) -> str:
    return f"""# Mise en place de la classe sur les vrais serveurs

1. BIND ({ns}) : ajouter `include "{(base / 'bind' / 'named.conf.labmail').resolve()}";` à named.conf ; les fichiers
   `bind/keys/*.key` (0600) et `bind/zones/` doivent être lisibles par l'utilisateur de named (`chown -R bind
   {base / 'bind'}`) ; `named-checkconf` puis `rndc reconfig`.
2. Zone parente {parent}. : ajouter les lignes de `bind/delegations.txt` (NS de chaque étudiant·e), puis recharger.
3. Vérifier pour un·e étudiant·e : `nsupdate -y hmac-sha256:<domaine>.:<secret>` ajoute un TXT dans sa zone et
   est refusé dans celle d'un·e autre ; `dig AXFR <domaine> -y …` passe avec sa clé, pas sans.
4. Mailcow (pas encore fait par labmail) : pour chaque domaine, créer le domaine, sa clé DKIM (sélecteur `dkim`,
   2048 bits), un administrateur de domaine et sa clé d'API ; la mettre dans le `credentials_file` de l'étudiant·e
   (`{{"api_key": "…"}}`, 0600).
5. Remettre à chaque étudiant·e, individuellement, le dossier `etudiants/<prénom>/` : `tsig.key` (à copier en
   `~/.config/labmail/tsig.key`, chmod 600) et `config.toml` (à copier en `~/.config/labmail/config.toml`).

Étudiant·e·s : {len(plan.domains)} ({len(plan.new)} ajouté·e·s par la dernière exécution).
"""
