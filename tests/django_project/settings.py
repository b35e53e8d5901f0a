"""A minimal Django project on the real PostgreSQL: two pooled aliases and one without a pool.
poolwatch is the one line in INSTALLED_APPS."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry
from sqlalchemy import make_url

_url = make_url(os.environ.get("POOLWATCH_TEST_PG",
                               "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
_db = {"ENGINE": "django.db.backends.postgresql", "NAME": _url.database, "USER": _url.username,
       "PASSWORD": _url.password or "", "HOST": _url.host, "PORT": str(_url.port or 5432)}

SECRET_KEY = "poolwatch-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "tests.django_project.urls"
INSTALLED_APPS = ["poolwatch.django"]
DATABASES = {
    "default": {**_db, "OPTIONS": {"pool": {"min_size": 1, "max_size": 3, "timeout": 5},
                                   "application_name": "pw-django-default"}},
    "replica": {**_db, "OPTIONS": {"pool": True, "application_name": "pw-django-replica"}},
    "direct": {**_db, "OPTIONS": {"application_name": "pw-django-direct"}},
}
# The tests read this registry; an application would leave it out (the default registry).
REGISTRY = CollectorRegistry()
POOLWATCH = {"registry": REGISTRY, "labels": {"role": "web"}}
