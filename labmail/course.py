"""The course's steps: bring the world to the state a notebook expects, so notebooks run in any order.

Each notebook's first cell is ``state = course.prepare(N)``: the lab is started if needed, and what the
steps before N built is there (MX after step 4, tintin and milou after step 5, SPF after 9, DKIM after 10,
DMARC after 11), while what step N and later build is not — a student who jumps to step 10 finds SPF
published and no DKIM key yet. Only the course's own records and mailboxes are touched.

Passwords of the course's mailboxes are generated per lab and kept in ``<state>/course-passwords.json``
(mode 0600); :meth:`CourseState.password` gives one to the code that needs it, never to an output.

>>> state = prepare(9)                        # doctest: +SKIP
>>> state.domain, state.tintin                # doctest: +SKIP
('jean-emile.labmail.cloud', 'tintin@jean-emile.labmail.cloud')
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import config as _config
from ._files import atomic_write_text
from .errors import ConfigError, CourseError, LabmailError
from .mail import remember_password  # noqa: F401 - re-exported (course.remember_password)
from .state import PROVIDERS, Layout

__all__ = ["STEPS", "CourseState", "prepare", "sample_message", "find", "remember_password", "PROVIDER_IMAP",
           "external_mailboxes", "save_pasted", "pasted", "PASTE_FOLDER", "Places", "where", "dkim_key", "lab_only", "school_api",
           "note_form_action", "form_actions"]

#: The seed's steps, as numbered in the course (8.5 is "8bis").
STEPS = {0: "démarrage", 1: "flux de la messagerie", 2: "ressources", 3: "domaine dans Mailcow", 4: "DNS : MX",
         5: "boîtes mail", 6: "clients POP et IMAP", 7: "envoi vers l'extérieur", 8: "en-têtes", 8.5: "LearnDMARC",
         9: "SPF", 10: "DKIM", 11: "DMARC", 12: "validation finale", 13: "bonus autodiscover", 99: "formateur"}


@dataclass(frozen=True)
class CourseState:
    """Where the course stands for one student: domain, the two mailboxes, and what was (re)built."""

    step: float
    domain: str
    mail_host: str
    tintin: str
    milou: str
    changes: tuple[str, ...] = ()
    _passwords: Path | None = field(default=None, repr=False)
    #: When the step was prepared (epoch seconds): what a check should count from (``find(..., since=etat.started)``).
    started: float = field(default_factory=time.time, compare=False)
    #: ``"local"`` (the embedded lab) or ``"live"`` (the school's servers and the student's real mailboxes).
    world: str = "local"

    def password(self, address: str) -> str:
        """The generated password of a course mailbox (give it to ``mail.submit(..., password=...)``; never print it)."""
        known = _read(self._passwords) if self._passwords else {}
        if address.lower() not in known:
            raise CourseError(f"Mot de passe de {address} inconnu : cette boîte n'a pas été créée par le cours. Utilisez "
                               "celui que vous avez choisi (saisi avec getpass), ou supprimez la boîte et relancez prepare().",
                               f"Password of {address} unknown: the course did not create this mailbox. Use the one you "
                               "chose (typed with getpass), or delete the mailbox and run prepare() again.")
        return known[address.lower()]

    def new_password(self, address: str) -> str:
        """Generate a password for a mailbox you are about to create, and keep it (0600) for the next notebooks.

        >>> api.add_mailbox("tintin", etat.domain, etat.new_password(etat.tintin))   # doctest: +SKIP
        """
        if self._passwords is None:
            raise CourseError("Pas de dossier d'état : utilisez course.prepare().", "No state folder: use course.prepare().")
        known = _read(self._passwords)
        known[address.lower()] = secrets.token_urlsafe(12)
        atomic_write_text(self._passwords, json.dumps(known) + "\n", mode=0o600)
        return known[address.lower()]

    def __str__(self) -> str:
        done = "; ".join(self.changes) if self.changes else "rien à changer"
        return f"Étape {self.step:g} ({STEPS.get(self.step, '?')}) — {self.domain} prêt : {done}"


def prepare(step: float, *, config: _config.Config | None = None) -> CourseState:
    """Start the lab if needed and bring the student's world to the state expected at the start of ``step``."""
    from . import lab
    from .dns import ZonePanel

    if step not in STEPS:
        raise ConfigError(f"Étape {step} inconnue : choisissez parmi {', '.join(f'{s:g}' for s in STEPS)}.",
                          f"Unknown step {step}: choose among {', '.join(f'{s:g}' for s in STEPS)}.")
    from .errors import install_notebook_display

    install_notebook_display()  # in a notebook: errors as one French line, never a traceback through labmail
    cfg = config or _config.load()
    if cfg.prenom is None:
        raise ConfigError("Prénom non configuré : exécutez le notebook 00 (ou « labmail config --prenom Jean-Émile »).",
                          "First name not configured: run notebook 00 (or \"labmail config --prenom Jean-Émile\").")
    changes: list[str] = []
    passwords = Layout(cfg.state_dir).course_passwords
    if cfg.world == "local":
        lab.ensure(cfg)
        from .world import current

        world = current(cfg)
        panel = ZonePanel(world=world)
        domain, host = cfg.domain, cfg.mail_host
        dkim_file = Layout(cfg.state_dir).dkim_record(domain)
        wanted = [(4, "@", "MX", f"10 {host}."), (9, "@", "TXT", "v=spf1 ip4:203.0.113.10 -all"),
                  (10, "dkim._domainkey", "TXT", dkim_file.read_text().strip() if dkim_file.exists() else ""),
                  (11, "_dmarc", "TXT", "v=DMARC1; p=quarantine"),
                  (13, "autodiscover", "CNAME", f"{host}."), (13, "autoconfig", "CNAME", f"{host}."),
                  (13, "_autodiscover._tcp", "SRV", f"0 1 443 {host}.")]
        records = panel.list()  # one zone transfer; the apex TXT is the course's only when it is SPF
        for done_at, name, rtype, value in wanted:
            fqdn = f"{domain}." if name == "@" else f"{name}.{domain}."
            ours = [r for r in records if r.name == fqdn and r.type == rtype
                    and not (name == "@" and rtype == "TXT" and not r.value.lower().startswith("v=spf1"))]
            if step > done_at and not ours and value:
                panel.add(name, rtype, value)
                changes.append(f"{name} {rtype} publié")
            elif step <= done_at and ours:
                for r in ours:
                    panel.delete(name, rtype, r.value)
                changes.append(f"{name} {rtype} retiré (étape {done_at} pas encore faite)")
        if step <= 5:  # step 5 creates them: start without
            from .mail import MailcowAPI

            known = _read(passwords)
            api = MailcowAPI(key=lab.api_key(cfg), world=world)
            existing = {str(m.get("username", "")).lower() for m in (api.get_mailbox("all", domain) or [])
                        if isinstance(m, dict)}
            for local in ("tintin", "milou"):
                address = f"{local}@{domain}"
                if address in existing:
                    MailcowAPI.raise_for(api.delete_mailbox(address))
                    changes.append(f"boîte {address} supprimée (étape 5 pas encore faite)")
                known.pop(address, None)
            atomic_write_text(passwords, json.dumps(known) + "\n", mode=0o600)
        if step > 5:
            known = _read(passwords)
            for local in ("tintin", "milou"):
                address = f"{local}@{domain}"
                if address in known:
                    continue
                password = secrets.token_urlsafe(12)
                try:
                    lab.add_mailbox(address, password, config=cfg)
                except LabmailError as exc:
                    if "existe déjà" not in exc.text.fr:
                        raise
                    continue  # created by the student: their password, not ours
                known[address] = password
                atomic_write_text(passwords, json.dumps(known) + "\n", mode=0o600)
                changes.append(f"boîte {address} créée")
    return CourseState(step, cfg.domain, cfg.mail_host, f"tintin@{cfg.domain}", f"milou@{cfg.domain}", tuple(changes),
                       passwords, world=cfg.world)


from .actions import form_actions, note_form_action  # noqa: E402,F401 - re-exported (course.form_actions)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _class_lab(cfg: _config.Config) -> bool:
    """Does this configuration join a class lab (a student's folder of ``lab start --class``) from afar?"""
    from .lab import joins_class_lab

    return cfg.world == "local" and joins_class_lab(cfg)


def sample_message(to: str | None = None, *, config: _config.Config | None = None, timeout: float = 15.0) -> bytes:
    """A real message, as its recipient received it: sent by the course's ``facteur@<domain>`` mailbox (created
    on demand) to ``to`` (default: the student's Gmail-like mailbox), then read back from that mailbox. Live world:
    sent by Tintin to the student's real Gmail address, read back over IMAP or pasted (:func:`find`)."""
    from . import lab, mail
    from .lab.mailstore import MailStore

    cfg = config or _config.load()
    if cfg.world != "local":  # Tintin (a mailbox the teacher made) writes to the student's real Gmail, read back live
        to = to or external_mailboxes(cfg)[0]
        started = time.time() - 1
        result = mail.submit(f"tintin@{cfg.domain}", to, "Une lettre du facteur", "Bonjour, ceci est un message de "
                             "démonstration.")
        if not result.accepted:
            raise CourseError(f"Envoi refusé : {result.reply}", f"Sending refused: {result.reply}")
        return find(to, "Une lettre du facteur", since=started, config=cfg)[1]
    prepare(1, config=cfg)
    sender = f"facteur@{cfg.domain}"
    to = to or f"{cfg.prenom}@gmail.test"
    passwords = Layout(cfg.state_dir).course_passwords
    known = _read(passwords)
    if sender not in known:
        known[sender] = secrets.token_urlsafe(12)
        lab.add_mailbox(sender, known[sender], name="Le facteur", config=cfg)
        atomic_write_text(passwords, json.dumps(known) + "\n", mode=0o600)
    if _class_lab(cfg):  # the class lab's mailboxes are on the instructor's machine: read back over IMAP
        started = time.time() - 1
        result = mail.submit(sender, to, "Une lettre du facteur", "Bonjour, ceci est un message de démonstration.")
        if not result.accepted:
            raise CourseError(f"Envoi refusé : {result.reply}", f"Sending refused: {result.reply}")
        return find(to, "Une lettre du facteur", since=started, timeout=timeout, config=cfg)[1]
    store = MailStore(Layout(cfg.state_dir).mail_dir)
    before = store.counts(to)
    result = mail.submit(sender, to, "Une lettre du facteur", "Bonjour, ceci est un message de démonstration.")
    if not result.accepted:
        raise CourseError(f"Envoi refusé : {result.reply}", f"Sending refused: {result.reply}")
    arrived = store.wait_new(to, before, timeout)
    if arrived is not None:
        return arrived[1]
    raise CourseError(f"Le message n'est pas arrivé chez {to} en {timeout:g} s : regardez le journal du lab "
                       "(labmail lab status).", f"The message did not reach {to} within {timeout:g} s: see the lab's "
                       "log (labmail lab status).")


#: The IMAP server of each provider of the lab, where the student reads their own provider mailbox.
PROVIDER_IMAP = {p.domain: p.imap_host for p in PROVIDERS.values()}


def _received_at(data: bytes) -> float:
    """When the receiving server got the message: the date of its topmost Received header, epoch seconds (0 if none)."""
    from email import message_from_bytes

    from .headers import parse_received

    top = (message_from_bytes(data).get_all("Received") or [None])[0]
    when = parse_received(str(top)).date if top is not None else None
    return when.timestamp() if when is not None else 0.0


@dataclass(frozen=True)
class Places:
    """Where things are for the student, in either world (``print(course.where())``)."""

    world: str
    domain: str
    mail_host: str
    resolver: str  # "host port" of the resolver the course asks
    authoritative: str  # "host port" of the server of the student's zone (nsupdate, AXFR)
    key_file: Path | None  # the TSIG key (BIND syntax in the lab; the bare secret given by the teacher in live)
    log_path: Path | None = None  # the embedded lab's log
    credentials_file: Path | None = None

    def __str__(self) -> str:
        rhost, rport = self.resolver.split()
        ahost, aport = self.authoritative.split()
        kind = {"local": "lab intégré", "classe": "le lab de la classe (démarré par l'enseignant·e)"}.get(
            self.world, "live (les serveurs de l’école)")
        lines = [f"Monde : {kind} — domaine {self.domain}, serveur de messagerie {self.mail_host}"]
        if self.log_path is not None:
            lines.append(f"Journal : {self.log_path}")
        if self.key_file is not None:
            lines.append(f"Clé de votre zone : {self.key_file}")
        lines.append(f"Résolveur : dig @{rhost} -p {rport} {self.domain} SOA")
        lines.append(f"Serveur autoritatif de votre zone (nsupdate, AXFR) : {ahost} port {aport}")
        if self.credentials_file is not None:
            lines.append(f"Vos identifiants (donnés par l'enseignant·e) : {self.credentials_file}")
        return "\n".join(lines)


def where(config: _config.Config | None = None) -> Places:
    """Where the student's resolver, zone server, key and log are — the embedded lab's, or the school's in live."""
    from .world import current

    cfg = config or _config.load()
    world = current(cfg)
    resolver = "{} {}".format(*world.resolvers[0]) if world.resolvers else "— —"
    authoritative = "{} {}".format(*world.dns_server)
    if cfg.world == "local":
        from . import lab

        status = lab.status(cfg)
        if status.remote:  # the class lab: its log is on the instructor's machine
            return Places("classe", cfg.domain, cfg.mail_host, resolver, authoritative, lab.student_key_file(cfg))
        return Places("local", cfg.domain, cfg.mail_host, resolver, authoritative, lab.student_key_file(cfg),
                      status.log_path)
    return Places("live", cfg.domain, cfg.mail_host, resolver, authoritative, cfg.tsig_secret_file,
                  credentials_file=cfg.credentials_file)


def school_api(config: _config.Config | None = None):
    """The school server's Mailcow API with the student's key (:class:`labmail.mail.MailcowAPI`), or None — said
    in one sentence — in a live world without it (a school running Postfix and Dovecot, or a Mailcow whose API the
    teacher keeps): the sections that use it are then skipped (``if api:``)."""
    from .errors import LabError
    from .mail import MailcowAPI
    from .world import api_key, current

    cfg = config or _config.load()
    try:
        return MailcowAPI(key=api_key(cfg), world=current(cfg))
    except LabError:
        if cfg.world == "local":
            raise
    print("Monde live : pas d'API Mailcow pour votre domaine (le serveur de l'école n'en a pas, ou l'enseignant·e la "
          "garde) — cette partie se fait dans l'interface du serveur ; votre domaine et vos boîtes ont été préparés "
          "par l'enseignant·e.")
    return None


def lab_only(what: str, config: _config.Config | None = None) -> bool:
    """True in the embedded lab; in the live world, say that ``what`` exists only in the lab and return False —
    for the course's sections that simulate part of the Internet (the spoofer, the providers' DMARC reports)::

        if course.lab_only("l'usurpateur"):
            statut, reponse = lab.spoof(...)
    """
    cfg = config or _config.load()
    if cfg.world == "local":  # the student's own lab, or the class lab (through the API, their own domain only)
        return True
    print(f"Monde live : {what} n'existe qu'au lab intégré (il simule une partie d'Internet) — cette partie est "
          "sautée ; votre enseignant·e peut la montrer sur le lab, ou vous la faire vivre pour de vrai.")
    return False


def dkim_key(config: _config.Config | None = None) -> str:
    """The DKIM record the school's server signs the student's domain with, ready to publish (step 10).

    Embedded lab: what its Mailcow API answers (``MailcowAPI(key=lab.api_key()).get_dkim(domaine)["dkim_txt"]``).
    Live world: the school's Mailcow API with the student's key, or — a school without Mailcow (Postfix + OpenDKIM)
    — the record the teacher wrote in the student's credentials file (``"dkim_txt"``)."""
    from .checks import _dkim_from_api
    from .world import current

    cfg = config or _config.load()
    record = _dkim_from_api(current(cfg), cfg.domain)
    if not record:
        raise CourseError(f"Clé DKIM de {cfg.domain} introuvable : ni l'API du serveur de l'école, ni le fichier de "
                          "l'enseignant·e (credentials_file, clé « dkim_txt ») ne la donnent. Copiez-la depuis l'interface "
                          "du serveur (Mailcow : Configuration > ARC/DKIM) ou demandez-la.",
                          f"DKIM key of {cfg.domain} not found: neither the school server's API nor the teacher's file "
                          "(credentials_file, key \"dkim_txt\") gives it. Copy it from the server's interface (Mailcow: "
                          "Configuration > ARC/DKIM) or ask for it.")
    return record


def external_mailboxes(config: _config.Config | None = None) -> tuple[str, str]:
    """The student's two mailboxes "outside" (steps 7, 8, 12): at Google and at Microsoft.

    Embedded lab: ``<prénom>@gmail.test`` and ``<prénom>@outlook.test``, the lab's simulated providers. Live world:
    the student's own real addresses, from the configuration (``gmail_address``, ``outlook_address`` — e.g.
    ``labmail.config.save(gmail_address="jean.dupont@gmail.com", outlook_address="jean.dupont@ecole.fr")``)."""
    cfg = config or _config.load()
    if cfg.world == "local":
        label = cfg.domain.split(".")[0]
        return f"{label}@gmail.test", f"{label}@outlook.test"
    missing = [k for k in ("gmail_address", "outlook_address") if not getattr(cfg, k)]
    if missing:
        raise CourseError(f"Monde live : indiquez vos vraies boîtes externes ({', '.join(missing)}), par exemple "
                          "labmail.config.save(gmail_address=\"prenom.nom@gmail.com\", outlook_address=\"prenom.nom@ecole.fr\").",
                          f"Live world: give your real external mailboxes ({', '.join(missing)}), e.g. "
                          "labmail.config.save(gmail_address=\"first.last@gmail.com\", outlook_address=\"first.last@school.org\").")
    return str(cfg.gmail_address), str(cfg.outlook_address)


from .mail import PASTE_FOLDER, pasted, save_pasted  # noqa: E402,F401 - re-exported (course.save_pasted…)


#: The app passwords typed in this kernel, by address: a notebook's several reads of one mailbox ask once. Only in
#: this process's memory (never written anywhere), dropped as soon as the server refuses one.
_TYPED: dict[str, str] = {}


def _find_live(address: str, subject: str, since: float | None, timeout: float, cfg: _config.Config) -> tuple[str, bytes]:
    """``find`` in the live world: a pasted source first, else the real mailbox over IMAP (password typed)."""
    import getpass
    import os

    from . import mail
    from .config import parse_hostport
    from .headers import read_message
    from .mail import _header_text

    def wanted(data: bytes) -> bool:
        return _header_text(read_message(data).get("Subject")) == subject and (since is None or _received_at(data) >= int(since))

    kept = [(_received_at(d), f, d) for f, a, d in pasted() if (a is None or a.lower() == address.lower()) and wanted(d)]
    if kept:
        _when, folder, data = max(kept, key=lambda k: k[0])
        return folder, data
    mailboxes = external_mailboxes(cfg)
    server = cfg.imap_gmail if address.lower() == mailboxes[0].lower() else cfg.imap_outlook
    how = (f"collez sa source avec labmail.widgets.paste_message() (ou course.save_pasted), ou lisez la boîte par IMAP "
           f"({server})", f"paste its source with labmail.widgets.paste_message() (or course.save_pasted), or read the "
           f"mailbox over IMAP ({server})")
    if os.environ.get("NBGRADER_EXECUTION"):  # no one to type a password: only what was pasted counts
        raise CourseError(f"« {subject} » pour {address} : aucune source collée à côté du notebook — {how[0]}.",
                          f"\"{subject}\" for {address}: no pasted source beside the notebook — {how[1]}.")
    host, port = parse_hostport(server, 993)
    secret = _TYPED.get(address.lower())
    if secret is None:
        try:
            secret = getpass.getpass(f"Mot de passe d'application IMAP de {address} (non affiché, jamais écrit sur le "
                                     "disque ; gardé le temps de cette session du notebook) : ")
        except Exception:  # no terminal, or a notebook front end that cannot ask (StdinNotImplementedError)
            secret = ""
    if not secret:
        raise CourseError(f"Pas de mot de passe pour {address} : {how[0]}.", f"No password for {address}: {how[1]}.")
    from .world import current as _current

    world = _current(cfg)
    deadline = time.monotonic() + timeout
    while True:
        try:
            searched = mail.imap_search(address, subject, password=secret, host=host, port=port, since=since, world=world)
        except LabmailError:
            _TYPED.pop(address.lower(), None)  # a wrong password, or the server gone: asked again next time
            raise
        _TYPED[address.lower()] = secret
        found = [(_received_at(d), f, d) for f, d in searched if wanted(d)]
        if found:
            _when, folder, data = max(found, key=lambda k: k[0])
            return folder, data
        if time.monotonic() > deadline:
            raise CourseError(f"« {subject} » n'est arrivé ni dans la boîte de réception ni dans le spam de {address} : "
                              "l'avez-vous envoyé ? a-t-il été refusé (regardez la boîte de Tintin : un avis de non-remise "
                              "dit pourquoi) ?", f"\"{subject}\" reached neither the inbox nor the spam folder of {address}: "
                              "was it sent? was it refused (look at Tintin's mailbox: a non-delivery report says why)?")
        time.sleep(2.0)


def find(address: str, subject: str, *, timeout: float | None = None, since: float | None = None,
         config: _config.Config | None = None) -> tuple[str, bytes]:
    """Wait for the message ``subject`` in the student's provider mailbox ``address`` and return (folder, source),
    read over IMAP as a mail client does (INBOX and Junk are both searched). With ``since`` (epoch seconds, e.g.
    ``etat.started``), only a message received from then on counts — not one left by an earlier run; the newest wins.
    In the embedded lab, the answer "not arrived" comes at once when nothing is on its way (the lab's queue is
    empty: every message accepted by then was delivered or returned); while a message waits in the queue, the wait
    is up to 15 s, 5 s under nbgrader (``NBGRADER_EXECUTION``), where the message was sent a moment before.

    Live world: the student's real mailbox (:func:`external_mailboxes`) — a source pasted beside the notebook
    (:func:`save_pasted`, the widget :func:`labmail.widgets.paste_message`) if there is one, else read over IMAP with
    a password typed with ``getpass`` (for Gmail an app password; never stored), waiting up to a minute."""
    import os

    from . import mail

    cfg = config or _config.load()
    if timeout is None:  # a real provider may take a minute to deliver; the lab, a moment
        timeout = 5.0 if os.environ.get("NBGRADER_EXECUTION") else 60.0 if cfg.world != "local" else 15.0
    domain = address.rpartition("@")[2].lower()
    if cfg.world != "local":
        return _find_live(address, subject, since, timeout, cfg)
    if domain not in PROVIDER_IMAP:
        raise CourseError(f"{address} n'est pas une boîte d'un fournisseur du lab ({', '.join(PROVIDER_IMAP)}).",
                           f"{address} is not a mailbox of one of the lab's providers ({', '.join(PROVIDER_IMAP)}).")
    deadline = time.monotonic() + timeout
    layout = Layout(cfg.state_dir)
    shared = _class_lab(cfg)  # the class lab's queue is on the instructor's machine: wait as in the live world
    while True:
        pending = shared or layout.in_flight()  # asked before reading: what left the queue by then is in a mailbox
        found = [(_received_at(m.data), folder, m.data) for folder in ("INBOX", "Junk")
                 for m in mail.imap(address, host=PROVIDER_IMAP[domain], folder=folder, fetch=True)
                 if m.subject == subject]
        found = [f for f in found if since is None or f[0] >= int(since)]
        if found:
            _when, folder, data = max(found, key=lambda f: f[0])
            return folder, data
        if not pending or time.monotonic() > deadline:  # nothing on its way: waiting longer would change nothing
            raise CourseError(f"« {subject} » n'est arrivé ni dans INBOX ni dans Junk de {address}"
                               + (" depuis le début de l'étape" if since is not None else "") + " : l'avez-vous envoyé ? "
                               "a-t-il été refusé ? Regardez la réponse de l'envoi (mail.submit) et le journal du lab.",
                               f"\"{subject}\" reached neither INBOX nor Junk of {address}: was it sent? was it refused? "
                               "See the sending result (mail.submit) and the lab's log.")
        time.sleep(0.1)
