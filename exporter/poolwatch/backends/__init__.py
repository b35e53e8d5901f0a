"""Where the numbers go: Prometheus (``prometheus/``) and OpenTelemetry (``otel/``). Backends
depend on the core, never on a source."""
