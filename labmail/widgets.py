"""Notebook widgets: a thin display layer over the functions students call.

:func:`dns_check` is the "DNS" button of Mailcow's domain page, done right: one click audits the domain
with :func:`labmail.checks.domain` and shows the table — a colour per status, the reason on each row —
and, for every row to fix, the name, type and value to copy into the zone panel.

>>> from labmail.widgets import dns_check
>>> dns_check()            # doctest: +SKIP  (the student's domain; type another one in the box)
"""

from __future__ import annotations

import html
from typing import Callable

import ipywidgets as w

from . import checks
from .errors import LabmailError, UsageError
from .i18n import tr
from .world import World, current

__all__ = ["DnsCheck", "dns_check", "StepReplay", "replay_steps", "Quiz", "quiz", "IdentityForm", "identity_form",
           "DnsPanel", "dns_panel", "MailboxForm", "mailbox_form", "SendForm", "send_form", "MailboxViewer",
           "mailbox_viewer", "HeaderAnalyzer", "header_analyzer", "SpfBuilder", "spf_builder", "DmarcChooser",
           "dmarc_chooser", "PasteMessage", "paste_message"]

_OK, _BAD = "#1b7f3b", "#b00020"


def _say(ok: bool, text: str) -> str:
    """A one-line verdict in green (✔) or red (⚠), HTML-escaped, keeping line breaks."""
    return (f"<div class='labmail-{'ok' if ok else 'error'}' style='color:{_OK if ok else _BAD};white-space:pre-wrap'>"
            f"{'✔' if ok else '⚠'} {html.escape(text)}</div>")


def _attempt(message: w.HTML, action: Callable[[], object], code: Callable[[object], str] | None = None):
    """Run a widget's action: its result in green in ``message``, or the refusal's explanation in red (and None).

    With ``code`` (the code a student would write for the same action, from the result), the message also shows
    that code and says that a graded exercise is the code cell (:func:`_graded_note`)."""
    try:
        result = action()
    except LabmailError as exc:
        message.value = _say(False, str(exc))
        return None
    message.value = _say(True, str(result)) + (_graded_note(code(result)) if code else "")
    return result


def _graded_note(code: str) -> str:
    """What a form says each time it changes the world: the equivalent code, and that it is the code cell of an
    exercise that nbgrader re-executes — a form's clicks are not part of the notebook that is graded."""
    from . import actions

    actions.note_form_action(code)
    return ("<div class='labmail-form-note' style='margin-top:.3em;padding:.3em .6em;border-left:3px solid #1565c0;"
            "background:#e3f2fd'>" + html.escape(tr("Code équivalent : ", "Equivalent code: ")) +
            f"<code style='user-select:all'>{html.escape(code)}</code><br>" + html.escape(tr(
                "ℹ Un formulaire sert à explorer. Pour un exercice noté, c'est la cellule de code de l'exercice qui "
                "compte : à la correction, le notebook est ré-exécuté depuis le début et seules les cellules de code "
                "refont votre travail. Copiez-y ce code.",
                "ℹ A form is for exploring. For a graded exercise, the exercise's code cell is what counts: grading "
                "re-executes the notebook from the start and only code cells redo your work. Copy this code there.")) +
            "</div>")


def _relative(name: str, zone: str) -> str:
    """``name`` relative to ``zone`` as the panel takes it (``@`` for the zone itself)."""
    name, zone = name.rstrip(".").lower(), zone.rstrip(".").lower()
    if name == zone:
        return "@"
    return name[: -len(zone) - 1] if name.endswith("." + zone) else name + "."


def _literal(value: str) -> str:
    """A Python string literal in double quotes, as the notebooks write them."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _change_code(change, zone: str, variable: str = "zone") -> str:
    """The :class:`labmail.dns.ZonePanel` call that makes ``change`` (a :class:`labmail.dns.Change`)."""
    name = _relative(change.name, zone)
    if change.action == "delete":
        args = [_literal(name)] + ([_literal(change.type)] if change.type else []) + [_literal(v) for v in change.values]
        return f"{variable}.delete({', '.join(args)})"
    values = list(change.values)
    value = (_literal(values[0]) if change.action == "add" or len(values) == 1
             else "[" + ", ".join(_literal(v) for v in values) + "]")
    return f"{variable}.{change.action}({_literal(name)}, {_literal(change.type)}, {value})"


class DnsCheck(w.VBox):
    """The widget: a domain box, a "Vérifier le DNS" button, the audit table and the fixes to copy.

    ``audit`` holds the last :class:`labmail.checks.DomainAudit` (None before the first click or after an
    error); ``error`` the last error message. ``check`` is the function called (``checks.domain``).
    """

    def __init__(self, domain: str | None = None, *, world: World | None = None,
                 check: Callable[..., checks.DomainAudit] = checks.domain) -> None:
        self._world = world
        self._check = check
        self.audit: checks.DomainAudit | None = None
        self.error: str | None = None
        if domain is None:
            try:
                domain = (world or current()).config.domain
            except LabmailError:
                domain = ""
        self.domain = w.Text(value=domain, description=tr("Domaine", "Domain"), placeholder="prenom.labmail.cloud",
                             layout=w.Layout(width="28em"))
        self.button = w.Button(description=tr("Vérifier le DNS", "Check DNS"), icon="check", button_style="primary")
        self.summary = w.HTML()
        self.table = w.HTML()
        self.fixes = w.VBox()
        self.button.on_click(lambda _b: self.run())
        super().__init__([w.HBox([self.domain, self.button]), self.summary, self.table, self.fixes])

    def run(self) -> checks.DomainAudit | None:
        """Audit the domain in the box and refresh the display (what a click does)."""
        self.button.disabled = True
        self.summary.value = html.escape(tr("Vérification…", "Checking…"))
        try:
            self.audit = self._check(self.domain.value, world=self._world)
            self.error = None
        except LabmailError as exc:
            self.audit, self.error = None, str(exc)
        finally:
            self.button.disabled = False
        self._render()
        return self.audit

    def _render(self) -> None:
        if self.audit is None:
            self.summary.value = f"<span style='color:#b00020'>⚠ {html.escape(self.error or '')}</span>"
            self.table.value, self.fixes.children = "", ()
            return
        audit = self.audit
        bad = [r for r in audit.rows if r.status in ("WRONG", "MISSING")]
        if bad:
            self.summary.value = (f"<b style='color:#b00020'>{len(bad)} " + html.escape(tr(
                "enregistrement(s) à corriger", "record(s) to fix")) + "</b>")
        else:
            self.summary.value = "<b style='color:#1b7f3b'>✔ " + html.escape(tr(
                "tous les enregistrements nécessaires sont là", "every required record is there")) + "</b>"
        self.table.value = audit._repr_html_()
        boxes = []
        for row in bad:
            record = audit.fix_record(row)
            title = w.HTML(f"<b>{html.escape(row.name)} {row.type}</b> — {html.escape(str(row.fix))}")
            if record is None:
                boxes.append(title)
                continue
            name, rtype, value = record
            fields = [w.Text(value=name, description=tr("Nom", "Name"), layout=w.Layout(width="22em")),
                      w.Text(value=rtype, description="Type", layout=w.Layout(width="10em")),
                      w.Textarea(value=value, description=tr("Valeur", "Value"),
                                 layout=w.Layout(width="60em", height="4em" if len(value) > 90 else "2.2em"))]
            boxes.append(w.VBox([title, w.HBox(fields[:2]), fields[2]]))
        self.fixes.children = tuple(boxes)


def dns_check(domain: str | None = None, *, world: World | None = None, run: bool = True) -> DnsCheck:
    """The "DNS" button: a widget that audits ``domain`` (default: the student's) on each click.

    With ``run=True`` (default) the first audit is done at once, so the table shows without a click.
    """
    widget = DnsCheck(domain, world=world)
    if run and widget.domain.value:
        widget.run()
    return widget


_STEP_FACE = {"pass": "#c8e6c9", "fail": "#ffcdd2", "neutral": "#eeeeee"}
_STEP_EDGE = {"pass": "#2e7d32", "fail": "#c62828", "neutral": "#757575"}


class StepReplay(w.VBox):
    """Walk through a :class:`labmail.replay.Replay` one step at a time: "◀ précédent / suivant ▶", the current step
    highlighted in the chain, and its explanation with the details below."""

    def __init__(self, chain) -> None:
        self.chain = chain
        self.index = 0
        self.previous = w.Button(description=tr("précédent", "previous"), icon="arrow-left")
        self.next = w.Button(description=tr("suivant", "next"), icon="arrow-right", button_style="primary")
        self.position = w.Label()
        self.chain_view = w.HTML()
        self.explanation = w.HTML()
        self.previous.on_click(lambda _b: self.go(self.index - 1))
        self.next.on_click(lambda _b: self.go(self.index + 1))
        super().__init__([w.HBox([self.previous, self.next, self.position]), w.HBox([self.chain_view, self.explanation])])
        self.go(0)

    def go(self, index: int) -> None:
        """Show step ``index`` (0-based; clipped to the chain)."""
        steps = self.chain.steps
        self.index = max(0, min(index, len(steps) - 1))
        self.previous.disabled = self.index == 0
        self.next.disabled = self.index == len(steps) - 1
        self.position.value = tr(f"Étape {self.index + 1}/{len(steps)}", f"Step {self.index + 1}/{len(steps)}")
        items = []
        for i, step in enumerate(steps):
            current = i == self.index
            style = (f"background:{_STEP_FACE[step.status]};border:{3 if current else 1}px solid {_STEP_EDGE[step.status]};"
                     f"opacity:{1 if i <= self.index else 0.45};margin:2px;padding:2px 6px;border-radius:4px")
            items.append(f"<div class='step{' current' if current else ''}' style='{style}'>"
                         f"{'<b>' if current else ''}{html.escape(step.title)}{'</b>' if current else ''}</div>")
        self.chain_view.value = "<div style='width:16em'>" + "".join(items) + "</div>"
        step = steps[self.index]
        details = "".join(f"<li style='color:{_STEP_EDGE[status]}'><code>{html.escape(text)}</code></li>"
                          for text, status in step.lines)
        rfc = f" <i>[{html.escape(step.rfc)}]</i>" if step.rfc else ""
        self.explanation.value = (f"<div style='padding-left:1em'><h4 style='color:{_STEP_EDGE[step.status]}'>"
                                  f"{html.escape(step.title)} — {html.escape(str(step.summary))}</h4>"
                                  f"<p>{html.escape(str(step.explanation))}{rfc}</p><ul>{details}</ul></div>")


def replay_steps(chain) -> StepReplay:
    """The step-by-step widget for a judged message (see :func:`labmail.replay.replay`).

    >>> from labmail import replay, widgets
    >>> widgets.replay_steps(replay.replay(raw))      # doctest: +SKIP
    """
    return StepReplay(chain)


class Quiz(w.VBox):
    """An "Interro !" question: the choices, a "Valider" button, and the explained feedback at once.

    With a ``key`` (the question's id), each answer — a click on "Valider" or :meth:`answer` in code — is recorded
    (:func:`labmail.quiz.record`): the first one is graded. The record is shown under the quiz as an output of its
    cell, updated at each answer, so that saving the notebook saves the answer (nbgrader's circuit carries it with
    the notebook), and it is kept in ``reponses.json`` beside the notebook, so that re-running the cell (after a
    restart, "Run All", or at autograde) shows the recorded answer again instead of forgetting it. Building the
    widget records nothing.
    """

    def __init__(self, question, key: str | None = None) -> None:
        from . import quiz as _quiz

        self.question, self.key = question, key
        title = w.HTML(f"<b>Interro !</b> {html.escape(question.text)}")
        numbered = [f"{i} — {c}" for i, c in enumerate(question.choices)]
        if question.multiple:
            self.boxes = [w.Checkbox(description=c, indent=False, layout=w.Layout(width="auto")) for c in numbered]
            choices = w.VBox(self.boxes)
        else:
            self.boxes = []
            self.radio = w.RadioButtons(options=[(c, i) for i, c in enumerate(numbered)], value=None,
                                        layout=w.Layout(width="auto"))
            choices = self.radio
        hint = tr("(plusieurs réponses possibles)", "(several answers possible)") if question.multiple else ""
        self.button = w.Button(description=tr("Valider", "Check"), button_style="primary")
        self.feedback = w.HTML()
        self.status = w.HTML()
        self.result = None
        self._handles: list = []
        self.record = _quiz.load().get(key) if key else None
        self.flag = _quiz.flags().get(key) if key else None
        self.button.on_click(lambda _b: self.submit(via="clic"))
        super().__init__([title, w.HTML(f"<i>{html.escape(hint)}</i>"), choices, self.button, self.feedback, self.status])
        if self.record is not None:  # answered before (another run of the cell): show it again
            self._tick(set(self.record.last))
            self.result = question.check(set(self.record.first))
        self._show()

    def chosen(self) -> set[int]:
        if self.boxes:
            return {i for i, box in enumerate(self.boxes) if box.value}
        return set() if self.radio.value is None else {self.radio.value}

    def _tick(self, picked: set[int]) -> None:
        if self.boxes:
            for i, box in enumerate(self.boxes):
                box.value = i in picked
        elif picked:
            self.radio.value = min(picked)

    def _bundle(self) -> dict:

        from .interro import bundle

        return bundle(self.key, self.record, flag=self.flag)

    def _show(self, chosen: set[int] | None = None) -> None:
        """Refresh the explanation, the notes, and the record shown under the quiz (the cell's output)."""
        from . import quiz as _quiz

        self.feedback.value = self.result._repr_html_() if self.result else ""
        notes = []
        if self.flag:
            notes.append(_say(False, tr(f"Réponse ignorée à la correction — {self.flag}",
                                        f"Answer set aside by grading — {self.flag}")))
        if self.record is not None and chosen and set(self.record.first) != chosen:
            notes.append(html.escape(tr(
                f"Ce nouvel essai ({_quiz.choices_text(chosen)}) sert à comprendre : la note reste celle de la première "
                f"réponse ({_quiz.choices_text(self.record.first)}).",
                f"This new try ({_quiz.choices_text(chosen)}) is for understanding: the grade stays that of the first "
                f"answer ({_quiz.choices_text(self.record.first)}).")))
        self.status.value = "".join(f"<div><i>{n}</i></div>" for n in notes)
        for handle in self._handles:  # the record in the cell's output: saved with the notebook
            handle.update(self._bundle(), raw=True)

    def _ipython_display_(self) -> None:
        """Display the quiz and, under it, the recorded answer as an output of the cell (updated at each answer)."""
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
        if self.key:
            self._handles.append(display(self._bundle(), raw=True, display_id=True))

    def submit(self, via: str = "code"):
        """Check the current answer, record it (if the quiz has a key) and show why — what "Valider" does."""
        from . import quiz as _quiz

        chosen = self.chosen()
        if self.key and chosen:
            self.record = _quiz.record(self.key, chosen, via=via) or self.record
        self.result = self.question.check(chosen)
        self._show(chosen)
        return self.result

    def answer(self, choices) -> object:
        """Answer in code: tick ``choices`` (the numbers shown before the choices, 0 = the first) and "Valider"."""
        picked = {choices} if isinstance(choices, int) and not isinstance(choices, bool) else choices
        valid = isinstance(picked, (set, frozenset, list, tuple))
        if valid:
            valid = all(isinstance(i, int) and not isinstance(i, bool) for i in picked)
            picked = set(picked) if valid else set()
        last = len(self.question.choices) - 1
        if not valid or not picked or not picked <= set(range(last + 1)):
            raise UsageError(f"Réponse {choices!r} impossible : donnez les numéros de vos choix, de 0 à {last}, par "
                               f"exemple {{0, {last}}}.", f"Answer {choices!r} is not possible: give the numbers of your "
                               f"choices, 0 to {last}, for example {{0, {last}}}.")
        if not self.boxes and len(picked) != 1:
            raise UsageError("Une seule réponse pour cette question : un seul numéro, par exemple {0}.",
                               "One answer only for this question: one number, for example {0}.")
        self._tick(picked)
        return self.submit(via="code")


def quiz(question) -> Quiz:
    """The clickable form of a question: a :class:`labmail.quiz.Question`, or the id of one of the course's
    (:mod:`labmail.interro`), whose answers are then recorded for grading.

    >>> interro = quiz("interro_04_priorite")     # doctest: +SKIP
    >>> interro.answer({0, 1})                    # doctest: +SKIP  (or tick and click « Valider »)
    """
    if isinstance(question, str):
        from .interro import get

        return Quiz(get(question), key=question)
    return Quiz(question)


class IdentityForm(w.VBox):
    """Notebook 00's identity form: type your first name, see the domain it gives, "Enregistrer".

    A thin layer over :func:`labmail.config.to_label` (preview as you type) and
    :func:`labmail.config.set_student` (the click). ``config`` holds the saved configuration.
    """

    def __init__(self) -> None:
        from . import config as _config

        self._config = _config
        try:
            current_name = _config.load().prenom or ""
        except LabmailError:
            current_name = ""
        self.config = None
        self.prenom = w.Text(value=current_name, description=tr("Prénom", "First name"), placeholder="Jean-Émile",
                             layout=w.Layout(width="24em"))
        self.preview = w.HTML()
        self.button = w.Button(description=tr("Enregistrer", "Save"), icon="save", button_style="primary")
        self.message = w.HTML()
        self.prenom.observe(lambda _change: self._preview(), names="value")
        self.button.on_click(lambda _b: self.save())
        super().__init__([w.HBox([self.prenom, self.button]), self.preview, self.message])
        self._preview()

    def _preview(self) -> None:
        text = self.prenom.value
        if not text.strip():
            self.preview.value = "<i>" + html.escape(tr("Votre domaine : prenom.labmail.cloud", "Your domain: "
                                                        "firstname.labmail.cloud")) + "</i>"
            return
        try:
            label = self._config.to_label(text)
            self.preview.value = (html.escape(tr("Votre domaine sera : ", "Your domain will be: ")) +
                                  f"<code>{html.escape(label)}.labmail.cloud</code>")
        except LabmailError as exc:
            self.preview.value = _say(False, str(exc))

    def save(self):
        """Record the first name (what a click on "Enregistrer" does); returns the new configuration or None."""
        try:
            self.config = self._config.set_student(self.prenom.value)
        except LabmailError as exc:
            self.message.value = _say(False, str(exc))
            return None
        self.message.value = _say(True, tr(f"Configuration enregistrée : votre domaine est {self.config.domain}.",
                                           f"Configuration saved: your domain is {self.config.domain}."))
        return self.config


def identity_form() -> IdentityForm:
    """The identity form of notebook 00 (prefilled with the saved first name, if any)."""
    return IdentityForm()


class DnsPanel(w.VBox):
    """The zone's DNS panel: the records (refresh), a form to add one, and a delete button per record.

    Every action calls the same :class:`labmail.dns.ZonePanel` methods the notebooks show as code
    (``list``, ``add``, ``delete``); refusals show their French explanation and change nothing.
    """

    def __init__(self, panel=None) -> None:
        from .dns import ZonePanel

        self.panel = panel or ZonePanel()
        self.name = w.Text(description=tr("Nom", "Name"), placeholder="@ ou _dmarc", layout=w.Layout(width="18em"))
        self.type = w.Dropdown(options=["MX", "TXT", "CNAME", "SRV", "A", "AAAA"], value="MX", description="Type",
                               layout=w.Layout(width="12em"))
        self.value = w.Text(description=tr("Valeur", "Value"), placeholder="10 mailcow.labmail.cloud.",
                            layout=w.Layout(width="40em"))
        self.add_button = w.Button(description=tr("Ajouter", "Add"), icon="plus", button_style="primary")
        self.refresh_button = w.Button(description=tr("Actualiser", "Refresh"), icon="refresh")
        self.message = w.HTML()
        self.records = w.VBox()
        self.add_button.on_click(lambda _b: self.add())
        self.refresh_button.on_click(lambda _b: self.refresh())
        title = w.HTML(f"<b>Zone {html.escape(self.panel.zone.to_text())}</b>")
        super().__init__([title, w.HBox([self.name, self.type]), w.HBox([self.value, self.add_button]), self.message,
                          self.refresh_button, self.records])
        self.refresh()

    def refresh(self) -> None:
        """Reload the records from the authoritative server (a zone transfer)."""
        try:
            rows = self.panel.list()
        except LabmailError as exc:
            self.message.value = _say(False, str(exc))
            return
        boxes = []
        for record in rows:
            label = w.HTML(f"<code>{html.escape(record.name)} {record.ttl} {record.type} {html.escape(record.value)}</code>")
            if record.type in ("SOA", "NS"):
                boxes.append(label)
                continue
            button = w.Button(description=tr("Supprimer", "Delete"), icon="trash", button_style="danger",
                              layout=w.Layout(width="9em"))
            button.on_click(lambda _b, r=record: self.delete(r.name, r.type, r.value))
            boxes.append(w.HBox([button, label]))
        self.records.children = tuple(boxes)

    def add(self):
        """Add the record typed in the form (what "Ajouter" does); the change or None if it was refused."""
        change = _attempt(self.message, lambda: self.panel.add(self.name.value or "@", self.type.value, self.value.value),
                          self._code)
        if change is not None:
            self.value.value = ""
            self.refresh()
        return change

    def delete(self, name: str, rtype: str, value: str):
        """Delete one record (what its "Supprimer" button does)."""
        change = _attempt(self.message, lambda: self.panel.delete(name, rtype, value), self._code)
        self.refresh()
        return change

    def _code(self, change) -> str:
        return _change_code(change, self.panel.zone.to_text())


def dns_panel(zone: str | None = None) -> DnsPanel:
    """The DNS panel of your zone (list, add, delete records), over :class:`labmail.dns.ZonePanel`."""
    from .dns import ZonePanel

    return DnsPanel(ZonePanel(zone))


class MailboxForm(w.VBox):
    """Mailcow's "Ajouter une boîte de réception": local part, full name, password typed twice, "Ajouter".

    Calls :meth:`labmail.mail.MailcowAPI.add_mailbox` with the domain's API key; the password fields are
    cleared after each try, so the password never stays in the notebook, and the password is kept (0600) by
    :func:`labmail.mail.remember_password` so that the next notebooks log in without it.
    """

    def __init__(self, domain: str | None = None, *, api=None) -> None:
        from .config import load
        from .world import api_key

        cfg = load()
        self.domain = domain or cfg.domain
        if api is None:
            from .mail import MailcowAPI

            api = MailcowAPI(key=api_key(cfg))
        self.api = api
        self.local = w.Text(description=tr("Adresse", "Address"), placeholder="tintin", layout=w.Layout(width="16em"))
        self.at = w.Label(f"@{self.domain}")
        self.full_name = w.Text(description=tr("Nom", "Name"), placeholder="Tintin", layout=w.Layout(width="20em"))
        self.password = w.Password(description=tr("Mot de passe", "Password"), layout=w.Layout(width="20em"))
        self.password2 = w.Password(description=tr("Confirmer", "Confirm"), layout=w.Layout(width="20em"))
        self.button = w.Button(description=tr("Ajouter la boîte", "Add mailbox"), icon="plus", button_style="primary")
        self.message = w.HTML()
        self.button.on_click(lambda _b: self.create())
        super().__init__([w.HBox([self.local, self.at]), self.full_name, self.password, self.password2, self.button,
                          self.message])

    def create(self):
        """Create the mailbox (what "Ajouter la boîte" does); returns the address, or None if refused."""
        from .mail import MailcowAPI

        secret, again = self.password.value, self.password2.value
        self.password.value = self.password2.value = ""
        local = self.local.value.strip().lower()
        if not local or "@" in local:
            self.message.value = _say(False, tr("Indiquez la partie avant @ (par exemple « tintin »).",
                                                "Type the part before @ (for example \"tintin\")."))
            return None
        if secret != again or not secret:
            self.message.value = _say(False, tr("Les deux mots de passe sont vides ou différents : retapez-les.",
                                                "The two passwords are empty or differ: type them again."))
            return None
        try:
            MailcowAPI.raise_for(self.api.add_mailbox(local, self.domain, secret, name=self.full_name.value))
        except LabmailError as exc:
            self.message.value = _say(False, str(exc))
            return None
        address = f"{local}@{self.domain}"
        from .mail import remember_password

        remember_password(address, secret)  # like a mail client's password store (0600): never in a cell
        self.message.value = _say(True, tr(f"Boîte {address} créée.", f"Mailbox {address} created.")) + _graded_note(
            f"api.add_mailbox({_literal(local)}, etat.domain, etat.new_password({_literal(address)}))")
        return address


def mailbox_form(domain: str | None = None) -> MailboxForm:
    """The mailbox creation form (Mailcow's "Ajouter une boîte de réception")."""
    return MailboxForm(domain)


class SendForm(w.VBox):
    """A webmail's "Écrire": from, to, subject, body, "Envoyer" — through :func:`labmail.mail.submit` (587,
    STARTTLS, AUTH with the mailbox's stored credential); shows the server's reply, accepted or refused."""

    def __init__(self, sender: str = "", to: str = "", subject: str = "", body: str = "") -> None:
        self.sender = w.Text(value=sender, description=tr("De", "From"), layout=w.Layout(width="30em"))
        self.to = w.Text(value=to, description=tr("À", "To"), layout=w.Layout(width="30em"))
        self.subject = w.Text(value=subject, description=tr("Objet", "Subject"), layout=w.Layout(width="40em"))
        self.body = w.Textarea(value=body, description=tr("Message", "Body"), layout=w.Layout(width="40em", height="6em"))
        self.button = w.Button(description=tr("Envoyer", "Send"), icon="paper-plane", button_style="primary")
        self.message = w.HTML()
        self.result = None
        self.button.on_click(lambda _b: self.send())
        super().__init__([self.sender, self.to, self.subject, self.body, self.button, self.message])

    def send(self):
        """Submit the message (what "Envoyer" does); returns the :class:`labmail.mail.SubmitResult` or None."""
        from . import mail

        recipients = [a.strip() for a in self.to.value.replace(";", ",").split(",") if a.strip()]
        try:
            self.result = mail.submit(self.sender.value.strip(), recipients, self.subject.value, self.body.value)
        except LabmailError as exc:
            self.result = None
            self.message.value = _say(False, str(exc))
            return None
        self.message.value = _say(self.result.accepted, str(self.result.reply))
        return self.result


def send_form(sender: str = "", to: str = "", subject: str = "", body: str = "") -> SendForm:
    """The send-mail form (a webmail's "Écrire")."""
    return SendForm(sender, to, subject, body)


class MailboxViewer(w.VBox):
    """A webmail-like reader over IMAP: the folders, the messages of one, and a message's full source.

    Uses :func:`labmail.mail.imap` (read-only: nothing is marked as read) with the mailbox's stored credential.
    """

    def __init__(self, address: str, *, host: str | None = None, folders=("INBOX", "Sent", "Junk", "Trash")) -> None:
        self.address, self.host = address, host
        self.folder = w.ToggleButtons(options=list(folders), value=folders[0])
        self.messages = w.Select(options=[], rows=8, layout=w.Layout(width="60em"))
        self.refresh_button = w.Button(description=tr("Actualiser", "Refresh"), icon="refresh")
        self.source = w.Textarea(layout=w.Layout(width="60em", height="16em"), disabled=True)
        self.message = w.HTML()
        self.listing: list = []
        self.folder.observe(lambda _c: self.refresh(), names="value")
        self.messages.observe(lambda _c: self.show(), names="value")
        self.refresh_button.on_click(lambda _b: self.refresh())
        super().__init__([w.HTML(f"<b>{html.escape(address)}</b>"), w.HBox([self.folder, self.refresh_button]),
                          self.messages, self.message, self.source])
        self.refresh()

    def refresh(self) -> list:
        """List the current folder (newest first)."""
        from . import mail

        try:
            self.listing = sorted(mail.imap(self.address, folder=self.folder.value, fetch=True, host=self.host),
                                  key=lambda m: -m.uid)
        except LabmailError as exc:
            self.listing = []
            self.message.value = _say(False, str(exc))
        else:
            self.message.value = html.escape(tr(f"{len(self.listing)} message(s) dans {self.folder.value}",
                                                f"{len(self.listing)} message(s) in {self.folder.value}"))
        self.messages.options = [(f"{m.sender} — {m.subject}", m.uid) for m in self.listing]
        self.source.value = ""
        if self.listing:
            self.messages.value = self.listing[0].uid
        return self.listing

    def show(self) -> str:
        """Show the selected message's full source (headers and body)."""
        chosen = next((m for m in self.listing if m.uid == self.messages.value), None)
        self.source.value = chosen.data.decode("utf-8", "replace") if chosen and chosen.data else ""
        return self.source.value


def mailbox_viewer(address: str, *, host: str | None = None) -> MailboxViewer:
    """The mailbox viewer (folders, messages, full source) of ``address``."""
    return MailboxViewer(address, host=host)


class HeaderAnalyzer(w.VBox):
    """Paste a message's headers (or its whole source) from any webmail, click "Analyser": the verdicts
    spf=/dkim=/dmarc=, what is wrong and how to fix it, and the hops — :func:`labmail.headers.analyze`."""

    def __init__(self, text: str = "") -> None:
        self.text = w.Textarea(value=text, placeholder=tr("Collez ici les en-têtes (ou la source complète) d'un message",
                                                          "Paste a message's headers (or full source) here"),
                               layout=w.Layout(width="60em", height="12em"))
        self.button = w.Button(description=tr("Analyser", "Analyse"), icon="search", button_style="primary")
        self.result = w.HTML()
        self.report = None
        self.button.on_click(lambda _b: self.analyze())
        super().__init__([self.text, self.button, self.result])

    def analyze(self):
        """Analyse the pasted text (what "Analyser" does); returns the :class:`labmail.headers.Report` or None."""
        from . import headers

        raw = self.text.value.replace("\r\n", "\n").lstrip("\n")
        if "\n\n" not in raw:
            raw += "\n\n"  # headers only: an empty body
        try:
            self.report = headers.analyze(raw)
        except LabmailError as exc:
            self.report = None
            self.result.value = _say(False, str(exc))
            return None
        hops = self.report.hops_frame()
        table = hops.to_html(index=False, border=0) if len(hops) else ""
        self.result.value = f"<div class='labmail-report'>{self.report._repr_html_()}{table}</div>"
        return self.report


def header_analyzer(text: str = "") -> HeaderAnalyzer:
    """The header analyzer: paste headers from anywhere, get the verdicts and the diagnosis."""
    return HeaderAnalyzer(text)


class PasteMessage(w.VBox):
    """Paste the source of a message received in a real mailbox (live world, steps 7, 8 and 12): « Enregistrer »
    keeps it beside the notebook (:func:`labmail.mail.save_pasted`), where :func:`labmail.course.find` and the
    checks read it — also when nbgrader grades the submitted notebook. The verdicts of the receiver's
    Authentication-Results are shown at once."""

    def __init__(self, address: str | None = None) -> None:
        self.address = w.Text(value=address or "", description=tr("Boîte", "Mailbox"), placeholder="prenom.nom@gmail.com",
                              layout=w.Layout(width="32em"))
        self.folder = w.Dropdown(options=[(tr("Boîte de réception", "Inbox"), "INBOX"), (tr("Spam / courrier indésirable",
                                                                                          "Spam / junk"), "Junk")],
                                 value="INBOX", description=tr("Trouvé dans", "Found in"))
        self.source = w.Textarea(placeholder=tr("Collez ici toute la source du message (Gmail : ⋮ > Afficher l'original ; "
                                                "Outlook : … > Afficher > Afficher la source du message)",
                                                "Paste the whole message source here (Gmail: ⋮ > Show original; Outlook: … > "
                                                "View > View message source)"), layout=w.Layout(width="100%", height="14em"))
        self.button = w.Button(description=tr("Enregistrer", "Save"), icon="save", button_style="primary")
        self.message = w.HTML()
        self.saved = None
        self.button.on_click(lambda _b: self.save())
        super().__init__([self.address, self.folder, self.source, self.button, self.message])

    def save(self):
        """What « Enregistrer » does: keep the source, then say what the receiver wrote (or what is wrong)."""
        from . import headers, mail

        try:
            self.saved = mail.save_pasted(self.source.value, folder=self.folder.value,
                                            address=self.address.value.strip() or None)
            report = headers.analyze(self.saved.read_bytes(), recompute=False)
        except LabmailError as exc:
            self.message.value = _say(False, str(exc))
            return None
        dkim = ", ".join(f"{d}:{r}" for d, r in report.dkim) or "none"
        self.message.value = _say(True, tr(f"enregistré ({self.saved.name}) — spf={report.spf} dkim={dkim} dmarc={report.dmarc}",
                                           f"saved ({self.saved.name}) — spf={report.spf} dkim={dkim} dmarc={report.dmarc}"))
        self.source.value = ""
        return self.saved


def paste_message(address: str | None = None) -> PasteMessage:
    """The form to paste a received message's source (live world); see :class:`PasteMessage`."""
    return PasteMessage(address)


class SpfBuilder(w.VBox):
    """Build an SPF record by ticking what may send for the domain; the record is linted as you go, and
    "Publier" replaces the apex SPF record through :class:`labmail.dns.ZonePanel`."""

    def __init__(self, domain: str | None = None, *, panel=None) -> None:
        from .config import load

        self.domain = domain or load().domain
        self._panel = panel
        self.mx = w.Checkbox(description=tr("les serveurs MX du domaine (mx)", "the domain's MX servers (mx)"), indent=False)
        self.a = w.Checkbox(description=tr("l'adresse du domaine (a)", "the domain's address (a)"), indent=False)
        self.ip4 = w.Text(description="ip4", placeholder="203.0.113.10", layout=w.Layout(width="24em"))
        self.include = w.Text(description="include", placeholder="_spf.google.com", layout=w.Layout(width="24em"))
        self.all = w.Dropdown(options=[("-all (refuser le reste)", "-all"), ("~all (suspect)", "~all"),
                                       ("?all (neutre)", "?all"), ("+all (tout le monde : dangereux)", "+all")],
                              value="-all", description="all")
        self.record = w.Text(description="SPF", disabled=True, layout=w.Layout(width="48em"))
        self.lint = w.HTML()
        self.button = w.Button(description=tr("Publier", "Publish"), icon="upload", button_style="primary")
        self.message = w.HTML()
        for field_ in (self.mx, self.a, self.ip4, self.include, self.all):
            field_.observe(lambda _c: self.build(), names="value")
        self.button.on_click(lambda _b: self.publish())
        super().__init__([self.mx, self.a, self.ip4, self.include, self.all, self.record, self.lint, self.button,
                          self.message])
        self.build()

    def build(self) -> str:
        """The record for the current choices, and the lint of it (errors and warnings)."""
        from . import spf

        terms = ["v=spf1"] + (["mx"] if self.mx.value else []) + (["a"] if self.a.value else [])
        terms += [f"ip4:{ip}" for ip in self.ip4.value.replace(",", " ").split()]
        terms += [f"include:{d}" for d in self.include.value.replace(",", " ").split()]
        record = " ".join(terms + [self.all.value])
        self.record.value = record
        try:
            findings = [f for f in spf.lint(record, world=None) if f.severity in ("error", "warning")]
        except LabmailError as exc:
            findings, self.lint.value = [], _say(False, str(exc))
        else:
            self.lint.value = "".join(_say(False, str(f)) for f in findings) or _say(True, tr(
                "syntaxe correcte", "valid syntax"))
        return record

    def publish(self):
        """Publish the record at the domain's apex, replacing the previous SPF record (what "Publier" does)."""
        from .dns import ZonePanel

        panel = self._panel or ZonePanel(self.domain)
        record = self.build()

        def replace():
            others = [r.value for r in panel.list() if r.name == f"{self.domain}." and r.type == "TXT"
                      and not r.value.lower().startswith("v=spf1")]
            return panel.replace("@", "TXT", others + [record])

        return _attempt(self.message, replace, lambda change: _change_code(change, panel.zone.to_text()))


def spf_builder(domain: str | None = None) -> SpfBuilder:
    """The SPF builder: tick what may send, read the record and its lint, publish it."""
    return SpfBuilder(domain)


class DmarcChooser(w.VBox):
    """Choose a DMARC policy (none, quarantine, reject), the share of mail and the report address; the record is
    validated under RFC 9989 as you go and "Publier" puts it at ``_dmarc`` through :class:`labmail.dns.ZonePanel`."""

    _EFFECT = {"none": ("rien n'est appliqué : on observe (rapports)", "nothing is enforced: observe (reports)"),
               "quarantine": ("les messages qui échouent vont en courrier indésirable",
                              "failing messages go to the spam folder"),
               "reject": ("les messages qui échouent sont refusés dès la réception (550 5.7.x)",
                          "failing messages are refused at reception (550 5.7.x)")}

    def __init__(self, domain: str | None = None, *, panel=None) -> None:
        from .config import load

        self.domain = domain or load().domain
        self._panel = panel
        self.policy = w.ToggleButtons(options=["none", "quarantine", "reject"], value="none", description="p=")
        self.effect = w.HTML()
        self.rua = w.Text(description="rua", placeholder=f"mailto:dmarc@{self.domain}", layout=w.Layout(width="30em"))
        self.strict = w.Checkbox(description=tr("alignement strict (adkim=s, aspf=s)", "strict alignment (adkim=s, aspf=s)"),
                                 indent=False)
        self.testing = w.Checkbox(description=tr("mode test (t=y : une politique de moins)", "testing (t=y)"), indent=False)
        self.record = w.Text(description="DMARC", disabled=True, layout=w.Layout(width="48em"))
        self.notes = w.HTML()
        self.button = w.Button(description=tr("Publier", "Publish"), icon="upload", button_style="primary")
        self.message = w.HTML()
        for field_ in (self.policy, self.rua, self.strict, self.testing):
            field_.observe(lambda _c: self.build(), names="value")
        self.button.on_click(lambda _b: self.publish())
        super().__init__([self.policy, self.effect, self.rua, self.strict, self.testing, self.record, self.notes,
                          self.button, self.message])
        self.build()

    def build(self) -> str:
        """The record for the current choices, validated under RFC 9989."""
        from . import dmarc

        tags = [f"v=DMARC1; p={self.policy.value}"]
        if self.rua.value.strip():
            tags.append(f"rua={self.rua.value.strip()}")
        if self.strict.value:
            tags.append("adkim=s; aspf=s")
        if self.testing.value:
            tags.append("t=y")
        record = "; ".join(tags)
        self.record.value = record
        self.effect.value = html.escape(tr(*self._EFFECT[self.policy.value]))
        try:
            parsed = dmarc.parse_record(record)
        except LabmailError as exc:
            self.notes.value = _say(False, str(exc))
            return record
        bad = [n for n in parsed.notes if n.severity in ("error", "warning")]
        self.notes.value = "".join(_say(False, str(n)) for n in bad) or _say(True, tr("enregistrement valide",
                                                                                   "valid record"))
        return record

    def publish(self):
        """Publish the record at ``_dmarc.<domain>``, replacing the previous one (what "Publier" does)."""
        from .dns import ZonePanel

        panel = self._panel or ZonePanel(self.domain)
        record = self.build()
        return _attempt(self.message, lambda: panel.replace("_dmarc", "TXT", record),
                        lambda change: _change_code(change, panel.zone.to_text()))


def dmarc_chooser(domain: str | None = None) -> DmarcChooser:
    """The DMARC policy chooser: pick a policy, read the record and its effect, publish it."""
    return DmarcChooser(domain)
