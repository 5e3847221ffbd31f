"""The teacher's class set-up on real servers: from a roster, everything BIND needs, each student's Mailcow domain and
login (through Mailcow's API), and every student's file.

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

With ``mailcow=`` (a :class:`labmail.mail.MailcowAPI` holding Mailcow's *administrator* key, typed by the
instructor), Mailcow's side is made through its API too: each student's domain (``add/domain``; its DKIM key under
selector ``dkim``, 2048 bits — checked with ``get/dkim``, made again with ``add/dkim`` for a domain this run created
if Mailcow chose otherwise) and a domain administrator (``add/domain-admin``) whose generated password goes, before
the call, into ``etudiants/<prénom>/credentials.json`` (0600; the ``credentials_file`` of the student's
``config.toml``), with the domain's DKIM record (``dkim_txt``, what ``course.dkim_key()`` gives at step 10). Stock Mailcow gives API keys to administrators only: a student manages their domain in
Mailcow's web interface with that login, and the class's administrator key is never written anywhere.

It is idempotent: a student already set up keeps their key, zone, Mailcow domain, DKIM key and login; a new line of
the roster is added; nothing is removed or replaced. ``dry_run=True`` says what would be written and made (Mailcow
is only read) and changes nothing.

>>> plan = provision_live("classe.csv", "classe-live", dry_run=True)   # doctest: +SKIP
>>> plan.new                                                            # doctest: +SKIP
['jean-emile', 'milou']
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._files import atomic_write_text
from .errors import ConfigError
from .roster import read_roster

if TYPE_CHECKING:  # pragma: no cover
    from .mail import MailcowAPI

__all__ = ["LivePlan", "provision_live"]


@dataclass
class LivePlan:
    """What :func:`provision_live` did (or, in a dry run, would do)."""

    folder: Path
    domains: dict[str, str] = field(default_factory=dict)  # label → domain
    new: list[str] = field(default_factory=list)  # labels set up by this run
    kept: list[str] = field(default_factory=list)  # labels found already set up
    written: list[Path] = field(default_factory=list)  # files written (or to write, in a dry run)
    mailcow: list[str] = field(default_factory=list)  # Mailcow API calls made (or to make), e.g. "add/domain x"
    warnings: list[str] = field(default_factory=list)  # what was found and left as it is, to look at
    dry_run: bool = False
    _todo: list[tuple[str, str, str, str | None]] = field(default_factory=list, repr=False)  # (kind, label, domain, password)

    def __str__(self) -> str:
        verb = "écrirait" if self.dry_run else "a écrit"
        made = f" ; Mailcow : {len(self.mailcow)} opération(s)" if self.mailcow else ""
        return (f"{len(self.new)} nouvel·le(s) étudiant·e(s), {len(self.kept)} déjà prêt·e(s) ; {verb} "
                f"{len(self.written)} fichier(s) dans {self.folder}{made} (voir CHECKLIST.md)")


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
                   dry_run: bool = False, mailcow: MailcowAPI | None = None) -> LivePlan:
    """Write (or, with ``dry_run``, list) BIND's configuration and the students' files for ``roster``, and with
    ``mailcow`` make each student's Mailcow domain and login; see the module doc. ``nameserver`` is the
    authoritative server's name (the zones' NS), ``nameserver_address`` its address when it is inside a student
    zone's parent (glue, in the delegations)."""
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
                       f'tsig_secret_file = "~/.config/labmail/tsig.key"   # copiez-y etudiants/{label}/tsig.key (chmod 600)\n'
                       + (f'mail_host = "{mailcow.host}"\ncredentials_file = "~/.config/labmail/credentials.json"'
                          f'   # copiez-y etudiants/{label}/credentials.json (chmod 600)\n' if mailcow is not None else ""),
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
    if mailcow is not None:
        _mailcow_plan(mailcow, students, parent, base, plan, writes)
    writes.append((base / "CHECKLIST.md", _checklist(base, parent, ns, plan, mailcow), 0o644))
    plan.written = [path for path, _text, _mode in writes]
    if dry_run:
        return plan
    _write(writes)
    if mailcow is not None:
        _mailcow_apply(mailcow, plan)
    return plan


def _write(writes: list[tuple[Path, str, int]]) -> None:
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


def _login_file(base: Path, label: str) -> Path:
    return base / "etudiants" / label / "credentials.json"


def _mailcow_plan(api: MailcowAPI, students, parent: str, base: Path, plan: LivePlan,
                  writes: list[tuple[Path, str, int]]) -> None:
    """Read Mailcow (domains, domain administrators) and list what is missing; the logins' files join ``writes``
    (written before any API call: a password is never lost, even if a call fails — a re-run uses it)."""
    answer = api.get_domain("all")
    domains = {str(d.get("domain_name", "")).lower() for d in answer if isinstance(d, dict)} if isinstance(answer, list) else set()
    answer = api.get_domain_admins()
    admins = {str(a.get("username", "")).lower(): [str(d).lower() for d in a.get("selected_domains") or []]
              for a in answer if isinstance(a, dict)} if isinstance(answer, list) else {}
    for student in students:
        label, domain = student.label, student.domain(parent)
        if domain not in domains:
            plan.mailcow.append(f"add/domain {domain} (DKIM dkim, 2048 bits)")
            plan._todo.append(("domain", label, domain, None))
        else:
            dkim = api.get_dkim(domain)
            if not (isinstance(dkim, dict) and dkim.get("dkim_selector") == "dkim" and str(dkim.get("length")) == "2048"):
                plan.warnings.append(f"{domain} : clé DKIM existante « {dkim.get('dkim_selector') if isinstance(dkim, dict) else '?'} », "
                                     f"{dkim.get('length') if isinstance(dkim, dict) else '?'} bits — laissée telle quelle "
                                     "(le cours attend dkim, 2048 bits : changez-la dans Mailcow si personne ne l'a publiée)")
        if label in admins:
            if domain not in admins[label]:
                plan.warnings.append(f"l'administrateur de domaine {label} existe déjà pour {', '.join(admins[label]) or 'aucun domaine'}, "
                                     f"pas pour {domain} : rien n'est changé (donnez-lui {domain} dans Mailcow, ou renommez)")
            continue
        login = _login_file(base, label)
        password = _read_login(login)
        if password is None:
            password = secrets.token_urlsafe(15)
            writes.append((login, json.dumps({"mailcow_host": api.host, "mailcow_user": label,
                                              "mailcow_password": password}, indent=2) + "\n", 0o600))
        plan.mailcow.append(f"add/domain-admin {label} ({domain})")
        plan._todo.append(("admin", label, domain, password))


def _read_login(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        raise ConfigError(f"{path} n'est pas du JSON valide : corrigez-le ou supprimez-le (si le compte n'existe pas encore "
                          "dans Mailcow) pour le refaire.", f"{path} is not valid JSON: fix it or delete it (if the "
                          "account does not exist in Mailcow yet) to have it made again.") from None
    password = data.get("mailcow_password") if isinstance(data, dict) else None
    return password if isinstance(password, str) and password else None


def _mailcow_apply(api: MailcowAPI, plan: LivePlan) -> None:
    from .mail import MailcowAPI

    for kind, label, domain, password in plan._todo:
        if kind == "domain":
            MailcowAPI.raise_for(api.add_domain(domain, description=f"labmail : {label}"))
            dkim = api.get_dkim(domain)
            if not (isinstance(dkim, dict) and dkim.get("dkim_selector") == "dkim" and str(dkim.get("length")) == "2048"):
                # a domain made by this very run: no one has published its key yet, it may be made again
                if isinstance(dkim, dict) and dkim:
                    MailcowAPI.raise_for(api.delete_dkim(domain))
                MailcowAPI.raise_for(api.add_dkim(domain))
        else:
            MailcowAPI.raise_for(api.add_domain_admin(label, password, domain))
    for label, domain in plan.domains.items():  # the key to publish at step 10, for students without an API key
        dkim = api.get_dkim(domain)
        if isinstance(dkim, dict) and str(dkim.get("dkim_txt", "")).startswith("v=DKIM1"):
            path = _login_file(plan.folder, label)
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (FileNotFoundError, ValueError):
                data = {}
            if data.get("dkim_txt") != dkim["dkim_txt"]:
                data["dkim_txt"] = dkim["dkim_txt"]
                path.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(path.parent, 0o700)
                atomic_write_text(path, json.dumps(data, indent=2) + "\n", mode=0o600)


def _checklist(base: Path, parent: str, ns: str, plan: LivePlan, mailcow: MailcowAPI | None) -> str:
    return f"""# Mise en place de la classe sur les vrais serveurs

1. BIND ({ns}) : ajouter `include "{(base / 'bind' / 'named.conf.labmail').resolve()}";` à named.conf ; les fichiers
   `bind/keys/*.key` (0600) et `bind/zones/` doivent être lisibles par l'utilisateur de named (`chown -R bind
   {base / 'bind'}`) ; `named-checkconf` puis `rndc reconfig`.
2. Zone parente {parent}. : ajouter les lignes de `bind/delegations.txt` (NS de chaque étudiant·e), puis recharger.
3. Vérifier pour un·e étudiant·e : `nsupdate -y hmac-sha256:<domaine>.:<secret>` ajoute un TXT dans sa zone et
   est refusé dans celle d'un·e autre ; `dig AXFR <domaine> -y …` passe avec sa clé, pas sans.
4. Mailcow ({mailcow.host if mailcow is not None else "pas fait : relancez avec --mailcow <serveur>"}) : {
"fait par cette commande — chaque domaine (clé DKIM `dkim`, 2048 bits) et un administrateur de domaine par "
"étudiant·e, dont l'identifiant et le mot de passe sont dans `etudiants/<prénom>/credentials.json`. Mailcow ne "
"donne de clé d'API qu'aux administrateurs : les étudiant·e·s gèrent leur domaine (boîtes, DKIM) dans l'interface "
"web de Mailcow avec ce compte ; ne leur donnez jamais la clé administrateur." if mailcow is not None else
"pour chaque domaine, le créer, sa clé DKIM (sélecteur `dkim`, 2048 bits) et un administrateur de domaine."}
5. Remettre à chaque étudiant·e, individuellement, le dossier `etudiants/<prénom>/` : `tsig.key` (à copier en
   `~/.config/labmail/tsig.key`, chmod 600){", `credentials.json` (en `~/.config/labmail/credentials.json`, chmod 600)"
   if mailcow is not None else ""} et `config.toml` (à copier en `~/.config/labmail/config.toml`).
{"".join(f"{chr(10)}À regarder : {w}" for w in plan.warnings)}

Étudiant·e·s : {len(plan.domains)} ({len(plan.new)} ajouté·e·s par la dernière exécution).
"""
