"""The package a user installs: metadata, license, contents, a clean build, the rules and
dashboards it ships, and tracebacks through its compiled hot path."""

from __future__ import annotations

import email.parser
import json
import linecache
import os
import shutil
import subprocess
import sys
import tarfile
import traceback
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
from packaging.requirements import Requirement
from packaging.version import Version
from sqlalchemy import text
from trove_classifiers import classifiers as known_classifiers

import poolwatch
from poolwatch import assets, cli
from poolwatch.core import hotpath
from tests.support.builds import use_build
from tests.support.dashboards import schema_errors
from tests.support.services import prometheus_binary

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
BASE_URL = "https://github.com/poolwatch/poolwatch"


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=30
    ).stdout.decode()
    return sorted(p for p in out.split("\0") if p and (REPO / p).is_file())


# --- metadata, without building ------------------------------------------------------------


def test_classifiers_are_pypis_and_urls_share_the_runbook_links_base() -> None:
    project = PYPROJECT["project"]
    assert [c for c in project["classifiers"] if c not in known_classifiers] == []
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert all(url.startswith(BASE_URL) for url in project["urls"].values())
    runbooks = [
        line.split('"')[1]
        for line in (REPO / "alerts/poolwatch.rules.yml").read_text().splitlines()
        if "runbook_url:" in line
    ]
    assert runbooks and all(url.startswith(f"{BASE_URL}/blob/main/docs/runbooks.md#") for url in runbooks)
    assert "Apache License" in (REPO / "LICENSE").read_text().splitlines()[1]


def test_the_changelog_has_an_unreleased_section_and_this_version() -> None:
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{poolwatch.__version__}] - " in changelog
    assert PYPROJECT["project"]["version"] == poolwatch.__version__


def test_the_pinned_build_tools_satisfy_the_build_requirements() -> None:
    """The package test builds without isolation, with the pinned setuptools and Cython:
    they must be versions the isolated build would accept too."""
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = Version(version)
    for requirement in map(Requirement, PYPROJECT["build-system"]["requires"]):
        assert requirement.specifier.contains(pins[requirement.name.lower()]), requirement
    assert "build" in pins


def test_the_readme_links_only_files_of_the_repository() -> None:
    readme = (REPO / "README.md").read_text()
    assert "../shared/" not in readme
    assert "(docs/metrics-contract.md)" in readme and (REPO / "docs/metrics-contract.md").is_file()


# --- the rules and dashboards it ships ------------------------------------------------------


def test_poolwatch_rules_without_a_selector_writes_the_repositorys_rules(tmp_path: Path) -> None:
    assert cli.main(["rules", "-o", str(tmp_path / "rules.yml")]) == 0
    assert (tmp_path / "rules.yml").read_bytes() == (REPO / "alerts/poolwatch.rules.yml").read_bytes()


def _alert_unit_tests(tmp_path: Path, selector: str) -> subprocess.CompletedProcess[str]:
    assert cli.main(["rules", "--job-selector", selector, "-o", str(tmp_path / "poolwatch.rules.yml")]) == 0
    shutil.copytree(REPO / "alerts/tests", tmp_path / "tests")
    promtool = prometheus_binary("promtool")
    check = subprocess.run(
        [promtool, "check", "rules", "poolwatch.rules.yml"], cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run(
        [promtool, "test", "rules", *sorted(p.name for p in (tmp_path / "tests").glob("*.yml"))],
        cwd=tmp_path / "tests", capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _test_jobs() -> list[str]:
    """The jobs of the alert unit tests' series."""
    import re

    text = "".join(p.read_text() for p in (REPO / "alerts/tests").glob("*.yml"))
    return sorted(set(re.findall(r'job="([^"]+)"', text)))


def test_rules_with_the_tests_job_selector_pass_every_alert_unit_test(tmp_path: Path) -> None:
    jobs = _test_jobs()
    assert "shop" in jobs
    selector = f'job=~"{"|".join(jobs)}"'  # every job of the tests' series
    result = _alert_unit_tests(tmp_path, selector)
    assert result.returncode == 0, result.stdout + result.stderr
    rules = (tmp_path / "poolwatch.rules.yml").read_text()
    assert f'db_client_connection_count{{{selector}, db_client_connection_state="used"}}' in rules
    assert f"expr: rate(db_client_connection_wait_time_seconds_count{{{selector}}}[5m])\n" in rules


def test_rules_with_another_job_selector_see_none_of_the_tests_series(tmp_path: Path) -> None:
    result = _alert_unit_tests(tmp_path, '{job=~"checkout|billing", env!="dev"}')
    assert result.returncode == 1
    assert "FAILED" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            "sum without (db_client_connection_state) (db_client_connection_count{db_client_connection_state=\"used\"})",
            'sum without (db_client_connection_state) (db_client_connection_count{job="a", db_client_connection_state="used"})',
        ),
        (
            "sum by (instance) (rate(poolwatch_connection_leaks_total[5m] offset 1m)) > bool 0 # db_client_x",
            'sum by (instance) (rate(poolwatch_connection_leaks_total{job="a"}[5m] offset 1m)) > bool 0 # db_client_x',
        ),
        (
            "pool:db_client_connection_used:sum / on (instance) group_left (role) up{}",
            'pool:db_client_connection_used:sum / on (instance) group_left (role) up{job="a"}',
        ),
        (
            'max_over_time(poolwatch_connections_leaked{x="{y}"}[10m:1m])',
            'max_over_time(poolwatch_connections_leaked{job="a", x="{y}"}[10m:1m])',
        ),
    ],
)
def test_the_job_selector_goes_into_every_raw_series_selector(expr: str, expected: str) -> None:
    assert assets.with_expression_selector(expr, 'job="a"') == expected


@pytest.mark.parametrize("selector", ["api", 'job="api"; drop', "job=api", 'job="a"}{', ""])
def test_a_bad_job_selector_is_refused_naming_the_setting(selector: str) -> None:
    with pytest.raises(ValueError, match=r"job_selector: .* PromQL matchers such as"):
        assets.rules(selector)


def test_poolwatch_dashboards_writes_every_dashboard_with_the_data_source(tmp_path: Path) -> None:
    assert cli.main(["dashboards", "--datasource", "Prom EU", "-o", str(tmp_path / "d")]) == 0
    written = sorted(p.name for p in (tmp_path / "d").iterdir())
    shipped = sorted(p.name for p in (REPO / "dashboards").glob("*.json"))
    assert written == shipped and len(shipped) >= 2
    for name in shipped:
        mine = json.loads((tmp_path / "d" / name).read_text())
        original = json.loads((REPO / "dashboards" / name).read_text())
        variables = [v for v in mine["templating"]["list"] if v["type"] == "datasource"]
        assert [v["current"] for v in variables] == [{"selected": True, "text": "Prom EU", "value": "Prom EU"}]
        assert schema_errors(mine) == []  # Grafana's published dashboard schema
        for v in variables:
            before = next(o for o in original["templating"]["list"] if o["name"] == v["name"])
            if "current" in before:
                v["current"] = before["current"]
            else:
                del v["current"]
        assert mine == original
    assert cli.main(["dashboards", "-o", str(tmp_path / "plain")]) == 0
    for name in shipped:
        assert (tmp_path / "plain" / name).read_bytes() == (REPO / "dashboards" / name).read_bytes()


# --- tracebacks through the compiled hot path ---------------------------------------------------


def test_a_failing_statements_traceback_names_the_installed_hotpath_source(
    engines, registry, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    use_build(monkeypatch, "compiled")
    engine = engines()
    poolwatch.instrument(engine, name="package-traceback", registry=registry)
    with engine.connect() as conn, pytest.raises(sqlalchemy.exc.DataError) as caught:
        conn.execute(text("SELECT 1/0"))
    frames = [f for f in traceback.extract_tb(caught.value.__traceback__) if "hotpath" in f.filename]
    assert frames, "the statement did not go through poolwatch's compiled wrapper"
    installed = Path(hotpath.__file__).resolve()
    source = installed.read_text().splitlines()
    for frame in frames:
        assert "build/" not in frame.filename
        found = [Path(d, frame.filename) for d in sys.path if Path(d, frame.filename).is_file()]
        assert found and found[0].resolve() == installed, frame.filename
        assert frame.lineno is not None
        assert frame.line == source[frame.lineno - 1].strip() != ""
    assert any(f.line == "result = original(cursor, statement, parameters, context)" for f in frames)
    linecache.clearcache()


# --- building it ----------------------------------------------------------------------------------


def _clean_copy(target: Path) -> None:
    """The tracked files as they are in the work tree, committed in a fresh repository."""
    for rel in _tracked():
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run([*git, "init", "-q"], cwd=target, check=True, timeout=30)
    subprocess.run([*git, "add", "-A"], cwd=target, check=True, timeout=30)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=target, check=True, timeout=30)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.scenario
def test_wheel_and_sdist_from_a_clean_copy(tmp_path: Path) -> None:
    src, dist, site = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    _clean_copy(src)
    env = {k: v for k, v in os.environ.items() if k != "POOLWATCH_PURE_PYTHON"}
    # Without isolation: the pinned setuptools, Cython and build of the test environment.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist)], src, env)

    # The source tree is exactly as it was: nothing generated, not even ignored files.
    status = _run(["git", "status", "--porcelain", "--ignored"], src)
    assert status == ""

    version = poolwatch.__version__
    (wheel,) = dist.glob(f"poolwatch-{version}-*.whl")
    (sdist,) = dist.glob(f"poolwatch-{version}.tar.gz")
    info = f"poolwatch-{version}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert zf.read(f"{info}/licenses/LICENSE") == (REPO / "LICENSE").read_bytes()
        metadata = email.parser.Parser().parsestr(zf.read(f"{info}/METADATA").decode())
        assert zf.read("poolwatch/_assets/alerts/poolwatch.rules.yml") == (REPO / "alerts/poolwatch.rules.yml").read_bytes()
        for dashboard in (REPO / "dashboards").glob("*.json"):
            assert zf.read(f"poolwatch/_assets/dashboards/{dashboard.name}") == dashboard.read_bytes()
        (compiled,) = [n for n in names if n.startswith("poolwatch/core/_hotpath.") and n.endswith(".so")]
        module = zf.read(compiled)
    assert {n for n in names if n.startswith("poolwatch/") and n.endswith(".py")} == {
        "poolwatch/" + p.relative_to(REPO / "exporter/poolwatch").as_posix()
        for p in (REPO / "exporter/poolwatch").rglob("*.py")
    }
    assert not any(n.startswith(("tests/", "build/", "exporter/")) for n in names)
    # Stripped (no symbol table, no DWARF), and its traceback file name is the package's.
    assert b".symtab" not in module and b".debug_info" not in module
    assert len(module) < 1_000_000
    assert b"poolwatch/core/hotpath.py" in module
    assert b"build/cython" not in module and str(src).encode() not in module

    assert metadata["Name"] == "poolwatch" and metadata["Version"] == version
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["Author"] == "The poolwatch authors"
    assert metadata.get_all("Classifier") == PYPROJECT["project"]["classifiers"]
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert urls == PYPROJECT["project"]["urls"]
    assert metadata["Requires-Python"] == ">=3.10"

    # The sdist holds every tracked file, and besides them only its own metadata.
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if m.isfile()}
        tf.extractall(tmp_path / "unpacked", filter="data")
    tracked = set(_tracked())
    assert tracked - members == set()
    assert {m for m in members - tracked if not m.startswith("exporter/poolwatch.egg-info/")} == {
        "PKG-INFO", "setup.cfg",
    }  # fmt: skip

    # pip show prints the license, from the installed wheel.
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)], tmp_path)
    shown = _run([sys.executable, "-m", "pip", "show", "poolwatch"], tmp_path, {**env, "PYTHONPATH": str(site)})
    assert f"Location: {site}" in shown
    assert "License-Expression: Apache-2.0" in shown

    # The sdist's own tests run, against the installed wheel (its compiled build included).
    unpacked = tmp_path / "unpacked" / f"poolwatch-{version}"
    out = _run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_error_types.py",
         "tests/test_apiref.py", "tests/test_alerts.py::test_promtool_check_rules",
         "tests/test_hotpath.py::test_the_compiled_build_is_installed_and_chosen",
         "tests/test_package.py::test_poolwatch_rules_without_a_selector_writes_the_repositorys_rules"],
        unpacked, {**env, "PYTHONPATH": f"{site}{os.pathsep}{unpacked}"},
    )  # fmt: skip
    assert " passed" in out and "failed" not in out and "skipped" not in out, out[-2000:]
    imported = _run(
        [sys.executable, "-c", "import poolwatch, poolwatch.core.build as b; print(poolwatch.__file__, b.COMPILED)"],
        tmp_path, {**env, "PYTHONPATH": str(site)},
    )  # fmt: skip
    assert imported.split() == [str(site / "poolwatch" / "__init__.py"), "True"]
