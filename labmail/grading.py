"""Graded checks (nbgrader): what the student's work produced in the world, and their quiz answers.

Every check follows nbgrader's rules (``shared/reference/NBGRADER-AND-NOTEBOOKS.md`` §6, §8): it returns
``None`` when all is right and raises :class:`AssertionError` with a French message — what is wrong and how to fix
it — otherwise. It never writes to stderr (a cell with anything on stderr scores zero): warnings are silenced and
labmail's errors become the assertion's message.

>>> grading.mx()                                    # doctest: +SKIP  (the student's domain)
>>> grading.dmarc(policy="quarantine")              # doctest: +SKIP
AssertionError: _dmarc.jean.labmail.cloud publie p=none, la politique demandée est p=quarantine : …

Quiz answers ("Interro !") are recorded by the quiz widget in a sidecar file, ``reponses.json``, in the notebook's
folder, when the student clicks "Valider" (never when the widget is built). :func:`answered` checks an answer
exists; :func:`quiz_answer` (in the hidden tests) compares the *first* answer with the expected one — the explained
feedback comes right after the first answer, so later answers only serve understanding.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

from .errors import LabmailError

__all__ = ["ANSWERS_FILE", "record_answer", "answers", "answered", "quiz_answer", "mx", "spf", "dkim", "dmarc",
           "mailboxes", "final_message", "autodiscover", "audit"]

#: The sidecar file of quiz answers, in the notebook's folder (the kernel's working directory).
ANSWERS_FILE = "reponses.json"


def _check(function: Callable) -> Callable:
    """Make ``function`` an nbgrader check: None or AssertionError (French), nothing on stderr, no warnings."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> None:
        quiet = logging.getLogger("labmail")
        level = quiet.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.CRITICAL)
            try:
                function(*args, **kwargs)
            except LabmailError as exc:
                raise AssertionError(str(exc)) from None
            finally:
                quiet.setLevel(level)
        return None

    return wrapper


# -- quiz answers ---------------------------------------------------------------------------------------------------
def _answers_path(folder: str | Path | None) -> Path:
    return Path(folder or Path.cwd()) / ANSWERS_FILE


def answers(folder: str | Path | None = None) -> dict:
    """The recorded answers: ``{question id: {"first": [...], "last": [...], "attempts": n}}`` (empty if none)."""
    try:
        data = json.loads(_answers_path(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_answer(question_id: str, chosen: Iterable[int], folder: str | Path | None = None) -> None:
    """Record an answer (the quiz widget calls it on "Valider"): the first answer is kept, the last and the count
    are updated. The file is replaced atomically, so a crash never leaves half an answer file."""
    from ._files import atomic_write_text

    data = answers(folder)
    choice = sorted(int(i) for i in chosen)
    entry = data.get(question_id) or {"first": choice, "attempts": 0}
    entry.update(last=choice, attempts=int(entry.get("attempts", 0)) + 1, time=time.strftime("%Y-%m-%dT%H:%M:%S"))
    data[question_id] = entry
    atomic_write_text(_answers_path(folder), json.dumps(data, ensure_ascii=False, indent=1) + "\n", mode=0o644)


def _letters(choice: Iterable[int]) -> str:
    return ", ".join(f"n° {i + 1}" for i in sorted(choice)) or "aucun choix"


@_check
def answered(question_id: str, folder: str | Path | None = None) -> None:
    """The student has answered the quiz ``question_id`` (a click on "Valider", or ``.answer(...)`` in code)."""
    if question_id not in answers(folder):
        raise AssertionError(f"Pas encore de réponse à l'Interro « {question_id} » : cochez vos choix dans le quiz "
                             "puis cliquez sur « Valider » (votre première réponse est celle qui compte).")


@_check
def quiz_answer(question_id: str, expected: Iterable[int], folder: str | Path | None = None) -> None:
    """The *first* recorded answer to ``question_id`` is exactly ``expected`` (indices, 0 = first choice)."""
    entry = answers(folder).get(question_id)
    if entry is None:
        raise AssertionError(f"Pas de réponse à l'Interro « {question_id} » dans {ANSWERS_FILE}.")
    first, wanted = set(entry.get("first", [])), set(expected)
    if first != wanted:
        raise AssertionError(f"Interro « {question_id} » : votre première réponse ({_letters(first)}) n'est pas la "
                             f"bonne ({_letters(wanted)}). Relisez l'explication affichée sous le quiz.")


# -- the world: the student's records and mail ------------------------------------------------------------------------
def _context(domain: str | None, world):
    from .world import current

    world = world or current()
    return world, (domain or world.config.domain).rstrip(".").lower(), world.config.mail_host.rstrip(".").lower()


def _published(name: str, rtype: str, world) -> list[str]:
    from . import dns

    answer = dns.lookup(name, rtype, authoritative=True, world=world)
    if not answer.ok:
        return []
    return [r.value for r in answer.records if r.type == rtype]


@_check
def mx(domain: str | None = None, *, world=None) -> None:
    """The domain publishes an MX to the school's mail server, with a valid priority (0–65535), and only such MX."""
    world, domain, host = _context(domain, world)
    values = _published(domain, "MX", world)
    if not values:
        raise AssertionError(f"{domain} ne publie aucun MX : ajoutez « @ MX 10 {host}. » dans votre zone "
                             "(sans MX, aucun courrier ne peut vous être livré).")
    for value in values:
        priority, _, target = value.partition(" ")
        target = target.rstrip(".").lower()
        if not priority.isdigit() or not 0 <= int(priority) <= 65535:
            raise AssertionError(f"MX « {value} » : la priorité doit être un nombre de 0 à 65535 (par exemple 10).")
        if target != host:
            raise AssertionError(f"MX « {value} » : il doit désigner le serveur de l'école, {host}. (un nom, avec le "
                                 "point final ; ni une adresse IP ni un autre serveur). Corrigez-le dans votre zone.")


def _server_ipv4(host: str, world) -> str:
    from . import dns

    answer = dns.lookup(host, "A", world=world)
    addresses = [r.value for r in answer.records if r.type == "A"]
    if not addresses:
        raise AssertionError(f"{host} n'a pas d'adresse IPv4 : impossible de vérifier le SPF (prévenez l'enseignant·e).")
    return addresses[0]


@_check
def spf(domain: str | None = None, *, world=None) -> None:
    """One SPF record at the domain's apex, which passes for the school server's address and ends with -all or ~all."""
    from . import spf as _spf
    from .dns import Resolver

    world, domain, host = _context(domain, world)
    records = [v for v in _published(domain, "TXT", world) if _spf.is_spf_record(v)]
    if not records:
        raise AssertionError(f"{domain} ne publie pas d'enregistrement SPF : ajoutez « @ TXT v=spf1 ip4:"
                             f"{_server_ipv4(host, world)} -all ».")
    if len(records) > 1:
        raise AssertionError(f"{domain} publie {len(records)} enregistrements SPF : tout le courrier donnerait permerror. "
                             "Gardez-en un seul (fusionnez-les).")
    record = records[0]
    last = record.split()[-1].lower()
    if last not in ("-all", "~all"):
        raise AssertionError(f"SPF « {record} » : il doit finir par -all (ou ~all), sinon il n'interdit rien aux autres "
                             "serveurs.")
    ip = _server_ipv4(host, world)
    verdict = _spf.evaluate(ip, f"tintin@{domain}", host, resolver=Resolver(world=world))
    if verdict.result.value != "pass":
        raise AssertionError(f"SPF « {record} » donne {verdict.result.value} pour le serveur de l'école ({ip}) : "
                             f"{verdict.reason}")


@_check
def dkim(domain: str | None = None, *, selector: str = "dkim", world=None) -> None:
    """The DKIM record at ``<selector>._domainkey`` is the domain's key (same p=) and verifies a fresh signature."""
    from . import dkim as _dkim
    from .checks import _dkim_from_api, _key_of
    from .dns import Resolver

    world, domain, _host = _context(domain, world)
    name = f"{selector}._domainkey.{domain}"
    values = _published(name, "TXT", world)
    if not values:
        raise AssertionError(f"Rien n'est publié à {name} : publiez-y la clé DKIM donnée par le serveur "
                             "(api.get_dkim(domaine)[\"dkim_txt\"]).")
    expected = _dkim_from_api(world, domain)
    published = _key_of(values[0]) or ""
    if expected is not None and published != _key_of(expected):
        hint = ("elle est tronquée (chaînes de 255 caractères : découpez, ne coupez pas)"
                if published and (_key_of(expected) or "").startswith(published) else "ce n'est pas celle du serveur")
        raise AssertionError(f"La clé publiée à {name} n'est pas la clé du domaine : {hint}. Republiez "
                             "exactement la valeur donnée par l'API.")
    key = _private_key(domain, world)
    if key is None:
        return  # live world: the private key stays on the server; the p= comparison above is the check
    message = (f"From: tintin@{domain}\r\nTo: milou@{domain}\r\nSubject: verification DKIM\r\n"
               f"Message-ID: <grading.{int(time.time())}@{domain}>\r\n\r\nBonjour\r\n").encode()
    signed = _dkim.sign(message, domain, selector, key)
    results = _dkim.verify(signed, resolver=Resolver(world=world))
    if not results or results[0].result != "pass":
        why = results[0].reason if results else "aucune signature"
        raise AssertionError(f"Une signature neuve du domaine ne se vérifie pas avec la clé publiée : {why}")


def _private_key(domain: str, world) -> bytes | None:
    if world.kind != "local":
        return None
    path = world.config.state_dir / "keys" / "dkim" / f"{domain}.dkim.pem"
    return path.read_bytes() if path.exists() else None


@_check
def dmarc(domain: str | None = None, *, policy: str = "quarantine", world=None) -> None:
    """A valid DMARC record at ``_dmarc.<domain>`` (not at the apex) with the policy asked for."""
    from . import dmarc as _dmarc

    world, domain, _host = _context(domain, world)
    name = f"_dmarc.{domain}"
    values = [v for v in _published(name, "TXT", world) if v.startswith("v=DMARC1")]
    if not values:
        at_apex = any(v.startswith("v=DMARC1") for v in _published(domain, "TXT", world))
        raise AssertionError(f"Pas d'enregistrement DMARC à {name}" + (
            " : il est publié à la racine du domaine, où personne ne le cherche. Déplacez-le à _dmarc." if at_apex else
            f" : ajoutez « _dmarc TXT v=DMARC1; p={policy} »."))
    if len(values) > 1:
        raise AssertionError(f"{name} publie {len(values)} enregistrements DMARC : les destinataires l'ignorent alors. "
                             "Gardez-en un seul.")
    record = _dmarc.parse_record(values[0])
    if not record.valid:
        problems = "; ".join(str(n.message) for n in record.notes if n.severity == "error")
        raise AssertionError(f"DMARC « {values[0]} » n'est pas valide : {problems}")
    if record.p != policy:
        raise AssertionError(f"{name} publie p={record.p}, la politique demandée est p={policy} : corrigez la valeur "
                             f"(« v=DMARC1; p={policy} »).")


@_check
def mailboxes(*local_parts: str, domain: str | None = None, world=None) -> None:
    """The mailboxes exist on the school server (default: tintin and milou)."""
    from . import lab
    from .mail import MailcowAPI

    world, domain, _host = _context(domain, world)
    wanted = [f"{p}@{domain}" for p in (local_parts or ("tintin", "milou"))]
    api = MailcowAPI(key=lab.api_key(world.config), world=world)
    existing = {str(m.get("username", "")).lower() for m in (api.get_mailbox("all", domain) or []) if isinstance(m, dict)}
    missing = [a for a in wanted if a not in existing]
    if missing:
        raise AssertionError(f"Boîte(s) absente(s) du serveur : {', '.join(missing)}. Créez-les (api.add_mailbox ou le "
                             "formulaire « Ajouter une boîte »).")


@_check
def final_message(subject: str, *, since: float | None = None, providers: Iterable[str] = ("gmail.test", "outlook.test"),
                  timeout: float | None = None, world=None) -> None:
    """The message ``subject`` reached the student's mailbox at each provider, in INBOX, with spf, dkim and dmarc pass.

    ``since`` (epoch seconds, e.g. ``etat.started``): only a message received from then on counts. The wait is 15 s,
    5 s under nbgrader (``NBGRADER_EXECUTION``), where the message was sent a moment before by the same notebook.
    """
    import os

    if timeout is None:
        timeout = 5.0 if os.environ.get("NBGRADER_EXECUTION") else 15.0
    from . import course, headers

    world, domain, _host = _context(None, world)
    label = domain.split(".")[0]
    for provider in providers:
        address = f"{label}@{provider}"
        try:
            folder, source = course.find(address, subject, timeout=timeout, since=since, config=world.config)
        except LabmailError as exc:
            raise AssertionError(f"{provider} : {exc}") from None
        results = headers.analyze(source, recompute=False)
        verdicts = {"spf": results.spf, "dkim": next((r for _d, r in results.dkim), "none"), "dmarc": results.dmarc}
        failing = {k: v for k, v in verdicts.items() if v != "pass"}
        if failing:
            shown = " ".join(f"{k}={v}" for k, v in verdicts.items())
            raise AssertionError(f"{provider} a reçu « {subject} » avec {shown} : il faut spf=pass dkim=pass dmarc=pass. "
                                 "Vérifiez le SPF, la clé DKIM et DMARC (checks.domain).")
        if folder != "INBOX":
            raise AssertionError(f"{provider} a classé « {subject} » dans {folder}, pas en boîte de réception.")


@_check
def autodiscover(domain: str | None = None, *, world=None) -> None:
    """autodiscover and autoconfig are CNAMEs to the mail server; _autodiscover._tcp is an SRV to it on port 443."""
    world, domain, host = _context(domain, world)
    for label in ("autodiscover", "autoconfig"):
        values = [v.rstrip(".").lower() for v in _published(f"{label}.{domain}", "CNAME", world)]
        if values != [host]:
            found = f"trouvé : {', '.join(values)}" if values else "absent"
            raise AssertionError(f"{label}.{domain} doit être un CNAME vers {host}. ({found}) : ajoutez « {label} CNAME "
                                 f"{host}. ».")
    srv = _published(f"_autodiscover._tcp.{domain}", "SRV", world)
    good = [v for v in srv if v.split()[2:] == ["443", f"{host}."] or v.split()[2:] == ["443", host]]
    if not good:
        found = f"trouvé : {'; '.join(srv)}" if srv else "absent"
        raise AssertionError(f"_autodiscover._tcp.{domain} doit être un SRV « 0 0 443 {host}. » ({found}) : priorité, "
                             "poids, port 443, puis le serveur.")


@_check
def audit(*roles: str, domain: str | None = None, world=None) -> None:
    """The domain audit (the "DNS" button) says OK for each role (default: mx, spf, dkim, dmarc)."""
    from . import checks

    world, domain, _host = _context(domain, world)
    report = checks.domain(domain, world=world)
    bad = [(r, report.row(r)) for r in (roles or ("mx", "spf", "dkim", "dmarc"))]
    bad = [(r, row) for r, row in bad if row is None or row.status != "OK"]
    if bad:
        raise AssertionError("Audit du domaine : " + " ; ".join(
            f"{role} {row.status if row else 'absent'} — {row.why if row else ''} → {row.fix if row else ''}"
            for role, row in bad))
