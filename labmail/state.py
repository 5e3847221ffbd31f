"""The lab's state folder and its providers: the one module that knows where everything lives.

Every other module asks this one for a path (``Layout(cfg.state_dir).dkim_private(domain)``), for the running
lab's description (:func:`read_run`, checked against :data:`PROTOCOL`) and for the providers of the local world
(:data:`PROVIDERS`: name, domain, MX and IMAP hosts with their addresses, DKIM selector, authserv-id, report
sender). Nothing here does network I/O; nothing here imports the lab.

========================  =========================================================================
``world.json``            parent domain, mail host, students, chosen ports
``run.json``              pid, ports, endpoints and control socket of the running process (0600)
``lab.lock``              held (flock) by the running process: one lab per folder
``lab.log``               what the lab did (changes, refusals); never a secret
``zones/``                one zone file per zone
``keys/tsig.json``        TSIG keys of the students' zones (0600); ``keys/<domain>.key`` in BIND's format
``keys/dkim/``            ``<domain>.<selector>.pem`` (private, 0600) and ``.txt`` (the DNS record)
``keys/api-keys.json``    API keys (admin and per domain)
``keys/provider-passwords.json``  the students' passwords at the providers (0600)
``course-passwords.json`` passwords of the course's mailboxes (0600)
``class-credentials.csv`` a class's credentials, for the teacher (0600)
``mail/``                 the mail store (accounts, Maildirs), ``rejected/``, ``dmarc-reports.json``
``queue/``                outbound queue; ``relay/`` the lab's internal relay sockets (0700)
``tls/``                  the lab's CA and certificates; ``thunderbird/`` a Thunderbird profile
========================  =========================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import LabError

__all__ = ["PROTOCOL", "Layout", "Provider", "PROVIDERS", "provider_for_domain", "read_run", "read_api_keys"]

#: Version of what the lab process reports (run.json, control replies): a lab started by another version is restarted.
PROTOCOL = 4


@dataclass(frozen=True)
class Layout:
    """The paths of one state folder.

    >>> Layout(Path("/tmp/etat")).dkim_private("jean.labmail.cloud")
    PosixPath('/tmp/etat/keys/dkim/jean.labmail.cloud.dkim.pem')
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # files of the lab process
    @property
    def world_file(self) -> Path:
        return self.root / "world.json"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def lock_file(self) -> Path:
        return self.root / "lab.lock"

    @property
    def log_file(self) -> Path:
        return self.root / "lab.log"

    # folders
    @property
    def zones_dir(self) -> Path:
        return self.root / "zones"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def dkim_dir(self) -> Path:
        return self.keys_dir / "dkim"

    @property
    def mail_dir(self) -> Path:
        return self.root / "mail"

    @property
    def rejected_dir(self) -> Path:
        return self.mail_dir / "rejected"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    def in_flight(self) -> int:
        """How many accepted messages the lab has not delivered (or returned) yet: each waits in the queue as an
        envelope ``<id>.json`` beside its body, from before the 250 reply until the last recipient's server took it."""
        try:
            return sum(1 for _ in self.queue_dir.glob("*.json"))
        except OSError:
            return 0

    @property
    def relay_dir(self) -> Path:
        return self.root / "relay"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def thunderbird_dir(self) -> Path:
        return self.root / "thunderbird"

    # secrets and records
    @property
    def tsig_file(self) -> Path:
        return self.keys_dir / "tsig.json"

    def zone_key(self, domain: str) -> Path:
        """The student's TSIG key in BIND's format (for ``nsupdate -k``)."""
        return self.keys_dir / f"{domain}.key"

    @property
    def domain_admins_file(self) -> Path:
        """The school server's domain administrators (username → scrypt hash, domains), 0600."""
        return self.keys_dir / "domain-admins.json"

    @property
    def api_keys_file(self) -> Path:
        return self.keys_dir / "api-keys.json"

    @property
    def provider_passwords(self) -> Path:
        return self.keys_dir / "provider-passwords.json"

    @property
    def course_passwords(self) -> Path:
        return self.root / "course-passwords.json"

    @property
    def class_credentials(self) -> Path:
        return self.root / "class-credentials.csv"

    @property
    def dmarc_reports_marker(self) -> Path:
        return self.mail_dir / "dmarc-reports.json"

    def dkim_private(self, domain: str, selector: str = "dkim") -> Path:
        return self.dkim_dir / f"{domain}.{selector}.pem"

    def dkim_record(self, domain: str, selector: str = "dkim") -> Path:
        return self.dkim_dir / f"{domain}.{selector}.txt"


def read_run(state_dir: Path) -> dict:
    """The running lab's description (``run.json``); :class:`LabError` if none, or if another version wrote it."""
    try:
        run = json.loads(Layout(state_dir).run_file.read_text(encoding="utf-8"))
        if not isinstance(run, dict):
            raise ValueError
    except (OSError, ValueError):
        raise LabError(
            "Le lab n'est pas démarré. Dans un notebook : labmail.lab.ensure() ; dans un terminal : labmail lab start.",
            "The lab is not running. In a notebook: labmail.lab.ensure(); in a terminal: labmail lab start.",
        ) from None
    if run.get("protocol") != PROTOCOL:
        raise LabError(
            "Le lab en marche vient d'une autre version de labmail : relancez-le (labmail lab stop puis "
            "labmail lab start, ou labmail.lab.ensure()).",
            "The running lab comes from another version of labmail: restart it (labmail lab stop then "
            "labmail lab start, or labmail.lab.ensure()).",
        )
    return run


def read_api_keys(state_dir: Path) -> dict:
    """The lab's API keys (``{"admin": key, "domains": {domain: key}}``); empty if the lab never made them."""
    try:
        keys = json.loads(Layout(state_dir).api_keys_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"admin": None, "domains": {}}
    return keys if isinstance(keys, dict) else {"admin": None, "domains": {}}


@dataclass(frozen=True)
class Provider:
    """A mail provider of the local world, modelled on the real one."""

    name: str  # "gmail", "outlook": the receiver's name in the lab (replay, records)
    domain: str
    mx_host: str
    mx_v4: str
    mx_v6: str
    ns_v4: str
    imap_host: str
    imap_v4: str
    selector: str  # its DKIM selector, as the real provider names it
    authserv_id: str | None  # what it writes in Authentication-Results (None: Microsoft writes none)
    report_sender: str  # the From of its DMARC aggregate reports


PROVIDERS: dict[str, Provider] = {
    "gmail": Provider("gmail", "gmail.test", "gmail-smtp-in.l.gmail.test", "198.51.100.25", "2001:db8:5100::25", "198.51.100.2",
                      "imap.gmail.test", "198.51.100.26", "20230601", "mx.gmail.test", "noreply-dmarc-support@gmail.test"),
    "outlook": Provider("outlook", "outlook.test", "outlook-test.mail.protection.outlook.test", "198.51.100.145",
                        "2001:db8:5100::145", "198.51.100.130", "imap-mail.outlook.test", "198.51.100.146", "selector1", None,
                        "dmarcreport@outlook.test"),
}


def provider_for_domain(domain: str) -> Provider | None:
    """The provider that hosts ``domain`` (``gmail.test`` → Gmail), if any."""
    return next((p for p in PROVIDERS.values() if p.domain == domain.lower().rstrip(".")), None)
