"""The OpenTelemetry backend: metrics through a MeterProvider, wait spans, exemplars."""
