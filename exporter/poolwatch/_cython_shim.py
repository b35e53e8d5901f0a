"""What :mod:`poolwatch.hotpath` uses of the ``cython`` module, for when Cython is not installed.

Cython is needed to build the compiled module, not to run poolwatch. Interpreted, the decorators
change nothing, a declared attribute is an ordinary class attribute holding its default, and the
type annotations are never evaluated.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

compiled = False
bint = bool
double = float


def final(cls: T) -> T:
    return cls


def cclass(cls: T) -> T:
    return cls


def declare(kind: Any, value: Any = None, **options: Any) -> Any:
    return value
