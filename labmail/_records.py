"""Building frozen dataclasses fast, for the parsers' hot paths.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` — a call per field, which is half
the time a parser's fast path spends building a Received hop or an Authentication-Results result. :func:`maker`
writes, once per class, a constructor that fills the instance's ``__dict__`` in one step (as :mod:`dataclasses`
writes ``__init__``): the object is the same — equal, hashable, still frozen — as long as every field is given, in
declaration order, and the class has no ``__post_init__`` nor ``__slots__``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def maker(cls: type[T]) -> Callable[..., T]:
    """A function ``new(*fields)`` giving what ``cls(*fields)`` gives, every field in order.

    >>> from labmail.authres import Property
    >>> new_property = maker(Property)
    >>> new_property("header", "d", "example.com", ()) == Property("header", "d", "example.com")
    True
    """
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if "__post_init__" in vars(cls) or "__slots__" in vars(cls):
        raise TypeError(f"{cls.__name__} has __post_init__ or __slots__: build it with its constructor")
    names = [f.name for f in dataclasses.fields(cls)]
    if any(n.startswith("__") for n in names):
        raise TypeError(f"{cls.__name__}: a field name starts with __")
    source = (f"def new_{cls.__name__}({', '.join(names)}):\n"  # the function's own names start with __: no field's
              f"    __made = __new(__cls)\n"
              f"    __made.__dict__.update({{{', '.join(f'{n!r}: {n}' for n in names)}}})\n"
              f"    return __made\n")
    namespace: dict[str, Any] = {}
    exec(source, {"__new": object.__new__, "__cls": cls}, namespace)  # noqa: S102 - field names are identifiers
    return namespace[f"new_{cls.__name__}"]
