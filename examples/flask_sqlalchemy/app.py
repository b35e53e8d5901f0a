"""Flask + Flask-SQLAlchemy, instrumented by poolwatch, with /metrics on the same server.

    DATABASE_URL=postgresql+psycopg://app@db/orders flask --app app run

Flask-SQLAlchemy builds its engine inside ``SQLAlchemy(app)``, but ``db.engine`` only answers
inside an application context: the literal one line ``poolwatch.instrument(db.engine)`` at
module level raises ``RuntimeError: Working outside of application context``. Instrument it
once, at startup, inside one (below). With an application factory, do the same in
``create_app()`` right after ``db.init_app(app)``. With binds, instrument each of
``db.engines.values()`` under its own name.
"""

from __future__ import annotations

import os

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import text
from werkzeug.middleware.dispatcher import DispatcherMiddleware

import poolwatch
from poolwatch.exposition import make_wsgi_app

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1/postgres"
)
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_size": 5, "max_overflow": 5, "pool_timeout": 10}
db = SQLAlchemy(app)

with app.app_context():
    poolwatch.instrument(db.engine, name="orders")

# /metrics with poolwatch's exposition (prometheus_client's default registry, where
# instrument() put the series); every other path goes to the Flask app.
app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})  # type: ignore[method-assign]


@app.get("/connections")
def server_connections() -> dict[str, int]:
    count = db.session.execute(text("SELECT count(*) FROM pg_stat_activity")).scalar_one()
    return {"connections": count}
