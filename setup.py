"""The one thing pyproject.toml cannot say: compile poolwatch's hot path with Cython.

``exporter/poolwatch/core/hotpath.py`` is copied to ``poolwatch.core._hotpath`` (with the source's
digest appended, so a build left over from an older source is never used, see
``poolwatch/core/build.py``) and compiled. The extension is optional: on PyPy, without a C
compiler, or with ``POOLWATCH_PURE_PYTHON=1`` set at install time, poolwatch installs and runs
the same source interpreted.
"""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

from setuptools import Extension, setup

SOURCE = Path("exporter/poolwatch/core/hotpath.py")
GENERATED = Path("build/cython/poolwatch/core/_hotpath.py")


def _pure_python() -> bool:
    # The values poolwatch accepts at run time (poolwatch.core.build.pure_python_requested).
    return os.environ.get("POOLWATCH_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on")


def extensions() -> list[Extension]:
    if _pure_python():
        return []
    if platform.python_implementation() != "CPython":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    source = SOURCE.read_bytes()
    GENERATED.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(source).hexdigest()
    GENERATED.write_bytes(source + f'\nSOURCE_SHA256 = "{digest}"\n'.encode())
    return cythonize(
        [Extension("poolwatch.core._hotpath", [str(GENERATED)], optional=True)],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )


setup(ext_modules=extensions())
