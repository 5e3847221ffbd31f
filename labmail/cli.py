"""The ``labmail`` command line.

::

    labmail lab start|status|stop|reset     the embedded lab
    labmail config [--prenom "Jean-Émile"]  show or set the configuration
    labmail lookup NAME [TYPE] [--auth]     ask the world's DNS
    labmail check DOMAIN [--zone]           audit a mail domain (Mailcow's "DNS" page, done right)
    labmail diagnose MESSAGE.eml            why would this received message land in spam?
    labmail replay MESSAGE.eml [--receiver gmail] [--png F]   the receiver's judgment, step by step
    labmail class ROSTER.csv [--csv F] [--png F]   audit a whole class
    labmail lab start --class ROSTER.csv    one lab for a class (credentials in a 0600 file)
    labmail lab start --class ROSTER.csv --adresse 10.0.0.5    the same, shared: the class reaches it there
    labmail lab rejoindre DOSSIER           a student joins the class lab with their folder
    labmail thunderbird [--profil DIR]      a Thunderbird profile that reaches the lab (its names and ports)
"""

from __future__ import annotations

import argparse
import sys

from . import config as _config
from .errors import LabmailError, UsageError
from .i18n import set_language, tr
from .state import Layout


def _lab(args: argparse.Namespace) -> int:
    from . import lab

    if args.action == "rejoindre":
        cfg = lab.join(args.dossier)
        print(tr(f"Vous rejoignez le lab de la classe en tant que « {cfg.prenom} » ({cfg.domain}) ; configuration : "
                 f"{_config.user_config_path()}", f"You join the class lab as \"{cfg.prenom}\" ({cfg.domain}); "
                 f"configuration: {_config.user_config_path()}"))
        print(lab.status(cfg))
        return 0
    cfg = _config.load()
    if args.action == "start" and args.adresse:
        if not args.roster and not args.adresse.startswith("127."):  # back to loopback needs no roster
            raise UsageError("--adresse sert au lab partagé d'une classe : donnez aussi la liste (--class LISTE.csv) ; "
                             "« --adresse 127.0.0.1 » le remet sur la boucle locale.",
                             "--adresse is for a lab a class shares: give the roster too (--class ROSTER.csv); "
                             "\"--adresse 127.0.0.1\" puts it back on loopback.")
        result = lab.start(cfg, listen=args.adresse)
    else:
        action = {"start": lab.start, "status": lab.status, "stop": lab.stop, "reset": lab.reset}[args.action]
        result = action(cfg)
    if args.roster and args.action in ("start", "reset"):
        path = lab.provision_class(args.roster, cfg)
        result = lab.status(cfg)
        print(tr(f"Classe provisionnée ; identifiants (pour l'enseignant seulement) : {path}",
                 f"Class provisioned; credentials (for the instructor only): {path}"))
        print(tr(f"Dossier de chaque étudiant (à lui donner, à lui seul ; il tape « labmail lab rejoindre DOSSIER ») : "
                 f"{path.parent / 'classe'}/<prénom>/", f"Each student's folder (give it to them alone; they type "
                 f"\"labmail lab rejoindre FOLDER\"): {path.parent / 'classe'}/<prenom>/"))
    print(result)
    if args.action in ("start", "reset", "status") and result.running and not cfg.prenom and not args.roster:
        print(tr("  Aucun prénom configuré : le lab n'a pas de domaine pour vous. Tapez « labmail config --prenom "
                 "\"Votre prénom\" », puis « labmail lab start » (ou lancez le notebook 00).",
                 "  No first name configured: the lab has no domain for you. Type \"labmail config --prenom "
                 "\"Your first name\"\", then \"labmail lab start\" (or run notebook 00)."))
    if args.action == "status" and result.running and cfg.prenom:
        try:
            print(tr("  Clé TSIG de votre zone (pour nsupdate -k) : ", "  Your zone's TSIG key (for nsupdate -k): ")
                  + str(lab.student_key_file(cfg)))
        except LabmailError:
            pass
        dkim = Layout(cfg.state_dir).dkim_record(cfg.domain)
        if dkim.exists():
            from .dns import txt_strings

            print(tr("  Votre clé DKIM pour nsupdate (en chaînes de 255 octets, sinon BIND répond « syntax error ») :",
                     "  Your DKIM key for nsupdate (in strings of 255 bytes, else BIND says \"syntax error\"):"))
            print(f"  update add dkim._domainkey.{cfg.domain}. 300 TXT {txt_strings(dkim.read_text(encoding='utf-8'))}")
    return 0 if (result.running or args.action == "stop") else 1


def _show_config(args: argparse.Namespace) -> int:
    changes = {k: v for k, v in (("prenom", args.prenom), ("world", args.world), ("parent_domain", args.parent_domain),
                                  ("mail_host", args.mail_host), ("lang", args.set_lang)) if v is not None}
    cfg = _config.save(**changes) if changes else _config.load()
    print(tr(f"# fichier : {_config.user_config_path()}", f"# file: {_config.user_config_path()}"))
    for key, value in cfg.public_dict().items():
        print(f"{key} = {value}")
    if cfg.prenom:
        print(tr(f"# votre domaine : {cfg.domain}", f"# your domain: {cfg.domain}"))
    return 0


def _lookup(args: argparse.Namespace) -> int:
    from .resolver import lookup

    result = lookup(args.name, args.type, authoritative=args.auth)
    print(result)
    return 0 if result.outcome.value in ("answer", "NXDOMAIN", "NODATA") else 1


def _check(args: argparse.Namespace) -> int:
    from .checks import domain

    audit = domain(args.domain)
    print(audit.zone_file() if args.zone else audit)
    return 0 if audit.ok else 1


def _read_message(name: str) -> bytes:
    from pathlib import Path

    from .errors import ConfigError

    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as exc:
        raise ConfigError(f"Impossible de lire le message {name} : {exc.strerror}. Donnez le chemin d'un "
                          "fichier .eml (la source complète du message), ou « - » pour l'entrée standard.",
                          f"Cannot read the message {name}: {exc.strerror}. Give the path of an .eml file "
                          "(the full source of the message), or \"-\" for standard input.") from exc


def _diagnose(args: argparse.Namespace) -> int:
    from .checks import message

    diagnosis = message(_read_message(args.message))
    print(diagnosis)
    return 0 if not any(f.severity == "error" for f in diagnosis.findings) else 1


def _replay(args: argparse.Namespace) -> int:
    from .replay import replay

    chain = replay(_read_message(args.message), receiver=args.receiver)
    print(chain)
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        from .plots import trust_chain

        trust_chain(chain).figure.savefig(args.png, dpi=110, bbox_inches="tight")
    return 0


def _class(args: argparse.Namespace) -> int:
    from .classroom import classroom

    def progress(done: int, total: int) -> None:
        bar = "#" * int(30 * done / total)
        print(f"\r[{bar:<30}] {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)

    report = classroom(args.roster, progress=progress)
    frame = report.to_dataframe()
    print(frame.to_string(index=False))
    if args.csv:
        print(tr(f"CSV : {report.to_csv(args.csv)}", f"CSV: {report.to_csv(args.csv)}"))
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        ax = report.plot()
        ax.figure.savefig(args.png, bbox_inches="tight", dpi=120)
        print(tr(f"Figure : {args.png}", f"Figure: {args.png}"))
    return 0


def _mailcow_admin(args: argparse.Namespace):
    """The Mailcow client of ``--mailcow``: its administrator key typed (never echoed) or read from a 0600 file."""
    from pathlib import Path as _Path

    from .errors import ConfigError
    from .mail import MailcowAPI

    if args.mailcow_key_file:
        path = _Path(args.mailcow_key_file).expanduser()
        try:
            if path.stat().st_mode & 0o077:
                raise ConfigError(f"{path} est lisible par d'autres : protégez-le (chmod 600 {path}).",
                                  f"{path} is readable by others: protect it (chmod 600 {path}).")
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"Impossible de lire {path} ({exc.strerror}).", f"Cannot read {path} ({exc.strerror}).") from None
    else:
        import getpass

        key = getpass.getpass(tr(f"Clé d'API administrateur de {args.mailcow} (X-API-Key, non affichée) : ",
                                 f"Administrator API key of {args.mailcow} (X-API-Key, not shown): ")).strip()
    if not key:
        raise ConfigError("Clé d'API vide : tapez la clé administrateur de Mailcow (Configuration > Accès > API).",
                          "Empty API key: type Mailcow's administrator key (Configuration > Access > API).")
    try:  # the embedded lab's Mailcow-compatible API, when it is the one named (rehearsal of the set-up)
        from .world import current

        world = current()
        if world.kind == "local" and args.mailcow == world.config.mail_host:
            return MailcowAPI(key, host=args.mailcow, world=world)
    except LabmailError:
        pass
    return MailcowAPI.at(args.mailcow, key, cafile=args.mailcow_ca)


def _provision_live(args: argparse.Namespace) -> int:
    from .liveclass import provision_live

    api = _mailcow_admin(args) if args.mailcow else None
    plan = provision_live(args.roster, args.folder, parent_domain=args.parent, nameserver=args.ns,
                          nameserver_address=args.ns_address, dry_run=args.dry_run, mailcow=api)
    for path in plan.written:
        print(("  (à écrire) " if plan.dry_run else "  ") + str(path))
    for call in plan.mailcow:
        print(("  (à faire) " if plan.dry_run else "  fait : ") + call)
    for warning in plan.warnings:
        print("  ! " + warning)
    print(plan)
    return 0


def _thunderbird(args: argparse.Namespace) -> int:
    from . import lab
    from .thunderbird import make_profile

    cfg = _config.load()
    cfg.domain  # noqa: B018 - says what to do when no first name is configured
    if cfg.world == "local" and not lab.status(cfg).running:  # the profile needs the lab's ports
        lab.ensure(cfg)
        print(tr("Lab démarré (il ne tournait pas).", "Lab started (it was not running)."))
    print(make_profile(args.profile, config=cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labmail", description="labmail — les mécanismes de la messagerie")
    parser.add_argument("--lang", choices=["fr", "en"], help="langue des messages / message language")
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="le lab intégré / the embedded lab")
    actions = lab.add_subparsers(dest="action", required=True, metavar="{start,status,stop,reset,rejoindre}")
    for name, text in (("start", "démarrer le lab (s'il ne tourne pas) / start the lab (if not running)"),
                       ("status", "où le lab écoute, son dossier, votre clé / where the lab listens, its folder, your key"),
                       ("stop", "arrêter le lab / stop the lab"),
                       ("reset", "retour au début du TP (ports, classe, clés et autorité gardés) / back to the course's "
                                 "start (ports, class, keys and CA kept)")):
        action = actions.add_parser(name, help=text, description=text)
        if name in ("start", "reset"):
            action.add_argument("--class", dest="roster",
                                help="liste de classe CSV : un domaine par étudiant / class roster CSV")
        if name == "start":
            action.add_argument("--adresse", help="adresse IPv4 de cette machine où la classe joint le lab partagé "
                                                  "(défaut : 127.0.0.1) / this machine's address where the class "
                                                  "reaches the shared lab")
        action.set_defaults(func=_lab, roster=None, adresse=None)
    text = ("rejoindre le lab de la classe avec le dossier donné par l'enseignant·e / join the class lab with the "
            "folder from your instructor")
    join = actions.add_parser("rejoindre", help=text, description=text)
    join.add_argument("dossier", help="le dossier classe/<prénom>/ / the classe/<prenom>/ folder")
    join.set_defaults(func=_lab, roster=None, adresse=None)

    cfg = sub.add_parser("config", help="afficher ou modifier la configuration / show or set the configuration")
    cfg.add_argument("--prenom", help="votre prénom, ex. \"Jean-Émile\"")
    cfg.add_argument("--world", choices=["local", "live"])
    cfg.add_argument("--parent-domain")
    cfg.add_argument("--mail-host")
    cfg.add_argument("--set-lang", choices=["fr", "en"])
    cfg.set_defaults(func=_show_config)

    look = sub.add_parser("lookup", help="interroger le DNS / query the DNS")
    look.add_argument("name")
    look.add_argument("type", nargs="?", default="A")
    look.add_argument("--auth", action="store_true", help="interroger directement les serveurs de la zone")
    look.set_defaults(func=_lookup)

    check = sub.add_parser("check", help="auditer les enregistrements d'un domaine / audit a domain's records")
    check.add_argument("domain")
    check.add_argument("--zone", action="store_true", help="afficher le fichier de zone attendu / print the expected zone file")
    check.set_defaults(func=_check)

    diag = sub.add_parser("diagnose", help="diagnostic de délivrabilité d'un message reçu / deliverability diagnosis")
    diag.add_argument("message", help="fichier .eml (source complète), ou - pour l'entrée standard")
    diag.set_defaults(func=_diagnose)

    rep = sub.add_parser("replay", help="le jugement du destinataire pas à pas / the receiver's judgment step by step")
    rep.add_argument("message", help="fichier .eml (source complète du message reçu), ou -")
    rep.add_argument("--receiver", default="gmail", choices=["gmail", "outlook", "school"])
    rep.add_argument("--png", help="écrire la figure de la chaîne (PNG ou SVG) / write the chain figure")
    rep.set_defaults(func=_replay)

    klass = sub.add_parser("class", help="auditer toute une classe / audit a whole class")
    klass.add_argument("roster", help="liste de classe CSV (prenom, nom, email)")
    klass.add_argument("--csv", help="écrire le tableau en CSV / write the table as CSV")
    klass.add_argument("--png", help="écrire la carte de chaleur / write the heat map")
    klass.set_defaults(func=_class)

    live = sub.add_parser("provision-live", help="préparer la classe sur les vrais serveurs (BIND) / set the class up "
                                                 "on real servers (BIND)",
                          description="Écrit la configuration BIND (une zone et une clé TSIG par étudiant·e), les "
                                      "délégations de la zone parente, les fichiers de chaque étudiant·e et une liste "
                                      "de contrôle. Relançable : ajoute les nouveaux, ne casse rien. / Writes BIND's "
                                      "configuration, the delegations, each student's files and a checklist.")
    live.add_argument("roster", help="liste de classe CSV (prenom, nom, email)")
    live.add_argument("--dossier", "--folder", dest="folder", required=True, help="dossier de sortie / output folder")
    live.add_argument("--parent", default="labmail.cloud", help="zone parente / parent zone")
    live.add_argument("--ns", default="ns1.labmail.cloud", help="nom du serveur DNS faisant autorité")
    live.add_argument("--ns-address", help="son adresse, si elle est dans la zone parente (colle) / its address (glue)")
    live.add_argument("--mailcow", help="serveur Mailcow où créer domaines (DKIM dkim, 2048 bits) et administrateurs "
                                        "de domaine par son API ; la clé administrateur est demandée / Mailcow server "
                                        "where domains and domain administrators are created (admin key asked)")
    live.add_argument("--mailcow-cle-fichier", "--mailcow-key-file", dest="mailcow_key_file",
                      help="lire la clé administrateur dans ce fichier (0600) au lieu de la taper / read the key from this file")
    live.add_argument("--mailcow-ca", help="autorité de certification du serveur Mailcow, si elle n'est pas celle du "
                                           "système / the Mailcow server's CA file")
    live.add_argument("--dry-run", "--a-blanc", dest="dry_run", action="store_true",
                      help="dire ce qui serait écrit et créé, sans rien changer / say what would be written and made")
    live.set_defaults(func=_provision_live)

    bird = sub.add_parser("thunderbird", help="un profil Thunderbird qui joint le lab / a Thunderbird profile that "
                                              "reaches the lab",
                          description="Crée (ou met à jour) un profil Thunderbird dédié au lab : les noms du lab sur "
                                      "cette machine, chaque port simulé (993, 465, 587…) vers son port local, "
                                      "l'autorité du lab approuvée pour les serveurs. / Creates (or updates) a "
                                      "Thunderbird profile for the lab.")
    bird.add_argument("--profil", "--profile", dest="profile",
                      help="dossier du profil (défaut : thunderbird dans le dossier d'état du lab)")
    bird.set_defaults(func=_thunderbird)

    args = parser.parse_args(argv)
    set_language(args.lang)
    try:
        return args.func(args)
    except LabmailError as exc:
        print(tr("Erreur : ", "Error: ") + str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
