"""Thunderbird, the course's mail client, on this machine against the embedded lab.

The lab's servers answer at simulated names and ports (``mailcow.labmail.cloud:993``, ``autoconfig.<domain>:443``…)
that exist only inside labmail; each is served on a local port of 127.0.0.1. A real Thunderbird reaches them
through a **dedicated profile** holding three things:

* two of Gecko's network preferences: ``network.dns.localDomains`` (the lab's names resolve to this machine) and
  ``network.socket.forcePort`` (each simulated port — 443, 993, 143, 995, 110, 465, 587 — goes to the lab's local
  port). So the course's values work as they are: Thunderbird's own autoconfig (step 13) finds IMAP 993 SSL/TLS
  and SMTP 465 at ``mailcow.labmail.cloud``, a manual setup with 993/995/587 (step 6) works too;
* the lab's certificate authority in the profile's NSS database (``certutil``), trusted to identify servers only
  (its X.509 name constraints limit it to the lab's names anyway);
* preferences that keep this profile quiet and local: no start page, no default-client question, no telemetry, no
  Mozilla central database (ISPDB) query, no update check.

A dedicated profile, because these preferences apply to every connection of the profile: the student's own
Thunderbird profile and mail are not touched.

>>> p = make_profile()                    # doctest: +SKIP
>>> print(p)                              # doctest: +SKIP
Profil Thunderbird du lab : /home/…/labmail/lab/thunderbird
  Lancez : thunderbird --profile /home/…/thunderbird --no-remote
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .config import Config, load
from .errors import LabError
from .i18n import tr
from .state import Layout

__all__ = ["SIMULATED_PORTS", "CA_NICKNAME", "QUIET_PREFS", "Profile", "prefs", "make_profile"]

#: The name of the lab's CA in a profile's certificate database.
CA_NICKNAME = "Autorité du lab labmail"

#: The school server's ports a mail client uses (HTTPS for autoconfig/Autodiscover, IMAP, POP3, SMTP submission).
SIMULATED_PORTS = (443, 993, 143, 995, 110, 465, 587)

#: Preferences that keep a lab profile quiet and on this machine (first-run pages, telemetry, updates, ISPDB).
QUIET_PREFS: dict[str, object] = {
    "mail.shell.checkDefaultClient": False,
    # The lab lives on this machine: a machine without Internet (a JupyterHub pod, a network namespace) must not make
    # Thunderbird start offline — it then never logs in nor fetches (seen: 1 restart in 3 fetched nothing for 150 s)
    "offline.autoDetect": False,
    "offline.startup_state": 2,  # always start online
    "mail.provider.suppress_dialog_on_startup": True,
    "mailnews.start_page.enabled": False,
    "mail.rights.override": True,
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "mail.inappnotifications.enabled": False,
    "extensions.update.enabled": False,
    "app.donation.eoy.version.viewed": 999,
    # Mozilla's central database knows real providers only; the lab's domains are found by their own autoconfig.
    "mailnews.auto_config_url": "",
    "mailnews.auto_config.addons_url": "",
    # Thunderbird's defaults also try http:// (the address in clear) and guess host names, on whatever answers:
    # in the lab profile, HTTPS only (verified with the lab's CA), and no guessing — if the records of step 13 are
    # missing, Thunderbird says it found nothing, and the values of step 6 are typed by hand.
    "mailnews.auto_config.fetchFromISP.sslOnly": True,
    "mailnews.auto_config.guess.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
}


@dataclass(frozen=True)
class Profile:
    """A Thunderbird profile made for the lab: where it is, what it sets, and how to start Thunderbird with it."""

    path: Path
    prefs: dict[str, object]
    ca_trusted: bool
    command: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [tr(f"Profil Thunderbird du lab : {self.path}", f"Lab Thunderbird profile: {self.path}"),
                 tr("  Lancez : ", "  Start: ") + " ".join(self.command)]
        if self.ca_trusted:
            lines.append(tr("  Autorité du lab déjà approuvée dans ce profil (serveurs seulement).",
                            "  Lab authority already trusted in this profile (servers only)."))
        else:
            lines.append(tr("  certutil (paquet libnss3-tools) absent : importez l'autorité du lab à la main "
                            "(Paramètres → Vie privée et sécurité → Certificats → Gérer les certificats → Autorités → "
                            "Importer, « identifier des sites web »).",
                            "  certutil (package libnss3-tools) missing: import the lab authority by hand (Settings → "
                            "Privacy & Security → Certificates → Manage Certificates → Authorities → Import, "
                            "\"identify websites\")."))
        lines.append(tr("  Puis : Paramètres des comptes → Ajouter un compte de messagerie, votre adresse et votre mot "
                        "de passe ; Thunderbird trouve seul mailcow.labmail.cloud, IMAP 993 SSL/TLS et SMTP 465.",
                        "  Then: Account Settings → Add Mail Account, your address and password; Thunderbird finds "
                        "mailcow.labmail.cloud, IMAP 993 SSL/TLS and SMTP 465 by itself."))
        return "\n".join(lines)


_HEADER = "// Written by labmail (labmail thunderbird): the lab's names and ports on this machine."


def _js(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def prefs(config: Config | None = None) -> dict[str, object]:
    """The preferences a Thunderbird profile needs to reach the running lab: the lab's names on this machine
    (``network.dns.localDomains``), each simulated port to its local port (``network.socket.forcePort``), and
    :data:`QUIET_PREFS`. For a class lab on another address, every name the profile resolves goes to that address
    (``network.dns.forceResolve``: the profile is the lab's only). Raises :class:`~labmail.errors.LabError` if the
    lab is not running."""
    from . import lab
    from .lab.world import MAILCOW_V4

    cfg = config or load()
    if cfg.world != "local":
        raise LabError("Monde live : Thunderbird joint directement les serveurs de la classe, avec les valeurs du cours "
                       "(pas besoin de profil dédié).", "Live world: Thunderbird reaches the class servers directly, "
                       "with the course's values (no dedicated profile needed).")
    status = lab.status(cfg)
    if not status.running:
        raise LabError("Le lab ne tourne pas : « labmail lab start », puis recommencez.",
                       "The lab is not running: \"labmail lab start\", then try again.")
    remap = []
    for port in SIMULATED_PORTS:
        local = status.endpoints.get(f"{MAILCOW_V4}:{port}")
        if local is None:
            raise LabError(f"Le lab ne sert pas le port {port} de {status.mail_host} : redémarrez-le "
                           "(« labmail lab stop », « labmail lab start »).",
                           f"The lab does not serve port {port} of {status.mail_host}: restart it "
                           "(\"labmail lab stop\", \"labmail lab start\").")
        remap.append(f"{port}={local}")
    names = [status.mail_host]
    domains = [f"{s}.{status.parent_domain}" for s in status.students]
    if cfg.domain not in domains:  # (cfg.domain says what to do when no first name is configured)
        domains.insert(0, cfg.domain)
    for domain in domains:  # the names Thunderbird's autoconfig and Autodiscover try, all kept on this machine
        names += [f"autoconfig.{domain}", f"autodiscover.{domain}", domain]
    if status.host != "127.0.0.1":  # a class lab on its address: localDomains can only say "this machine"
        return {"network.dns.forceResolve": status.host, "network.socket.forcePort": ";".join(remap), **QUIET_PREFS}
    return {"network.dns.localDomains": ",".join(dict.fromkeys(names)),
            "network.socket.forcePort": ";".join(remap), **QUIET_PREFS}


def make_profile(path: str | Path | None = None, *, config: Config | None = None,
                 extra_prefs: dict[str, object] | None = None) -> Profile:
    """Create (or update) a Thunderbird profile for the lab at ``path`` (default: ``thunderbird`` in the lab's
    state folder): ``user.js`` with :func:`prefs`, and the lab's CA trusted for servers in the profile's NSS
    database when ``certutil`` is installed. Run it again after the lab's ports changed; the accounts and mail
    already in the profile are kept.
    """
    from . import lab

    cfg = config or load()
    values = {**prefs(cfg), **(extra_prefs or {})}
    if path is not None and not str(path).strip():
        raise LabError("Chemin de profil vide : donnez un dossier (ou rien, pour le dossier du lab).",
                       "Empty profile path: give a folder (or nothing, for the lab's folder).")
    try:
        target = Path(path).expanduser().absolute() if path is not None else Layout(cfg.state_dir).thunderbird_dir
    except RuntimeError as exc:  # "~someone" who does not exist
        raise LabError(f"Chemin de profil incompris ({exc}) : donnez un dossier.",
                       f"Profile path not understood ({exc}): give a folder.") from None
    if target.exists() and not target.is_dir():
        raise LabError(f"{target} existe et n'est pas un dossier : choisissez un autre emplacement.",
                       f"{target} exists and is not a folder: choose another place.")
    user_js = target / "user.js"
    ours = user_js.exists() and user_js.read_text(encoding="utf-8", errors="replace").startswith(_HEADER)
    if target.exists() and not ours and ((target / "prefs.js").exists() or user_js.exists()):
        raise LabError(f"{target} contient déjà un profil Thunderbird qui n'est pas celui du lab : labmail n'y touche "
                       "pas (vos comptes, votre courrier). Choisissez un dossier vide, ou laissez le dossier du lab.",
                       f"{target} already holds a Thunderbird profile that is not the lab's: labmail leaves it alone "
                       "(your accounts, your mail). Choose an empty folder, or keep the lab's folder.")
    lines = [_HEADER, *(f"user_pref({_js(k)}, {_js(v)});" for k, v in values.items())]
    try:
        target.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target / "user.js.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(user_js)
    except OSError as exc:
        raise LabError(f"Impossible d'écrire le profil dans {target} ({exc.strerror}) : choisissez un dossier à vous.",
                       f"Cannot write the profile in {target} ({exc.strerror}): choose a folder of yours.") from None
    ca = lab.status(cfg).ca_path
    trusted = False
    certutil = shutil.which("certutil")
    if certutil and ca is not None and ca.exists():
        database = f"sql:{target}"
        if not (target / "cert9.db").exists():
            _run([certutil, "-N", "-d", database, "--empty-password"])
        # the lab's CA as it is now (an older one, e.g. from before a rebuilt lab, is replaced); "C,,": trusted to
        # identify servers (TLS), not for S/MIME mail nor code signing
        subprocess.run([certutil, "-D", "-n", CA_NICKNAME, "-d", database], capture_output=True, timeout=60)
        _run([certutil, "-A", "-n", CA_NICKNAME, "-t", "C,,", "-i", str(ca), "-d", database])
        trusted = True
    binary = shutil.which("thunderbird") or "thunderbird"
    return Profile(target, values, trusted, [binary, "--profile", str(target), "--no-remote"])


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise LabError(f"{Path(command[0]).name} a échoué : {done.stderr.strip() or done.stdout.strip()}",
                       f"{Path(command[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")
