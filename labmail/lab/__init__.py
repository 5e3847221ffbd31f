"""The embedded *lab in a box*: start, inspect, stop and reset it.

The lab is one background process per user (no root needed) that serves
the local world on loopback: for now the authoritative DNS of every zone
(root, ``cloud``, ``labmail.cloud``, the students' zones, ``gmail.test``,
``outlook.test``, the spoofer's ``arnaque.test``, a DNSBL, reverse zones).

From a notebook::

    import labmail
    status = labmail.lab.ensure()     # starts it if needed, provisions the student
    status.dns_port

From a terminal: ``labmail lab start|status|stop|reset``.

A class can share one lab: ``labmail lab start --class ROSTER.csv --adresse 10.0.0.5`` serves every service on that
address and writes, for each student, a folder of their own (``<state>/classe/<prenom>/``: the lab's address and
ports, its CA certificate, and that student's keys and passwords only). A student's folder *joins* the class lab
(``labmail lab rejoindre DOSSIER``): nothing is started on the student's machine, every client goes to the class lab.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, load
from ..errors import LabError
from ..i18n import tr
from ..state import PROTOCOL, PROVIDERS, Layout  # PROTOCOL: also lab.PROTOCOL

__all__ = ["LabStatus", "start", "stop", "status", "reset", "ensure", "provision", "student_key_file", "add_mailbox", "spoof", "send_dmarc_reports", "api_key", "provider_password", "provision_class", "student_folder", "join", "joins_class_lab", "class_api"]

_children: dict[int, subprocess.Popen] = {}



@dataclass(frozen=True)
class LabStatus:
    """What :func:`status` reports about the lab of a state folder."""

    running: bool
    state_dir: Path
    pid: int | None = None
    host: str = "127.0.0.1"
    dns_port: int | None = None
    auth_port: int | None = None
    registry_port: int | None = None
    parent_domain: str | None = None
    mail_host: str | None = None
    students: tuple[str, ...] = ()
    zones: tuple[str, ...] = field(default=(), repr=False)
    started: str | None = None
    compatible: bool = True
    endpoints: dict = field(default_factory=dict, repr=False)
    ca_path: Path | None = None
    remote: bool = False  # the class lab, joined from a student's folder: not started nor stopped from here

    @property
    def log_path(self) -> Path:
        return Layout(self.state_dir).log_file

    def _service_ports(self) -> dict[str, int]:
        names = {"203.0.113.10:25": f"{self.mail_host}:25 (MX)", "203.0.113.10:587": f"{self.mail_host}:587 (submission, STARTTLS)",
                 "203.0.113.10:465": f"{self.mail_host}:465 (submission, TLS)",
                 **{f"{p.mx_v4}:25": f"{p.domain} MX:25" for p in PROVIDERS.values()},
                 **{f"{p.imap_v4}:993": f"{p.imap_host}:993 (IMAP, TLS)" for p in PROVIDERS.values()},
                 "203.0.113.10:443": f"{self.mail_host}:443 (HTTPS : autoconfig, API)",
                 "203.0.113.10:995": f"{self.mail_host}:995 (POP3, TLS)", "203.0.113.10:110": f"{self.mail_host}:110 (POP3, STLS)",
                 "203.0.113.10:993": f"{self.mail_host}:993 (IMAP, TLS)", "203.0.113.10:143": f"{self.mail_host}:143 (IMAP, STARTTLS)"}
        return {names.get(k, k): v for k, v in self.endpoints.items() if k in names}

    def ports(self) -> dict[str, tuple[str, int]]:
        """The port map: service → (loopback host, local port) for real clients (dig, nsupdate…)."""
        if not self.running:
            return {}
        parent = self.parent_domain
        return {
            "dns (résolveur / resolver)": (self.host, self.dns_port),
            f"dns.{parent}:53": (self.host, self.auth_port),
            f"ns1.{parent}:53": (self.host, self.registry_port),
            **{name: (self.host, port) for name, port in self._service_ports().items()},
        }

    def __str__(self) -> str:
        if self.running and not self.compatible:
            return tr(f"Lab démarré par une autre version de labmail (pid {self.pid}) : relancez-le avec "
                      "« labmail lab stop » puis « labmail lab start ».",
                      f"Lab started by another version of labmail (pid {self.pid}): restart it with "
                      "\"labmail lab stop\" then \"labmail lab start\".")
        if self.remote:
            where = f"{self.host} port {self.dns_port}"
            if not self.running:
                where = f"{self.host} port {self.auth_port}"  # the port asked (the students' zones' server)
                return tr(f"Le lab de la classe ne répond pas ({where}) : demandez à votre enseignant·e s'il est démarré.",
                          f"The class lab does not answer ({where}): ask your instructor whether it is running.")
            return "\n".join([
                tr(f"Lab de la classe à {self.host} (dossier {self.state_dir}) — démarré et arrêté par l'enseignant·e",
                   f"The class lab at {self.host} (folder {self.state_dir}) — started and stopped by the instructor"),
                tr(f"  Résolveur DNS du lab : {where} (UDP et TCP)", f"  Lab DNS resolver: {where} (UDP and TCP)"),
                tr(f"  Serveur autoritatif des zones d'étudiants (dns.{self.parent_domain}) : port {self.auth_port}",
                   f"  Authoritative server of the students' zones (dns.{self.parent_domain}): port {self.auth_port}"),
                *[f"  {name}: {self.host} port {port}" for name, port in self._service_ports().items()],
                tr(f"  Autorité de certification du lab : {self.ca_path}", f"  Lab certificate authority: {self.ca_path}"),
            ])
        if not self.running:
            return tr(
                f"Lab arrêté (dossier d'état {self.state_dir}). Démarrez-le avec « labmail lab start ».",
                f"Lab stopped (state folder {self.state_dir}). Start it with \"labmail lab start\".",
            )
        students = ", ".join(f"{s}.{self.parent_domain}" for s in self.students) or tr("aucun", "none")
        example = f"{self.students[0]}.{self.parent_domain}" if self.students else self.parent_domain
        return "\n".join([
            tr(f"Lab démarré (pid {self.pid}, depuis {self.started})", f"Lab running (pid {self.pid}, since {self.started})"),
            tr(f"  Résolveur DNS du lab : {self.host} port {self.dns_port} (UDP et TCP)",
               f"  Lab DNS resolver: {self.host} port {self.dns_port} (UDP and TCP)"),
            tr(f"  Serveur autoritatif des zones d'étudiants (dns.{self.parent_domain}) : port {self.auth_port}"
               " — mises à jour (nsupdate), AXFR",
               f"  Authoritative server of the students' zones (dns.{self.parent_domain}): port {self.auth_port}"
               " — updates (nsupdate), AXFR"),
            tr(f"  Serveur du registre (ns1.{self.parent_domain} : racine, {self.parent_domain}, fournisseurs) : "
               f"port {self.registry_port}",
               f"  Registry server (ns1.{self.parent_domain}: root, {self.parent_domain}, providers): "
               f"port {self.registry_port}"),
            tr(f"  Domaines d'étudiant : {students}", f"  Student domains: {students}"),
            *[f"  {name}: {self.host} port {port}" for name, port in self._service_ports().items()],
            tr(f"  Autorité de certification du lab (à importer dans Thunderbird) : {self.ca_path}",
               f"  Lab certificate authority (import it into Thunderbird): {self.ca_path}"),
            tr(f"  Dossier d'état : {self.state_dir}", f"  State folder: {self.state_dir}"),
            tr(f"  Journal : {self.log_path}", f"  Log: {self.log_path}"),
            tr("  Essayez :", "  Try:") + f" dig @{self.host} -p {self.dns_port} {example} SOA",
        ])


def _cfg(config: Config | None) -> Config:
    return config if config is not None else load()


def _request(path: Path, payload: dict, timeout: float = 10.0) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(payload).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def _control_path(state_dir: Path) -> Path:
    """The running lab's control socket, as recorded in ``run.json`` (OSError/KeyError if none)."""
    return Path(json.loads(Layout(state_dir).run_file.read_text(encoding="utf-8"))["control"])


def _status_from(state_dir: Path, info: dict, *, running: bool = True, remote: bool = False) -> LabStatus:
    if info.get("protocol") != PROTOCOL:  # a lab started by another version of labmail: restart it
        return LabStatus(running=running, state_dir=state_dir, pid=info.get("pid"), compatible=False, remote=remote)
    ca = info.get("ca")
    return LabStatus(
        running=running,
        remote=remote,
        state_dir=state_dir,
        pid=info.get("pid"),
        host=info["host"],
        dns_port=info["ports"]["resolver"],
        auth_port=info["ports"]["students"],
        registry_port=info["ports"]["registry"],
        parent_domain=info["parent_domain"],
        mail_host=info["mail_host"],
        students=tuple(info["students"]),
        zones=tuple(info["zones"]),
        started=info["started"],
        endpoints=dict(info.get("endpoints", {})),
        ca_path=(state_dir / ca) if ca else None,  # relative in a student's folder of a class lab
    )


def _remote_run(state_dir: Path) -> dict | None:
    """The class lab that this folder joins (a student's folder written by ``lab start --class``), or None."""
    try:
        info = json.loads(Layout(state_dir).run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("remote") else None


def _reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _remote_status(state_dir: Path, info: dict) -> LabStatus:
    try:
        up = _reachable(str(info["host"]), int(info["ports"]["students"]))
    except (KeyError, TypeError, ValueError):
        up = False
    return _status_from(state_dir, info, running=up, remote=True)


def _class_lab_error(what: tuple[str, str], current: LabStatus) -> LabError:
    return LabError(f"Ce dossier rejoint le lab de la classe (à {current.host}) : {what[0]}",
                    f"This folder joins the class lab (at {current.host}): {what[1]}")


def status(config: Config | None = None) -> LabStatus:
    """Is the lab of this configuration's state folder running, and where does it listen?"""
    state_dir = _cfg(config).state_dir
    remote = _remote_run(state_dir)
    if remote is not None:
        return _remote_status(state_dir, remote)
    try:
        reply = _request(_control_path(state_dir), {"op": "status"}, timeout=5)
    except (OSError, ValueError, KeyError):
        return LabStatus(running=False, state_dir=state_dir)
    if not reply.get("ok"):
        return LabStatus(running=False, state_dir=state_dir)
    return _status_from(state_dir, reply["status"])


def _log_tail(state_dir: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Layout(state_dir).log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _listen_address(listen: str) -> str:
    """The address a class lab listens on: one IPv4 address of this machine that the students' machines reach."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(listen.strip())
    except ValueError:
        ip = None
    if ip is None or ip.version != 4 or ip.is_unspecified or ip.is_multicast:
        raise LabError(f"Adresse d'écoute « {listen} » invalide : donnez l'adresse IPv4 de cette machine que les machines "
                       "des étudiants joignent (ex. 10.0.0.5 ; pas 0.0.0.0, les clients doivent savoir où se connecter).",
                       f"Invalid listening address \"{listen}\": give this machine's IPv4 address that the students' "
                       "machines reach (e.g. 10.0.0.5; not 0.0.0.0: clients must know where to connect).")
    from .tls import LAB_NETWORKS

    simulated = [n for n in LAB_NETWORKS if ip in ipaddress.ip_network(n) and not ip.is_loopback]
    if simulated:
        raise LabError(f"Adresse d'écoute « {ip} » : elle est dans {simulated[0]}, une plage de l'Internet simulé du lab "
                       "(un client venant de là passerait pour un de ses serveurs). Donnez l'adresse réseau de cette "
                       "machine.", f"Listening address \"{ip}\" lies in {simulated[0]}, a range of the lab's simulated "
                       "Internet (a client from there would pass for one of its servers). Give this machine's network "
                       "address.")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError as exc:
            raise LabError(f"Adresse d'écoute « {ip} » : impossible d'y écouter ({exc.strerror}) — ce n'est pas une adresse "
                           "de cette machine (« ip -br addr » les liste). Le lab n'a pas été touché ; « --adresse "
                           "127.0.0.1 » le garde sur la boucle locale.", f"Listening address \"{ip}\": cannot listen there "
                           f"({exc.strerror}) — not an address of this machine (\"ip -br addr\" lists them). The lab was "
                           "not touched; \"--adresse 127.0.0.1\" keeps it on loopback.") from None
    return str(ip)


def start(config: Config | None = None, *, timeout: float = 30.0, listen: str | None = None) -> LabStatus:
    """Start the lab in the background (if it is not running) and return its status.

    The student of the configuration (if set) is provisioned: delegated zone
    ``prenom.labmail.cloud`` with SOA and NS only, its TSIG key, its DKIM key.

    ``listen``: the address every service listens on, for a lab the whole class shares (kept for the next starts;
    loopback by default). In a student's folder that joins the class lab, nothing starts: the class lab must answer.
    """
    cfg = _cfg(config)
    for pid, child in list(_children.items()):  # reap labs of this process that have exited (killed, crashed)
        if child.poll() is not None:
            del _children[pid]
    current = status(cfg)
    if current.remote:
        if listen is not None:
            raise _class_lab_error(("il n'y a rien à démarrer ici.", "there is nothing to start here."), current)
        if not current.running:
            raise LabError(f"Le lab de la classe ne répond pas à {current.host} (port {current.auth_port}) : demandez à "
                           "votre enseignant·e s'il est démarré, et vérifiez que votre machine joint cette adresse.",
                           f"The class lab does not answer at {current.host} (port {current.auth_port}): ask your "
                           "instructor whether it is running, and check that your machine reaches that address.")
        if cfg.prenom and current.compatible and cfg.prenom not in current.students:
            owner = ", ".join(current.students)
            raise LabError(f"Ce dossier de la classe est celui de « {owner} », pas de « {cfg.prenom} » : utilisez le "
                           "vôtre (labmail lab rejoindre DOSSIER), ou corrigez votre prénom (notebook 00).",
                           f"This class folder belongs to \"{owner}\", not to \"{cfg.prenom}\": use yours "
                           "(labmail lab rejoindre FOLDER), or fix your first name (notebook 00).")
        return current
    if listen is not None:
        listen = _listen_address(listen)
        if current.running and current.host != listen:
            stop(cfg)  # the same lab, its ports and state, on the new address
            current = status(cfg)
    if current.running and not current.compatible:
        stop(cfg)  # started by an older labmail: restart it on the same state
        current = status(cfg)
    if current.running:
        return provision(cfg) if cfg.prenom and cfg.prenom not in current.students else current
    if cfg.world != "local":
        raise LabError(
            "La configuration indique le monde « live » (serveurs de la classe) : il n'y a pas de lab à démarrer. "
            "Pour utiliser le lab intégré, mettez world = \"local\".",
            "The configuration selects the \"live\" world (the class servers): there is no lab to start. "
            "To use the embedded lab, set world = \"local\".",
        )
    state_dir = cfg.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    cmd = [sys.executable, "-m", "labmail.lab", "serve", "--state", str(state_dir),
           "--parent-domain", cfg.parent_domain, "--mail-host", cfg.mail_host, "--dns-port", str(cfg.dns_port)]
    if cfg.prenom:
        cmd += ["--student", cfg.prenom]
    from ..config import forward_zones

    for zone, (host, port) in forward_zones(cfg.lab_forward).items():
        cmd += ["--forward", f"{zone}={host}:{port}"]
    if listen is not None:
        cmd += ["--listen", listen]
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    with open(Layout(state_dir).log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _children.pop(proc.pid, None)
            if proc.returncode == 3:  # another process won the race: use it
                current = status(cfg)
                if current.running:
                    return current
            raise LabError(
                f"Le lab n'a pas pu démarrer (code {proc.returncode}). Fin du journal {Layout(state_dir).log_file} :\n"
                f"{_log_tail(state_dir)}",
                f"The lab could not start (exit code {proc.returncode}). End of the log {Layout(state_dir).log_file}:\n"
                f"{_log_tail(state_dir)}",
            )
        current = status(cfg)
        if current.running and current.pid == proc.pid:
            return current
        time.sleep(0.02)
    proc.kill()
    raise LabError(
        f"Le lab n'a pas répondu en {timeout:.0f} s. Consultez {Layout(state_dir).log_file}.",
        f"The lab did not answer within {timeout:.0f} s. See {Layout(state_dir).log_file}.",
    )


def _pid_alive(pid: int) -> bool:
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(config: Config | None = None, *, timeout: float = 10.0) -> LabStatus:
    """Stop the lab (gracefully, then by signal). State is kept: the next start finds it all again."""
    cfg = _cfg(config)
    current = status(cfg)
    if current.remote:
        raise _class_lab_error(("seul·e l'enseignant·e l'arrête, sur sa machine.",
                                "only the instructor stops it, on their machine."), current)
    if not current.running or current.pid is None:
        return current
    try:
        _request(_control_path(cfg.state_dir), {"op": "stop"}, timeout=5)
    except (OSError, ValueError, KeyError):
        pass
    pid = current.pid
    for sig, wait in ((None, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if sig is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.02)
        if not _pid_alive(pid):
            break
    _children.pop(pid, None)
    return status(cfg)


def reset(config: Config | None = None) -> LabStatus:
    """Return the lab to the start of the course: stop it, undo the course's work, start it again.

    What the students did is undone: their zones hold SOA and NS only (the serial moves forward), the mailboxes of
    their domains and all mail are gone. What is not course state is kept: the ports, the class (students, keys,
    provider mailboxes, class-credentials.csv) and the lab CA that Thunderbird may trust. A folder holding zones but
    no world.json (a broken lab) is started afresh.
    """
    cfg = _cfg(config)
    if joins_class_lab(cfg):
        raise _class_lab_error(("seul·e l'enseignant·e le remet au début (labmail lab reset, sur sa machine).",
                                "only the instructor resets it (labmail lab reset, on their machine)."), status(cfg))
    stop(cfg)
    state_dir = cfg.state_dir
    if Layout(state_dir).world_file.exists():
        from .server import Lab

        world = json.loads(Layout(state_dir).world_file.read_text(encoding="utf-8"))
        state = Lab(state_dir)
        state.open(world["parent_domain"], world["mail_host"])
        state.reset_course()
    elif Layout(state_dir).zones_dir.exists():
        shutil.rmtree(state_dir)
    elif state_dir.exists() and any(state_dir.iterdir()):
        raise LabError(
            f"{state_dir} ne ressemble pas à un dossier de lab (pas de world.json) : je ne l'efface pas.",
            f"{state_dir} does not look like a lab folder (no world.json): not deleting it.",
        )
    return start(cfg)


def provision(config: Config | None = None, students: list[str] | None = None) -> LabStatus:
    """Make sure the running lab has a zone, TSIG key and DKIM key for each student."""
    cfg = _cfg(config)
    labels = list(students) if students is not None else ([cfg.prenom] if cfg.prenom else [])
    current = _check_compatible(status(cfg))
    if current.remote:
        if set(labels) <= set(current.students):
            return current
        raise _class_lab_error(("l'enseignant·e y inscrit les étudiants (labmail lab start --class).",
                                "the instructor enrols the students (labmail lab start --class)."), current)
    if not current.running:
        raise LabError("Le lab n'est pas démarré : labmail.lab.ensure() ou « labmail lab start ».",
                       "The lab is not running: labmail.lab.ensure() or \"labmail lab start\".")
    reply = _request(_control_path(cfg.state_dir), {"op": "provision", "students": labels}, timeout=60)
    if not reply.get("ok"):
        err = reply.get("error", {})
        raise LabError(err.get("fr", "erreur"), err.get("en"))
    return _status_from(cfg.state_dir, reply["status"])


def _check_compatible(current: LabStatus) -> LabStatus:
    if current.running and not current.compatible:
        raise LabError(
            "Le lab en marche a été démarré par une autre version de labmail : relancez-le (labmail lab stop, puis "
            "labmail lab start, ou labmail.lab.ensure()).",
            "The running lab was started by another version of labmail: restart it (labmail lab stop, then "
            "labmail lab start, or labmail.lab.ensure()).",
        )
    return current


def ensure(config: Config | None = None) -> LabStatus | None:
    """For notebooks: start the lab if needed and provision the configured student.

    In the live world there is nothing to start: returns ``None``.
    """
    cfg = _cfg(config)
    if cfg.world != "local":
        return None
    return start(cfg)


def _control_request(cfg: Config, payload: dict, timeout: float = 60) -> dict:
    if cfg.world != "local":
        raise LabError("Cette action simule une partie d'Internet (usurpateur, fournisseurs, rapports, boîtes créées par "
                       "le lab) : elle n'existe que dans le lab intégré (world = \"local\"). Dans le monde live, faites-le "
                       "sur les vrais serveurs (interface Mailcow, vraies boîtes externes).",
                       "This action simulates part of the Internet (spoofer, providers, reports, mailboxes made by the "
                       "lab): it only exists in the embedded lab (world = \"local\"). In the live world, do it on the real "
                       "servers (Mailcow's interface, real external mailboxes).")
    current = _check_compatible(status(cfg))
    if current.remote:
        raise _class_lab_error(("cette action simule une partie d'Internet (usurpateur, rapports des fournisseurs) : "
                                "dans le lab partagé, l'enseignant·e la lance depuis sa machine.",
                                "this action simulates part of the Internet (spoofer, providers' reports): in the "
                                "shared lab, the instructor runs it from their machine."), current)
    try:
        reply = _request(_control_path(cfg.state_dir), payload, timeout=timeout)
    except (OSError, ValueError, KeyError):
        raise LabError("Le lab n'est pas démarré : labmail.lab.ensure() ou « labmail lab start ».",
                       "The lab is not running: labmail.lab.ensure() or \"labmail lab start\".") from None
    if not reply.get("ok"):
        err = reply.get("error", {})
        raise LabError(err.get("fr", "erreur"), err.get("en"))
    return reply


def add_mailbox(address: str, password: str, *, name: str = "", config: Config | None = None) -> dict:
    """Create a mailbox on the school's server (what step 5 does in Mailcow's interface). From a student's folder of
    the class lab, through the school server's API with the student's key (their own domain only)."""
    cfg = _cfg(config)
    if joins_class_lab(cfg):
        from ..errors import APIError
        from ..mail import MailcowAPI
        from ..world import current

        local, _, domain = address.rpartition("@")
        api = MailcowAPI(key=api_key(cfg), world=current(cfg))
        try:
            MailcowAPI.raise_for(api.add_mailbox(local, domain, password, name=name))
        except APIError as exc:
            if any(isinstance(m, dict) and m.get("username", "").lower() == address.lower()
                   for m in (api.get_mailbox("all", domain) or [])):
                raise LabError(f"La boîte {address} existe déjà.", f"Mailbox {address} already exists.") from None
            raise exc
        return {"username": address, "name": name}
    return _control_request(_cfg(config), {"op": "add_mailbox", "address": address, "password": password, "name": name})["mailbox"]


def spoof(header_from: str, rcpt: str, *, mail_from: str | None = None, subject: str = "Urgent", body: str = "",
          config: Config | None = None) -> tuple[str, str]:
    """Make the spoofer (mx.arnaque.test, 192.0.2.66) send a message forging ``header_from`` to ``rcpt``.

    Returns (status, text): ``("ok", mx)`` when accepted, ``("perm", reply)`` when refused (e.g. DMARC reject).
    From a student's folder of a class lab: through the API with the student's key — their own domain forged, to
    their own mailboxes only.
    """
    cfg = _cfg(config)
    body = body or "Cliquez ici : http://arnaque.test/"
    if joins_class_lab(cfg):
        reply = _ask_class_lab(cfg, "spoof", {"header_from": header_from, "rcpt": rcpt, "mail_from": mail_from or "",
                                              "subject": subject, "body": body})
    else:
        reply = _control_request(cfg, {"op": "spoof", "header_from": header_from, "rcpt": rcpt, "subject": subject,
                                       "mail_from": mail_from if mail_from is not None else "bounce@arnaque.test",
                                       "body": body})
    return reply["status"], reply["reply"]


def send_dmarc_reports(config: Config | None = None, *, format: str = "7489") -> list[dict]:
    """"End of the day": the lab's Gmail and Outlook send their DMARC aggregate reports, for everything they
    judged since their last report, to the ``rua=mailto:`` of each domain's DMARC record (external destinations
    only when authorised, RFC 7489 §7.1). ``format="9990"`` for the RFC 9990 XML. Returns what was sent:
    provider, domain, rua, messages, status (``ok``, ``temp``, ``perm``, ``refused``), reply.

    Read the reports with :func:`labmail.reports.parse` (the whole mail, or its attachment).
    """
    from ..reports import FORMATS

    if format not in FORMATS:
        raise LabError(f"Format de rapport inconnu « {format} » : « 7489 » ou « 9990 ».",
                       f"Unknown report format \"{format}\": \"7489\" or \"9990\".")
    cfg = _cfg(config)
    if joins_class_lab(cfg):  # a class lab: the reports about the student's own domain
        return _ask_class_lab(cfg, "dmarc-reports", {"format": format})["reports"]
    return _control_request(_cfg(config), {"op": "dmarc_reports", "format": format})["reports"]


def class_api(key: str, world=None):
    """The embedded lab's own API endpoints (not Mailcow's) with a student's key, for a student of a shared class
    lab: ``.labmail("spoof", {...})`` (the spoofer forges the key's own domain, to that student's own mailboxes) and
    ``.labmail("dmarc-reports", {"format": "7489"})`` (the providers' reports about the key's domain). Answers as
    Mailcow's API does: a list of ``{"type": "danger", "msg": [...]}`` when refused."""
    from ..mail import MailcowAPI

    class _LabAPI(MailcowAPI):
        def labmail(self, operation: str, payload: dict):
            return self._call("POST", f"labmail/{operation}", payload)

    return _LabAPI(key=key, world=world)


def joins_class_lab(config: Config | None = None) -> bool:
    """Is this configuration's state folder a student's folder of a class lab (``labmail lab rejoindre``)? Read from
    the folder itself: no question to the lab."""
    return _remote_run(_cfg(config).state_dir) is not None


def _ask_class_lab(cfg: Config, operation: str, payload: dict) -> dict:
    """Ask the class lab's own endpoint ``operation`` with the configured student's key; a refusal raised as a
    :class:`LabError` saying what is allowed."""
    from ..errors import APIError
    from ..mail import MailcowAPI
    from ..world import current

    domain, label = cfg.domain, cfg.prenom
    said = {
        "access_denied": (f"Le lab de la classe refuse : l'usurpateur n'écrit qu'au nom de votre domaine ({domain}), "
                          f"vers vos boîtes ({label}@gmail.test, {label}@outlook.test) ou une adresse de votre domaine.",
                          f"The class lab refuses: the spoofer writes only in the name of your domain ({domain}), to "
                          f"your mailboxes ({label}@gmail.test, {label}@outlook.test) or an address of your domain."),
        "request_body_invalid": ("Le lab de la classe refuse la demande : une adresse seule par champ (ex. "
                                 f"direction@{domain}, sans nom ni liste), un objet d'une seule ligne.",
                                 "The class lab refuses the request: one bare address per field (e.g. "
                                 f"direction@{domain}, no name nor list), a one-line subject."),
    }
    try:
        answer = class_api(api_key(cfg), current(cfg)).labmail(operation, payload)
    except APIError as exc:
        if "429" not in exc.text.fr:
            raise
        raise LabError("Le lab de la classe est partagé : vous avez demandé l'usurpateur ou les rapports trop souvent "
                       "(20 fois par minute au plus). Attendez une minute.", "The class lab is shared: you asked the "
                       "spoofer or the reports too often (20 times a minute at most). Wait a minute.") from None
    if not isinstance(answer, dict) or answer.get("type") != "success":
        first = answer[0] if isinstance(answer, list) and answer and isinstance(answer[0], dict) else {}
        reason = next((m for m in first.get("msg") or [] if m in said), None)
        if reason is not None:
            raise LabError(*said[reason])
        MailcowAPI.raise_for(answer)
        raise LabError("Réponse inattendue du lab de la classe.", "Unexpected answer from the class lab.")
    return answer


def api_key(config: Config | None = None, *, admin: bool = False) -> str:
    """The student's key for the school server's API (or the lab admin's, for instructors). Never print it.
    (:func:`labmail.world.api_key`; the lab makes the keys when it provisions a student.)"""
    from ..world import api_key as _api_key

    return _api_key(_cfg(config), admin=admin)


def provision_class(roster, config: Config | None = None) -> Path:
    """Provision every student of a roster in the running lab; write their credentials to a file only the
    instructor can read (``<state>/class-credentials.csv``, 0600): domain, API key, TSIG key name and secret,
    provider mailbox passwords. Returns the file's path."""
    import csv
    import io

    from .._files import atomic_write_text
    from ..roster import read_roster
    from .apikeys import api_keys

    cfg = _cfg(config)
    students = read_roster(roster)
    provision(cfg, students=[s.label for s in students])
    keys = json.loads(Layout(cfg.state_dir).tsig_file.read_text(encoding="utf-8"))
    api = api_keys(cfg.state_dir)["domains"]
    passwords = json.loads(Layout(cfg.state_dir).provider_passwords.read_text(encoding="utf-8"))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["prenom", "nom", "email", "domaine", "cle_api", "tsig_nom", "tsig_secret", "gmail", "mdp_gmail",
                     "outlook", "mdp_outlook"])
    for s in students:
        domain = s.domain(cfg.parent_domain)
        tsig = keys[domain + "."]
        gmail, outlook = f"{s.label}@gmail.test", f"{s.label}@outlook.test"
        writer.writerow([s.first_name, s.last_name, s.email, domain, api[domain], tsig["name"], tsig["secret"], gmail,
                         passwords[gmail], outlook, passwords[outlook]])
    path = cfg.state_dir / "class-credentials.csv"
    atomic_write_text(path, out.getvalue(), mode=0o600)
    for s in students:
        student_folder(s.label, cfg)
    return path


def student_folder(label: str, config: Config | None = None) -> Path:
    """Write the folder with which the student ``label`` joins this class lab from their own machine or container:
    ``<state>/classe/<label>/`` (0700) — where the lab listens (address, ports, the simulated hosts' ports), the
    lab's CA certificate, and that student's secrets only: their TSIG key, their API key, their provider mailboxes'
    passwords, their DKIM record. Nothing of another student, no private key of the lab. Returns the folder.

    The student joins with ``labmail lab rejoindre DOSSIER`` (or ``LABMAIL_STATE_DIR=DOSSIER``); the folder stays
    valid while the lab keeps its address and ports (they are kept across restarts)."""
    from .._files import atomic_write_bytes, atomic_write_text
    from ..state import read_run

    cfg = _cfg(config)
    current = _check_compatible(status(cfg))
    if current.remote or not current.running:
        raise LabError("Les dossiers des étudiants s'écrivent depuis le lab de la classe en marche (labmail lab start "
                       "--class LISTE.csv).", "Students' folders are written from the running class lab (labmail lab "
                       "start --class ROSTER.csv).")
    if label not in current.students:
        raise LabError(f"« {label} » n'est pas inscrit dans ce lab : ajoutez-le à la liste de classe.",
                       f"\"{label}\" is not enrolled in this lab: add them to the class roster.")
    lab_layout = Layout(cfg.state_dir)
    run = read_run(cfg.state_dir)
    domain = f"{label}.{current.parent_domain}"
    root = lab_layout.root / "classe" / label
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root.parent, 0o700)
    os.chmod(root, 0o700)
    folder = Layout(root)
    folder.keys_dir.mkdir(exist_ok=True)
    os.chmod(folder.keys_dir, 0o700)
    tsig = json.loads(lab_layout.tsig_file.read_text(encoding="utf-8"))
    providers = json.loads(lab_layout.provider_passwords.read_text(encoding="utf-8"))
    from ..state import read_api_keys

    api = (read_api_keys(cfg.state_dir).get("domains") or {}).get(domain)
    mine = {f"{label}@{p.domain}": providers[f"{label}@{p.domain}"] for p in PROVIDERS.values()
            if f"{label}@{p.domain}" in providers}
    atomic_write_text(folder.tsig_file, json.dumps({f"{domain}.": tsig[f"{domain}."]}) + "\n", mode=0o600)
    atomic_write_bytes(folder.zone_key(domain), lab_layout.zone_key(domain).read_bytes(), mode=0o600)
    atomic_write_text(folder.api_keys_file, json.dumps({"domains": {domain: api}}) + "\n", mode=0o600)
    atomic_write_text(folder.provider_passwords, json.dumps(mine) + "\n", mode=0o600)
    record = lab_layout.dkim_record(domain)
    if record.exists():
        folder.dkim_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(folder.dkim_record(domain), record.read_bytes(), mode=0o600)
    if current.ca_path is not None:
        atomic_write_bytes(root / "ca.pem", current.ca_path.read_bytes(), mode=0o644)
    described = {key: run[key] for key in ("protocol", "version", "host", "ports", "dns_servers", "endpoints",
                                           "parent_domain", "mail_host", "started") if key in run}
    described.update(remote=True, pid=None, ca="ca.pem", students=[label], zones=[])
    atomic_write_text(folder.run_file, json.dumps(described, indent=2) + "\n", mode=0o600)
    return root


def join(folder: str | Path) -> Config:
    """For a student: use the class lab through ``folder`` (written by the instructor's ``lab start --class``):
    the configuration's state folder becomes that folder and the first name the one it was written for. Checks
    that the class lab answers. Returns the new configuration."""
    from .. import config as _config

    root = Path(folder).expanduser().resolve()
    info = _remote_run(root)
    if info is None or not info.get("students"):
        raise LabError(f"{root} n'est pas un dossier de la classe (il y manque run.json d'un lab de classe) : utilisez "
                       "le dossier classe/<prénom>/ donné par l'enseignant·e.",
                       f"{root} is not a class folder (no class lab run.json in it): use the classe/<prenom>/ folder "
                       "your instructor gave you.")
    if root.stat().st_mode & 0o077:
        os.chmod(root, 0o700)  # the student's keys: theirs only
    start(_config.Config(prenom=str(info["students"][0]), state_dir=root))  # the class lab answers, or nothing is saved
    return _config.save(state_dir=str(root), prenom=str(info["students"][0]), world="local")


def provider_password(address: str, config: Config | None = None) -> str:
    """The password of the student's own mailbox at a provider (``prenom@gmail.test``), generated by the lab.

    For labmail's clients (``labmail.mail.imap(..., password=lab.provider_password(addr))``); never print it.
    """
    cfg = _cfg(config)
    try:
        return json.loads(Layout(cfg.state_dir).provider_passwords.read_text(encoding="utf-8"))[address.lower()]
    except (OSError, ValueError, KeyError):
        raise LabError(f"Pas de boîte {address} dans le lab : lancez labmail.lab.ensure() avec votre prénom configuré.",
                       f"No mailbox {address} in the lab: run labmail.lab.ensure() with your first name set.") from None


def student_key_file(config: Config | None = None) -> Path:
    """The student's TSIG key in BIND syntax (for ``nsupdate -k`` and ``dig -k``)."""
    cfg = _cfg(config)
    path = cfg.state_dir / "keys" / f"{cfg.domain}.key"
    if not path.exists():
        raise LabError(
            f"Pas de clé pour {cfg.domain} : démarrez le lab (labmail.lab.ensure()) après avoir configuré votre prénom.",
            f"No key for {cfg.domain}: start the lab (labmail.lab.ensure()) after setting your first name.",
        )
    return path
