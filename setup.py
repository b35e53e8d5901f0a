"""What pyproject.toml cannot say: compile poolwatch's hot path with Cython, and put the alert
rules and dashboards into the package.

``exporter/poolwatch/core/hotpath.py`` is compiled as ``poolwatch.core._hotpath``, from a copy
with the source's digest appended (so a build left over from an older source is never used, see
``poolwatch/core/build.py``). The copy lives in the build's temporary directory, under the
source's own package-relative path, and Cython runs from there: the file name it records for
tracebacks is then ``poolwatch/core/hotpath.py``, which Python's ``linecache`` finds on ``sys.path``
(the installed source, same line numbers), instead of a build path the user does not have. The
module is stripped (no debug info). It is optional: on PyPy, without a C compiler or Cython,
or with ``POOLWATCH_PURE_PYTHON=1`` set at install time, poolwatch installs and runs the same
source interpreted.

``alerts/poolwatch.rules.yml`` and ``dashboards/*.json`` are copied into the built package as
``poolwatch/_assets/`` (``poolwatch rules`` and ``poolwatch dashboards`` write them out), so
git holds them once.

Nothing is written into the source tree but what setuptools itself insists on, and that is
removed again (the ``*.egg-info`` directory an sdist or metadata step makes).
"""

from __future__ import annotations

import atexit
import hashlib
import os
import platform
import shutil
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

PACKAGE_ROOT = Path("exporter")
SOURCE = PACKAGE_ROOT / "poolwatch" / "core" / "hotpath.py"
MODULE = "poolwatch.core._hotpath"
ASSETS = {"alerts": ["alerts/poolwatch.rules.yml"], "dashboards": ["dashboards/*.json"]}
ASSETS_DIR = Path("poolwatch") / "_assets"
EGG_INFO = PACKAGE_ROOT / "poolwatch.egg-info"


def _pure_python() -> bool:
    # The values poolwatch accepts at run time (poolwatch.core.build.pure_python_requested).
    return os.environ.get("POOLWATCH_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on")


def _strip_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags that leave the debug info out (2 MB of the module's 2.1)."""
    if sys.platform == "win32":
        return [], []  # MSVC writes debug info to a separate .pdb only when asked
    link = ["-s"] if sys.platform.startswith(("linux", "freebsd")) else []
    return ["-g0"], link


def extensions() -> list[Extension]:
    if _pure_python() or platform.python_implementation() != "CPython":
        return []
    compile_args, link_args = _strip_flags()
    # The source is replaced by the generated C file in BuildExt.build_extension.
    return [
        Extension(
            MODULE,
            [str(SOURCE)],
            optional=True,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if ext.name == MODULE:
            ext.sources = [self._cythonize()]
        super().build_extension(ext)

    def _cythonize(self) -> str:
        from distutils.errors import CompileError

        try:
            from Cython.Build import cythonize
        except ImportError as e:  # optional: the interpreted hot path runs instead
            raise CompileError(f"Cython is not installed ({e})") from e
        source = SOURCE.read_bytes()
        root = Path(self.build_temp).resolve() / "cython"
        relative = SOURCE.relative_to(PACKAGE_ROOT)  # poolwatch/core/hotpath.py
        generated = root / relative
        generated.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(source).hexdigest()
        # Appended, so every line keeps its number in tracebacks.
        generated.write_bytes(source + f'\nSOURCE_SHA256 = "{digest}"\n'.encode())
        here = os.getcwd()
        os.chdir(root)  # Cython records the source's path relative to the working directory
        try:
            (compiled,) = cythonize(
                [Extension(MODULE, [str(relative)])],
                # The interpreted branches of ``if cython.compiled:`` are unreachable here.
                compiler_directives={"language_level": "3", "warn.unreachable": False},
                quiet=True,
                force=True,
            )
        except Exception as e:
            raise CompileError(f"Cython failed on {SOURCE}: {e}") from e
        finally:
            os.chdir(here)
        c_file = root / compiled.sources[0]
        # Relative where it can be, so the object file lands beside it in build_temp.
        return os.path.relpath(c_file) if c_file.is_relative_to(Path.cwd()) else str(c_file)


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads them from the source tree (poolwatch.assets)
        for kind, patterns in ASSETS.items():
            target = Path(self.build_lib) / ASSETS_DIR / kind
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                matches = sorted(Path().glob(pattern))
                if not matches:
                    raise FileNotFoundError(f"setup.py: no {pattern} to package")
                for path in matches:
                    shutil.copyfile(path, target / path.name)


def _remove_egg_info_at_exit() -> None:
    """setuptools writes ``exporter/poolwatch.egg-info`` for an sdist or a metadata query, and
    has no option to put it elsewhere that its sdist would still include: take it away again
    when this build step's process ends, unless it was there before."""
    if EGG_INFO.exists():
        return
    at = EGG_INFO.resolve()
    atexit.register(shutil.rmtree, at, ignore_errors=True)


_remove_egg_info_at_exit()
setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
