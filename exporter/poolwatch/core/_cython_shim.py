"""What :mod:`poolwatch.core.hotpath` uses of the ``cython`` module, for when Cython is not
installed.

Cython is needed to build the compiled module, not to run poolwatch. Interpreted, the decorators
change nothing, a declared attribute is an ordinary class attribute holding its default, and the
type annotations are never evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

T = TypeVar("T")

compiled = False
bint = bool
double = float
longlong = int
Py_ssize_t = int
void: TypeAlias = None
# Pointers exist only compiled: code using them runs under ``if cython.compiled``.
p_double: TypeAlias = Any
p_Py_ssize_t: TypeAlias = Any
NULL: Any = None


def final(cls: T) -> T:
    return cls


def cclass(cls: T) -> T:
    return cls


def declare(kind: Any, value: Any = None, **options: Any) -> Any:
    return value


def _keep(function: T) -> T:
    return function


cfunc = _keep
ccall = _keep
inline = _keep


def exceptval(value: Any = None, *, check: bool = True) -> Callable[[T], T]:
    return _keep


def boundscheck(on: bool) -> Callable[[T], T]:
    return _keep


def wraparound(on: bool) -> Callable[[T], T]:
    return _keep


def cast(kind: Any, value: Any) -> Any:
    return value


def sizeof(kind: Any) -> int:
    raise NotImplementedError("cython.sizeof: compiled only")


def PyMem_Realloc(pointer: Any, size: int) -> Any:  # the C API's name
    raise NotImplementedError("PyMem_Realloc: compiled only")


def PyMem_Free(pointer: Any) -> None:
    raise NotImplementedError("PyMem_Free: compiled only")
