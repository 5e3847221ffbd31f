"""The course's "Interro !" questions, by id: text, choices, the right ones, why each choice is right or wrong.

Notebooks show them with :func:`labmail.widgets.quiz` (``quiz("interro_04_priorite")``); the widget records the
student's answers in ``reponses.json`` for grading (:mod:`labmail.grading`). Keeping the questions here keeps the
expected answers out of the notebooks, whose hidden tests hold them for nbgrader.
"""

from __future__ import annotations

import html

from .errors import UsageError
from .i18n import tr
from .quiz import MIME_TYPE, Question, Record

__all__ = ["QUESTIONS", "get", "bundle"]

QUESTIONS: dict[str, Question] = {
    "interro_01_dns": Question(
    "Pourquoi un serveur de messagerie ne peut-il pas fonctionner sans DNS ?",
    ["parce que le DNS stocke les messages",
     "pour trouver le serveur qui reçoit le courrier d'un domaine (MX)",
     "parce que le DNS chiffre les échanges SMTP",
     "parce que SPF, DKIM et DMARC sont publiés dans le DNS"],
    correct={1, 3},
    why=["non : les messages sont dans les boîtes (MDA)",
     "sans MX, l'expéditeur ne sait pas où livrer",
     "non : c'est le rôle de TLS",
     "le destinataire les lit dans le DNS pour juger le message"],
    retain="un mail est avant tout une transaction réseau fondée sur le DNS"),
    "interro_02_zone": Question(
    "Qui peut modifier les enregistrements de votre zone prenom.labmail.cloud ?",
    ["n'importe quel étudiant, puisque le serveur DNS est partagé",
     "le serveur Mailcow, automatiquement",
     "vous seul·e, avec la clé TSIG de votre zone"],
    correct={2},
    why=["non : le serveur est partagé, mais chaque zone n'accepte que sa propre clé",
     "non : Mailcow recommande des enregistrements (bouton DNS), c'est vous qui les publiez",
     "chaque mise à jour est signée par votre clé ; une autre clé est refusée (REFUSED)"],
    retain="zone déléguée = vous êtes responsable de son contenu"),
    "interro_03_recommandations": Question(
    "Que contiennent les recommandations DNS de Mailcow pour votre domaine ?",
    ["la clé privée DKIM, à publier aussi",
     "le MX, qui dit où livrer le courrier du domaine",
     "le SPF, la liste des serveurs autorisés à envoyer pour le domaine",
     "la clé publique DKIM, sous <sélecteur>._domainkey",
     "la politique DMARC, sous _dmarc"],
    correct={1, 2, 3, 4},
    why=["surtout pas : la clé privée reste sur le serveur, sinon n'importe qui signerait à votre place",
     "indispensable : sans MX, aucun mail entrant",
     "il protège votre domaine contre l'usurpation par IP",
     "elle permet de vérifier les signatures du serveur",
     "elle dit quoi faire des messages qui échouent"],
    retain="MX, SPF, DKIM (clé publique), DMARC — plus les enregistrements autodiscover (bonus)"),
    "interro_04_priorite": Question(
    "À quoi sert la priorité dans un enregistrement MX ?",
    ["à rendre un message plus urgent",
     "à répartir les messages entre serveurs de même priorité",
     "à choisir l'ordre dans lequel les serveurs sont essayés (la plus petite valeur d'abord)",
     "à indiquer la taille maximale des messages"],
    correct={1, 2},
    why=["non : aucun rapport avec l'urgence d'un message",
     "à valeur égale, l'expéditeur choisit au hasard (RFC 5321 §5.1)",
     "un expéditeur essaie d'abord le MX de plus petite valeur, puis les suivants en secours",
     "non : c'est l'extension SIZE de SMTP"],
    retain="MX 10 = serveur principal ; MX 20 = secours"),
    "interro_05_protocoles": Question(
    "Quel protocole est utilisé pour l'envoi ? Pour la consultation ?",
    ["IMAP pour l'envoi",
     "SMTP pour l'envoi",
     "SMTP pour la consultation",
     "IMAP ou POP pour la consultation"],
    correct={1, 3},
    why=["non : IMAP ne sait que lire et ranger",
     "le client soumet au MSA en SMTP (587 ou 465)",
     "non : SMTP ne sait que transmettre",
     "IMAP (993) laisse les messages sur le serveur, POP (995) les rapatrie"]),
    "interro_06_pop_imap": Question(
    "Quelle différence fondamentale entre POP et IMAP, du point de vue du serveur ?",
    ["POP est chiffré, IMAP non",
     "IMAP garde les messages et l'état (lu, supprimé, dossiers) sur le serveur",
     "POP rapatrie les messages ; le serveur n'est qu'une boîte de dépôt"],
    correct={1, 2},
    why=["non : les deux ont une version TLS (995, 993)",
     "d'où la synchronisation entre tous les clients",
     "l'option « laisser sur le serveur » n'y change que la durée"]),
    "interro_06_ports": Question(
    "Pourquoi SMTP et IMAP/POP utilisent-ils des ports et des sécurités différents ?",
    ["ce sont des protocoles différents, pour des rôles différents (transmettre / consulter)",
     "pour ralentir les attaquants",
     "la soumission exige une authentification, le relais entre serveurs non"],
    correct={0, 2},
    why=["chaque service a son port réservé (IANA)",
     "non : un port ne protège de rien",
     "587/465 pour les clients authentifiés, 25 entre MTA"]),
    "interro_06_entreprise": Question(
    "Pourquoi IMAP est-il privilégié en entreprise ?",
    ["IMAP consomme moins de place sur le serveur que POP",
     "les messages restent sur le serveur : sauvegardés, et les mêmes sur le poste, le téléphone et le webmail",
     "les dossiers et l'état (lu, répondu) sont partagés entre tous les appareils",
     "un poste perdu ou volé n'emporte pas l'unique copie du courrier"],
    correct={1, 2, 3},
    why=["non : c'est l'inverse, tout reste sur le serveur (d'où les quotas)",
     "l'entreprise sauvegarde et archive au même endroit",
     "chacun retrouve le même état partout",
     "avec POP sans « laisser sur le serveur », le courrier n'existe que sur le poste"],
    retain="IMAP = le serveur fait foi ; POP = le poste fait foi"),
    "interro_07_confiance": Question(
    "Pourquoi les grands fournisseurs ne font-ils pas confiance à votre domaine ?",
    ["rien dans le DNS ne dit quels serveurs peuvent envoyer pour lui (SPF)",
     "le message n'a pas été chiffré de bout en bout",
     "ses messages ne portent pas de signature vérifiable (DKIM)",
     "il ne publie aucune consigne en cas d'échec (DMARC)"],
    correct={0, 2, 3},
    why=["spf=none dans Authentication-Results",
     "non : TLS a bien protégé chaque étape ; le chiffrement de bout en bout n'est pas exigé",
     "dkim ne passe pas : la clé n'est pas publiée",
     "dmarc=none"],
    retain="un domaine inconnu et non authentifié est traité comme suspect"),
    "interro_08_en_tetes": Question(
    "Pourquoi l'analyse des en-têtes est-elle essentielle pour diagnostiquer un problème de messagerie ?",
    ["les Received montrent le trajet, les délais et le chiffrement de chaque étape",
     "les en-têtes contiennent le mot de passe de l'expéditeur",
     "le destinataire y écrit son verdict (Authentication-Results)"],
    correct={0, 2},
    why=["on voit où il a traîné ou circulé en clair",
     "non, jamais : l'authentification SMTP n'est pas recopiée dans le message",
     "spf=, dkim=, dmarc= disent pourquoi le message est en spam"]),
    "interro_09_protege": Question(
    "Que protège SPF ?",
    ["l'adresse From affichée au lecteur",
     "l'adresse d'enveloppe (MAIL FROM) : quels serveurs peuvent envoyer pour le domaine",
     "le contenu du message"],
    correct={1},
    why=["non : c'est DMARC qui relie le From à SPF ou DKIM (alignement)",
     "oui : le serveur de réception compare l'adresse IP du client au SPF du domaine de MAIL FROM",
     "non : c'est DKIM"]),
    "interro_09_insuffisant": Question(
    "Pourquoi SPF seul n'est-il pas suffisant ?",
    ["il est trop lent",
     "il ne garantit pas l'intégrité du message",
     "il casse lors d'un transfert",
     "il ne protège pas le From affiché"],
    correct={1, 2, 3},
    why=["non : quelques requêtes DNS",
     "le contenu peut être modifié sans que SPF le voie",
     "le serveur qui transfère n'est pas dans votre SPF",
     "un usurpateur peut avoir son propre MAIL FROM valide"]),
    "interro_10_spf_dkim": Question(
    "Quelle différence fondamentale existe-t-il entre SPF et DKIM ?",
    ["SPF chiffre le message, DKIM non",
     "SPF autorise des serveurs d'envoi ; DKIM signe le message lui-même",
     "DKIM survit à un transfert, SPF non"],
    correct={1, 2},
    why=["non : ni l'un ni l'autre ne chiffre",
     "SPF regarde d'où vient la connexion, DKIM ce qui est transporté",
     "la signature voyage avec le message ; l'adresse IP du serveur qui transfère, elle, change"],
    retain="DKIM : le cachet de cire intact sur l'enveloppe"),
    "interro_11_dmarc": Question(
    "Quel est le rôle exact de DMARC dans la chaîne de confiance ?",
    ["dire au destinataire quoi faire en cas d'échec (none, quarantine, reject)",
     "signer les messages",
     "relier le From affiché à un SPF ou un DKIM qui passe (alignement)",
     "demander des rapports sur l'usage du domaine"],
    correct={0, 2, 3},
    why=["la politique p=",
     "non : c'est DKIM",
     "sans alignement, un usurpateur passerait SPF avec son propre domaine d'enveloppe",
     "rua= : les rapports agrégés"]),
    "interro_13_autodiscover": Question(
    "Pourquoi l'autodiscover est-il souvent considéré comme optionnel alors qu'il a un impact direct sur la charge du support ?",
    ["parce qu'il est obligatoire pour que DKIM fonctionne",
     "parce que ses erreurs ne se voient pas côté serveur : c'est l'utilisateur qui bloque, puis appelle",
     "parce que le courrier circule sans lui : ni l'envoi ni la réception n'en dépendent",
     "parce que chaque configuration manuelle ratée (port, chiffrement, identifiant) devient un ticket"],
    correct={1, 2, 3},
    why=["non : DKIM ne dépend que de la clé publiée sous _domainkey",
     "oui : aucun test serveur n'échoue sans lui, le coût est chez l'utilisateur et au support",
     "oui : MX, SPF, DKIM et DMARC suffisent à la messagerie ; l'autodiscover ne sert qu'aux clients",
     "oui : les utilisateurs ne connaissent ni IMAP ni SMTP ; sans autodiscover ils se trompent, et appellent"],
    retain="optionnel pour le courrier, essentiel pour les utilisateurs (et le support)"),
}


def get(question_id: str) -> Question:
    """The question ``question_id`` (e.g. ``"interro_04_priorite"``)."""
    try:
        return QUESTIONS[question_id]
    except KeyError:
        raise UsageError(f"Interro « {question_id} » inconnue : choisissez parmi {', '.join(QUESTIONS)}.",
                           f"Unknown quiz \"{question_id}\": choose among {', '.join(QUESTIONS)}.") from None


def bundle(question_id: str, entry: Record | None, *, flag: str | None = None) -> dict:
    """The notebook output that carries an answer: readable text and HTML (for the student, Formgrader and the
    feedback) and, when answered, the record itself as :data:`MIME_TYPE`."""
    question = QUESTIONS.get(question_id)
    title = f"« {question.text} »" if question else f"« {question_id} »"
    if flag:
        text = tr(f"📝 Interro {title} : réponse ignorée — {flag}", f"📝 Quiz {title}: answer set aside — {flag}")
        colour = "#b00020"
    elif entry is None:
        text = tr(f"📝 Interro {title} : pas encore de réponse enregistrée — cochez, puis « Valider ».",
                  f"📝 Quiz {title}: no answer recorded yet — tick, then \"Valider\".")
        colour = "#555555"
    else:
        chosen = "; ".join(f"{i} — {question.choices[i]}" if question and i < len(question.choices) else str(i)
                           for i in entry.first)
        verdict = ""
        if question is not None:
            verdict = " ✔" if set(entry.first) == question.correct else " ✘"
        text = tr(f"📝 Interro {title} — réponse enregistrée (la première compte) : {chosen}{verdict} · "
                  f"{entry.attempts} essai(s) · {entry.user}, {entry.first_time.replace('T', ' ')}",
                  f"📝 Quiz {title} — answer recorded (the first one counts): {chosen}{verdict} · "
                  f"{entry.attempts} try(ies) · {entry.user}, {entry.first_time.replace('T', ' ')}")
        if entry.via == "correction":
            text += tr(" · donnée en code à la correction : la copie rendue ne montrait aucune réponse enregistrée "
                       "(cellules jamais exécutées, ou sorties effacées)",
                       " · given in code at grading time: the submitted notebook showed no recorded answer "
                       "(cells never run, or outputs cleared)")
        colour = "#1b7f3b" if verdict == " ✔" else "#b00020" if verdict else "#555555"
    data: dict[str, object] = {"text/plain": text,
            "text/html": f"<div class='labmail-reponse' style='color:{colour}'>{html.escape(text)}</div>"}
    if entry is not None and not flag:
        data[MIME_TYPE] = entry.to_dict()
    return data
