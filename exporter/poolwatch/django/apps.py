"""The app ``"poolwatch.django"`` in INSTALLED_APPS names (found by Django as ``apps.py``)."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["PoolwatchConfig"]


class PoolwatchConfig(AppConfig):  # type: ignore[misc]
    name = "poolwatch.django"
    label = "poolwatch"
    verbose_name = "poolwatch"

    def ready(self) -> None:
        from poolwatch.django import install

        install()
