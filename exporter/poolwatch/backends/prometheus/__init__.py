"""The Prometheus backend (prometheus_client registries, poolwatch's histograms, the exporter)."""
