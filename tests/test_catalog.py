"""The metric catalog is the one definition: README's reference and both backends follow it."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

import poolwatch
from poolwatch.core.catalog import CATALOG, prometheus_name, reference_table
from poolwatch.exposition import generate_latest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_metrics_reference_is_the_catalog() -> None:
    body = README.read_text()
    m = re.search(r"<!-- metrics-reference:[^>]*-->\n(.*?)<!-- /metrics-reference -->", body, re.S)
    assert m is not None, "README lost its metrics-reference markers"
    assert m.group(1) == reference_table()


def test_prometheus_names_are_the_otel_names_translated() -> None:
    for metric in CATALOG:
        assert metric.prometheus == prometheus_name(metric.otel, metric.unit)
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", metric.prometheus)
    assert len({m.prometheus for m in CATALOG}) == len(CATALOG)
    assert len({m.key for m in CATALOG}) == len(CATALOG)


def test_a_scrape_has_exactly_the_catalog_families() -> None:
    registry = CollectorRegistry()
    engine = create_engine("sqlite://")
    handle = poolwatch.instrument(engine, name="catalog", registry=registry, leak_threshold=60)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        families = {
            f.name: f.type
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            if not f.name.endswith("_created")  # prometheus_client's, beside each counter
        }
        expected = {m.prometheus: ("counter" if m.kind == "counter" else m.kind) for m in CATALOG}
        assert families == expected
    finally:
        handle.uninstrument()
        engine.dispose()
