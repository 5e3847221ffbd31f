"""Graded checks (nbgrader): what the student's work produced in the world, and their quiz answers.

Every check follows nbgrader's rules (https://nbgrader.readthedocs.io, "autograder tests"): it returns
``None`` when all is right and raises :class:`labmail.errors.VerificationEchouee` (an :class:`AssertionError`)
with a short French message — what is wrong and how to fix it — otherwise; in a notebook the message shows
alone, without a traceback. It never writes to stderr (a cell with anything on stderr scores zero): warnings are
silenced and labmail's errors become the check's message.

>>> grading.mx()                                    # doctest: +SKIP  (the student's domain)
>>> grading.dmarc(policy="quarantine")              # doctest: +SKIP
✘ _dmarc.jean.labmail.cloud publie p=none, la politique demandée est p=quarantine : …

The exercises of the student version start as ``# VOTRE CODE ICI`` and :func:`a_faire`, which stops "Run All"
there with a French message; :func:`expect` is the course's "Vérification" of an observation.

Quiz answers ("Interro !") are recorded by the quiz (:mod:`labmail.quiz`): in the notebook's outputs and in
``reponses.json`` beside it. :func:`answered` checks an answer exists; :func:`quiz_answer` (in the hidden tests)
compares the *first* answer with the expected one — the explained feedback comes right after the first answer,
so later answers only serve understanding.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable

from .errors import ExerciceAFaire, LabmailError, VerificationEchouee
from .quiz import ANSWERS_FILE, choices_text
from .state import Layout

__all__ = ["ANSWERS_FILE", "a_faire", "expect", "answered", "quiz_answer", "ns", "dkim_location", "verdict", "ports",
           "mx", "spf", "dkim", "dmarc", "mailboxes", "final_message", "autodiscover", "audit", "untrusted_delivery",
           "replay_agrees"]


def _check(function: Callable) -> Callable:
    """Make ``function`` an nbgrader check: None or VerificationEchouee (French, shown without a traceback),
    nothing on stderr, no warnings."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs) -> None:
        quiet = logging.getLogger("labmail")
        level = quiet.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.CRITICAL)
            try:
                function(*args, **kwargs)
            except VerificationEchouee:
                raise
            except LabmailError as exc:
                raise VerificationEchouee(exc.message("fr"), exc.message("en")) from None
            except AssertionError as exc:
                raise VerificationEchouee(str(exc)) from None
            finally:
                quiet.setLevel(level)
        return None

    return wrapper


def a_faire() -> None:
    """The stub of every exercise in the student version: stops the notebook here and says what to do."""
    raise ExerciceAFaire()


def expect(condition: object, fr: str, en: str | None = None) -> None:
    """A "Vérification" of the course: nothing if ``condition`` holds, else ``fr`` (or ``en``) as the only
    message — say what was expected and what to do (e.g. which exercise to do first).

    >>> expect(dossier == "INBOX", "Le message est en indésirables : faites d'abord l'exercice « publiez le SPF ».")
    """
    if not condition:
        raise VerificationEchouee(fr, en)


def _display(data: dict) -> None:
    """Show a MIME bundle in the notebook (nothing outside IPython)."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with the course's kernel
        return
    if get_ipython() is not None:
        display(data, raw=True)


# -- quiz answers ---------------------------------------------------------------------------------------------------
def _title(question_id: str) -> str:
    """The question as the student reads it (its id if it is not one of the course's)."""
    from .interro import QUESTIONS

    question = QUESTIONS.get(question_id)
    return f"« {question.text} »" if question else f"« {question_id} »"


def _recorded(question_id: str, folder: str | Path | None):
    """The answer to grade, or a VerificationEchouee saying why there is none."""
    from . import quiz

    if quiz.from_submission(folder) is False:
        raise VerificationEchouee(
            "La correction n'a pas lu les réponses aux Interro dans la copie rendue : la configuration de nbgrader "
            "doit inclure le greffon de labmail (nbgrader_config.py du cours, voir le README « Noter avec nbgrader »).",
            "Grading did not read the quiz answers in the submitted notebook: nbgrader's configuration must include "
            "labmail's plugin (the course's nbgrader_config.py, see the README, \"Noter avec nbgrader\").")
    flag = quiz.flags(folder).get(question_id)
    if flag:
        raise VerificationEchouee(f"Interro {_title(question_id)} : réponse ignorée — {flag}",
                                  f"Quiz {_title(question_id)}: answer set aside — {flag}")
    entry = quiz.load(folder).get(question_id)
    if entry is None:
        raise VerificationEchouee(
            f"Pas encore de réponse à l'Interro {_title(question_id)} : cochez vos choix dans le quiz puis cliquez sur "
            "« Valider » (ou répondez en code : .answer({…})) ; votre première réponse est celle qui compte. "
            "Enregistrez ensuite le notebook.",
            f"No answer yet to the quiz {_title(question_id)}: tick your choices then click \"Valider\" (or answer in "
            "code: .answer({…})); your first answer is the one that counts. Then save the notebook.")
    return entry


@_check
def answered(question_id: str, folder: str | Path | None = None) -> None:
    """The student has answered the quiz ``question_id`` (a click on "Valider", or ``.answer(...)`` in code).

    The recorded answer is shown again in this cell's output (saved with the notebook, like the quiz's own).
    """

    entry = _recorded(question_id, folder)
    from .interro import bundle

    _display(bundle(question_id, entry))
    if entry.via == "correction":  # for the teacher, in Formgrader (stdout: the score is not touched)
        print("ℹ Réponse donnée en code à la correction : la copie rendue ne montrait aucune réponse enregistrée "
              "(cellules jamais exécutées, ou sorties effacées) ; si une autre réponse avait été donnée avant, elle "
              "n'est plus connue.")


@_check
def quiz_answer(question_id: str, expected: Iterable[int], folder: str | Path | None = None) -> None:
    """The *first* recorded answer to ``question_id`` is exactly ``expected`` (numbers as shown, 0 = first choice)."""
    entry = _recorded(question_id, folder)
    first, wanted = set(entry.first), set(expected)
    if first != wanted:
        raise VerificationEchouee(
            f"Interro {_title(question_id)} : votre première réponse ({choices_text(first)}) n'est pas la bonne "
            f"({choices_text(wanted)}). Relisez l'explication affichée sous le quiz.",
            f"Quiz {_title(question_id)}: your first answer ({choices_text(first)}) is not the right one "
            f"({choices_text(wanted)}). Read the explanation under the quiz again.")


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


def _forms_note(*needles: str) -> None:
    """After a check passed: if a form did this kind of change in this kernel, say that grading re-executes the
    exercise's code cell, not the form (printed, never on stderr; nothing under nbgrader)."""
    import os

    from .actions import form_actions

    if os.environ.get("NBGRADER_EXECUTION"):
        return
    done = [code for code in form_actions() if any(n in code for n in needles)]
    if done:
        print("ℹ " + "\n  ".join(done))
        print("ℹ Fait aussi avec un formulaire : à la correction, le notebook est ré-exécuté et seule la cellule de "
              "l'exercice refait ce travail. Vérifiez qu'elle contient ce code.")


@_check
def ns(value: object, domain: str | None = None, *, world=None) -> None:
    """``value`` is the name of the server that is authoritative for the domain (a value of its NS record)."""
    world, domain, _host = _context(domain, world)
    if not isinstance(value, str) or not value.strip():
        raise AssertionError(f"Pas de nom de serveur dans votre réponse ({value!r}) : faites l'exercice juste au-dessus "
                             f"(une requête NS sur {domain} avec dns.lookup).")
    servers = {v.rstrip(".").lower() for v in _published(domain, "NS", world)}
    if value.strip().rstrip(".").lower() not in servers:
        raise AssertionError(f"« {value} » n'est pas le serveur qui fait autorité pour {domain} (NS : "
                             f"{', '.join(sorted(servers)) or 'aucun'}). Demandez l'enregistrement NS de votre domaine.")


@_check
def dkim_location(name: object, value: object, domain: str | None = None, *, selector: str = "dkim", world=None) -> None:
    """``name`` is where the domain's DKIM key is published (``<selector>._domainkey.<domain>``) and ``value`` is the
    record the server expects there (``v=DKIM1`` with the server's public key)."""
    from .checks import _dkim_from_api, _key_of

    world, domain, _host = _context(domain, world)
    wanted = f"{selector}._domainkey.{domain}"
    if not isinstance(name, str) or not name.strip():
        raise AssertionError("nom_dkim est vide : faites l'exercice juste au-dessus (la ligne « dkim » de l'audit : "
                             "audit.row(\"dkim\")).")
    if name.strip().rstrip(".").lower() != wanted:
        raise AssertionError(f"« {name} » n'est pas le bon nom : la clé se publie à <sélecteur>._domainkey.<domaine>, "
                             f"soit {wanted}.")
    if not isinstance(value, str) or not value.strip().startswith("v=DKIM1"):
        raise AssertionError("valeur_dkim doit être l'enregistrement TXT attendu, qui commence par « v=DKIM1 » "
                             "(la colonne « attendu » de l'audit).")
    expected = _dkim_from_api(world, domain)
    if expected is not None and _key_of(value) != _key_of(expected):
        raise AssertionError("valeur_dkim ne contient pas la clé publique du serveur (p=…) : reprenez la valeur "
                             "attendue de l'audit, entière.")


@_check
def verdict(answer: object, source: bytes | str) -> None:
    """``answer`` is ``{"spf": …, "dkim": …, "dmarc": …}`` as the topmost Authentication-Results of ``source`` says."""
    from . import headers

    if not isinstance(answer, dict) or not answer:
        raise AssertionError("resultats doit être un dictionnaire {\"spf\": …, \"dkim\": …, \"dmarc\": …} : faites "
                             "l'exercice juste au-dessus.")
    found = headers.analyze(source, recompute=False).authentication_results
    if not found:
        raise AssertionError("Ce message n'a pas d'en-tête Authentication-Results : ce n'est pas celui reçu chez Gmail.")
    wanted = {m: (found[0].get(m).result if found[0].get(m) else "none") for m in ("spf", "dkim", "dmarc")}
    missing = [m for m in wanted if m not in answer]
    if missing:
        raise AssertionError(f"Il manque {', '.join(missing)} dans resultats (il faut spf, dkim et dmarc).")
    wrong = {m: answer[m] for m in wanted if str(answer[m]).strip().lower() != wanted[m]}
    if wrong:
        raise AssertionError("Ce n'est pas ce que dit l'en-tête : " + ", ".join(
            f"{m}={v!r} au lieu de {wanted[m]}" for m, v in wrong.items()) + ". Relisez Authentication-Results.")


_SECURITY = {"ssl/tls": "SSL/TLS", "ssl": "SSL/TLS", "tls": "SSL/TLS", "tls implicite": "SSL/TLS", "implicit tls": "SSL/TLS",
             "starttls": "STARTTLS", "stls": "STARTTLS"}


@_check
def ports(table: object, *, host: str | None = None, world=None) -> None:
    """Step 6's task: ``table`` lists (protocol, port, security) for sending and for each way of reading mail, as
    the Thunderbird settings of the course give them — and the school's server really speaks that way there."""
    from . import mail

    if not isinstance(table, (list, tuple)) or not table:
        raise AssertionError("configuration est vide : remplissez-la avec un triplet (protocole, port, sécurité) pour "
                             "l'envoi et pour chaque protocole de consultation (exercice juste au-dessus).")
    seen: dict[str, tuple[int, str]] = {}
    for item in table:
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise AssertionError(f"{item!r} : chaque ligne est un triplet (protocole, port, sécurité), par exemple "
                                 "(\"IMAP\", 993, \"SSL/TLS\").")
        protocol, port, security = item
        protocol = {"POP": "POP3"}.get(str(protocol).strip().upper(), str(protocol).strip().upper())
        if protocol not in ("SMTP", "IMAP", "POP3"):
            raise AssertionError(f"« {item[0]} » : le protocole est SMTP (envoi), IMAP ou POP3 (consultation).")
        if not isinstance(port, int) or isinstance(port, bool):
            raise AssertionError(f"{item!r} : le port est un nombre (par exemple 993), pas {port!r}.")
        label = _SECURITY.get(str(security).strip().lower())
        if label is None:
            raise AssertionError(f"{item!r} : la sécurité est « SSL/TLS » (TLS dès la connexion) ou « STARTTLS » "
                                 "(connexion en clair, puis passage en TLS).")
        try:
            probe = mail.probe(port, host=host, world=world)
        except LabmailError as exc:
            raise AssertionError(f"{item!r} : le serveur ne répond pas sur le port {port} ({exc.message('fr')}).") from None
        if probe.protocol != protocol:
            spoken = probe.protocol or "autre chose (pas un service de messagerie)"
            raise AssertionError(f"{item!r} : sur le port {port}, le serveur parle {spoken}, pas {protocol}.")
        if probe.security != label:
            raise AssertionError(f"{item!r} : sur le port {port}, la sécurité est {probe.security}, pas {label} "
                                 "(regardez mail.probe).")
        if protocol == "SMTP" and port == 25:
            raise AssertionError("Le port 25 sert entre serveurs (sans authentification) : un client envoie sur le port "
                                 "de soumission (587 ou 465).")
        seen[protocol] = (port, label)
    missing = [p for p in ("SMTP", "IMAP", "POP3") if p not in seen]
    if missing:
        raise AssertionError(f"Il manque {', '.join(missing)} : une ligne pour l'envoi (SMTP), une pour IMAP (Tintin) et "
                             "une pour POP3 (Milou).")


@_check
def mx(domain: str | None = None, *, world=None) -> None:
    """The domain publishes an MX to the school's mail server, with a valid priority (0–65535), and only such MX."""
    world, domain, host = _context(domain, world)
    values = _published(domain, "MX", world)
    if not values:
        raise AssertionError(f"{domain} ne publie aucun MX (sans MX, aucun courrier ne peut vous être livré) : dans la "
                             f"cellule de l'exercice, zone.add(\"@\", \"MX\", \"10 {host}.\").")
    for value in values:
        priority, _, target = value.partition(" ")
        target = target.rstrip(".").lower()
        if not priority.isdigit() or not 0 <= int(priority) <= 65535:
            raise AssertionError(f"MX « {value} » : la priorité doit être un nombre de 0 à 65535 (par exemple 10).")
        if target != host:
            raise AssertionError(f"MX « {value} » : il doit désigner le serveur de l'école, {host}. (un nom, avec le "
                                 "point final ; ni une adresse IP ni un autre serveur). Corrigez-le : "
                                 f"zone.replace(\"@\", \"MX\", \"10 {host}.\").")
    _forms_note('"MX"')


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
    from .resolver import Resolver

    world, domain, host = _context(domain, world)
    records = [v for v in _published(domain, "TXT", world) if _spf.is_spf_record(v)]
    if not records:
        raise AssertionError(f"{domain} ne publie pas d'enregistrement SPF : dans la cellule de l'exercice, "
                             f"zone.add(\"@\", \"TXT\", \"v=spf1 ip4:{_server_ipv4(host, world)} -all\").")
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
    _forms_note("v=spf1")


@_check
def dkim(domain: str | None = None, *, selector: str = "dkim", world=None) -> None:
    """The DKIM record at ``<selector>._domainkey`` is the domain's key (same p=) and verifies a fresh signature."""
    from . import dkim as _dkim
    from .checks import _dkim_from_api, _key_of
    from .resolver import Resolver

    world, domain, _host = _context(domain, world)
    name = f"{selector}._domainkey.{domain}"
    values = _published(name, "TXT", world)
    if not values:
        raise AssertionError(f"Rien n'est publié à {name} : publiez-y la clé DKIM donnée par le serveur, dans la "
                             f"cellule de l'exercice : zone.add(\"{selector}._domainkey\", \"TXT\", cle) avec "
                             "cle = api.get_dkim(etat.domain)[\"dkim_txt\"].")
    expected = _dkim_from_api(world, domain)
    published = _key_of(values[0]) or ""
    if expected is not None and published != _key_of(expected):
        hint = ("elle est tronquée (chaînes de 255 caractères : découpez, ne coupez pas)"
                if published and (_key_of(expected) or "").startswith(published) else "ce n'est pas celle du serveur")
        raise AssertionError(f"La clé publiée à {name} n'est pas la clé du domaine : {hint}. Republiez "
                             "exactement la valeur donnée par l'API.")
    _forms_note("_domainkey")
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
    path = Layout(world.config.state_dir).dkim_private(domain)
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
            f" : dans la cellule de l'exercice, zone.add(\"_dmarc\", \"TXT\", \"v=DMARC1; p={policy}\")."))
    if len(values) > 1:
        raise AssertionError(f"{name} publie {len(values)} enregistrements DMARC : les destinataires l'ignorent alors. "
                             "Gardez-en un seul.")
    record = _dmarc.parse_record(values[0])
    if not record.valid:
        problems = "; ".join(str(n.message) for n in record.notes if n.severity == "error")
        raise AssertionError(f"DMARC « {values[0]} » n'est pas valide : {problems}")
    if record.p != policy:
        raise AssertionError(f"{name} publie p={record.p}, la politique demandée est p={policy} : corrigez la valeur "
                             f"(zone.replace(\"_dmarc\", \"TXT\", \"v=DMARC1; p={policy}\")).")
    _forms_note("_dmarc")


@_check
def mailboxes(*local_parts: str, domain: str | None = None, world=None) -> None:
    """The mailboxes exist on the school server (default: tintin and milou)."""
    from . import lab
    from .mail import MailcowAPI

    world, domain, _host = _context(domain, world)
    wanted = [f"{p}@{domain}" for p in (local_parts or ("tintin", "milou"))]
    if world.kind == "live" and not _has_api_key(world):  # a school without Mailcow's API: the teacher made them
        _mailboxes_by_login(wanted, world)
        return
    api = MailcowAPI(key=lab.api_key(world.config), world=world)
    existing = {str(m.get("username", "")).lower() for m in (api.get_mailbox("all", domain) or []) if isinstance(m, dict)}
    missing = [a for a in wanted if a not in existing]
    if missing:
        raise AssertionError(f"Boîte(s) absente(s) du serveur : {', '.join(missing)}. Créez-les dans la cellule de "
                             "l'exercice : api.add_mailbox(nom, etat.domain, etat.new_password(adresse)).")
    _forms_note("add_mailbox")


def _has_api_key(world) -> bool:
    from .config import live_credentials

    return bool(live_credentials(world.config).get("api_key"))


def _mailboxes_by_login(addresses: list[str], world) -> None:
    """Live world without an API: a mailbox exists if it accepts its login over IMAP (the teacher's passwords)."""
    from .mail import imap_connect

    for address in addresses:
        try:
            imap_connect(address, world=world).logout()
        except LabmailError as exc:
            raise AssertionError(f"{address} : connexion IMAP impossible ({exc.message('fr')}) — la boîte existe-t-elle ? "
                                 "Dans une école sans API Mailcow, c'est l'enseignant·e qui la crée : demandez-lui.") from None


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
    if world.kind == "live":  # the student's real mailboxes at Google and Microsoft, read by IMAP or pasted
        try:
            addresses = list(course.external_mailboxes(world.config))
        except LabmailError as exc:
            raise AssertionError(exc.message("fr")) from None
    else:
        addresses = [f"{label}@{provider}" for provider in providers]
    for address in addresses:
        provider = address.rpartition("@")[2]
        try:
            folder, source = course.find(address, subject, timeout=timeout, since=since, config=world.config)
        except LabmailError as exc:
            raise AssertionError(f"{provider} : {exc.message('fr')} Faites d'abord l'exercice : envoyez « {subject} » "
                                 "depuis Tintin à vos deux boîtes (mail.submit).") from None
        results = headers.analyze(source, recompute=False)
        if (results.from_domain or "").lower() != domain:
            raise AssertionError(f"{provider} : « {subject} » vient de {results.from_domain or '(pas de From)'}, pas de votre "
                                 f"domaine {domain} : envoyez-le depuis Tintin ({'tintin@' + domain}).")
        verdicts = {"spf": results.spf, "dkim": next((r for _d, r in results.dkim), "none"), "dmarc": results.dmarc}
        failing = {k: v for k, v in verdicts.items() if v != "pass"}
        if failing:
            shown = " ".join(f"{k}={v}" for k, v in verdicts.items())
            raise AssertionError(f"{provider} a reçu « {subject} » avec {shown} : il faut spf=pass dkim=pass dmarc=pass. "
                                 "Vérifiez le SPF, la clé DKIM et DMARC (checks.domain).")
        if folder != "INBOX":
            raise AssertionError(f"{provider} a classé « {subject} » dans {folder}, pas en boîte de réception.")


def _not_trusted(source: bytes) -> dict[str, str]:
    from . import headers

    found = headers.analyze(source, recompute=False).authentication_results
    verdict = found[0] if found else None
    return {m: (verdict.get(m).result if verdict is not None and verdict.get(m) else "none") for m in ("spf", "dkim", "dmarc")}


@_check
def untrusted_delivery(*received: tuple[str, bytes], world=None) -> None:
    """Step 7's observation: the providers do not trust the domain yet. ``received`` are ``course.find`` results.

    Embedded lab: each message is in Junk. Live world (real Gmail, Microsoft 365): each message arrived (in spam or
    in the inbox "with a warning", as the course says: a real provider also weighs its own reputation data) and its
    Authentication-Results has no pass — no mechanism lets the receiver trust the domain."""
    from .world import current

    world = world or current()
    for folder, source in received:
        verdicts = _not_trusted(source)
        shown = " ".join(f"{k}={v}" for k, v in verdicts.items())
        if world.kind == "local" and folder != "Junk":
            raise AssertionError(f"Le message est dans {folder}, pas dans Junk ({shown}) : votre domaine publie-t-il déjà "
                                 "SPF, DKIM ou DMARC ? À cette étape, il ne devrait rien publier (course.prepare(7)).")
        if "pass" in verdicts.values():
            raise AssertionError(f"Le destinataire a écrit {shown} : un mécanisme passe déjà ; à cette étape, votre domaine "
                                 "ne devrait encore rien publier.")
    if world.kind == "live":
        print("Monde live : " + ", ".join("spam" if f == "Junk" else "boîte de réception" for f, _s in received)
              + " — chez un vrai fournisseur, « en spam ou avec un avertissement » ; aucun mécanisme ne passe.")


@_check
def replay_agrees(chain, folder: str, *, world=None) -> None:
    """Step 8: the replay ends where the message really went. In the embedded lab both are Junk and must agree; in
    the live world the replay applies the providers' *published* rules while the real provider adds its reputation
    data: the two are shown side by side, and a difference is explained, not failed."""
    from .world import current

    world = world or current()
    if world.kind == "local":
        if not (chain.folder == folder == "Junk"):
            raise AssertionError(f"Le rejeu dit {chain.folder}, la vraie livraison {folder} : ils doivent s'accorder (Junk).")
        return
    same = chain.folder == folder
    print(f"Rejeu : {chain.folder} ; vraie livraison : {folder}." + ("" if same else
          " La différence vient de ce que le rejeu ne connaît pas : la réputation de l'adresse et du domaine chez ce "
          "fournisseur, ses filtres de contenu, vos propres règles de tri."))


@_check
def autodiscover(domain: str | None = None, *, world=None) -> None:
    """autodiscover and autoconfig are CNAMEs to the mail server; _autodiscover._tcp is an SRV to it on port 443."""
    world, domain, host = _context(domain, world)
    for label in ("autodiscover", "autoconfig"):
        values = [v.rstrip(".").lower() for v in _published(f"{label}.{domain}", "CNAME", world)]
        if values != [host]:
            found = f"trouvé : {', '.join(values)}" if values else "absent"
            raise AssertionError(f"{label}.{domain} doit être un CNAME vers {host}. ({found}) : dans la cellule de "
                                 f"l'exercice, zone.add(\"{label}\", \"CNAME\", \"{host}.\").")
    srv = _published(f"_autodiscover._tcp.{domain}", "SRV", world)
    good = [v for v in srv if v.split()[2:] == ["443", f"{host}."] or v.split()[2:] == ["443", host]]
    if not good:
        found = f"trouvé : {'; '.join(srv)}" if srv else "absent"
        raise AssertionError(f"_autodiscover._tcp.{domain} doit être un SRV « 0 0 443 {host}. » ({found}) : priorité, "
                             "poids, port 443, puis le serveur.")
    _forms_note("autodiscover", "autoconfig")


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
