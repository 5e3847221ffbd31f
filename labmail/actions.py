"""What the notebook forms did in this kernel, as the code that does the same.

A form (the DNS panel, the mailbox form…) changes the world as a code cell would; grading re-executes the exercise's
code cell, not the form. The forms note here the code they stand for (:func:`note_form_action`) and a graded check
that passes reminds the student of it (:func:`form_actions`). Kept per kernel, in memory only.
"""

from __future__ import annotations

__all__ = ["note_form_action", "form_actions"]

_FORM_ACTIONS: list[str] = []


def note_form_action(code: str) -> None:
    """Remember, for this kernel, that a form changed the world — as the code that does the same. A graded check
    that then passes reminds the student that grading re-executes the exercise's code cell, not the form."""
    _FORM_ACTIONS.append(code)


def form_actions() -> list[str]:
    """The code equivalent of what the forms did in this kernel, oldest first."""
    return list(_FORM_ACTIONS)
