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
from .errors import LabmailError
from .i18n import tr
from .world import World, current

__all__ = ["DnsCheck", "dns_check", "StepReplay", "replay_steps", "Quiz", "quiz"]

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
    """An "Interro !" question: the choices, a "Valider" button, and the explained feedback at once."""

    def __init__(self, question) -> None:
        self.question = question
        title = w.HTML(f"<b>Interro !</b> {html.escape(question.text)}")
        if question.multiple:
            self.boxes = [w.Checkbox(description=c, indent=False, layout=w.Layout(width="auto")) for c in question.choices]
            choices = w.VBox(self.boxes)
        else:
            self.boxes = []
            self.radio = w.RadioButtons(options=[(c, i) for i, c in enumerate(question.choices)], value=None,
                                        layout=w.Layout(width="auto"))
            choices = self.radio
        self.button = w.Button(description=tr("Valider", "Check"), button_style="primary")
        self.feedback = w.HTML()
        self.result = None
        self.button.on_click(lambda _b: self.submit())
        super().__init__([title, choices, self.button, self.feedback])

    def chosen(self) -> set[int]:
        if self.boxes:
            return {i for i, box in enumerate(self.boxes) if box.value}
        return set() if self.radio.value is None else {self.radio.value}

    def submit(self):
        """Check the current answer and show why (what a click on "Valider" does)."""
        self.result = self.question.check(self.chosen())
        colour = "#1b7f3b" if self.result.correct else "#b00020"
        self.feedback.value = (f"<div style='color:{colour};white-space:pre-wrap'>"
                               f"{html.escape(str(self.result))}</div>")
        return self.result


def quiz(question) -> Quiz:
    """The clickable form of a :class:`labmail.quiz.Question`."""
    return Quiz(question)
