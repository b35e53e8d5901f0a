"""OpenTelemetry traces: a span for each checkout that waited, exemplars, and the redacting tracer
that sources hand to statement instrumentations.

The wait span has no name in the semantic conventions (they define only the
``db.client.connection.wait_time`` metric), so it takes the metric's name without the unit
suffix, ``db.client.connection.wait``, and the conventions' pool attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
    from opentelemetry.util.types import AnyValue, Attributes
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "poolwatch: tracing needs OpenTelemetry; install it with pip install 'poolwatch[otel]' "
        "(or pass tracing=False / POOLWATCH_TRACING=false)"
    ) from e

if TYPE_CHECKING:
    from opentelemetry.util._decorator import _AgnosticContextManager

from poolwatch.core.settings import Settings
from poolwatch.core.version import __version__
from poolwatch.sql.error_types import classify_connection_error, classify_error
from poolwatch.sql.redact import redact_sql

__all__ = [
    "POOL_NAME_ATTRIBUTE",
    "WAIT_SPAN_NAME",
    "WAIT_TIME_ATTRIBUTE",
    "RedactingTracer",
    "Tracing",
    "current_exemplar",
    "exception_type",
    "record_error",
]

WAIT_SPAN_NAME = "db.client.connection.wait"
POOL_NAME_ATTRIBUTE = "db.client.connection.pool.name"
WAIT_TIME_ATTRIBUTE = "poolwatch.connection.wait_time"
"""Seconds the checkout waited (the span's duration, as a number a backend can filter on)."""

# Statement text attributes of the old and the stable database conventions.
_STATEMENT_ATTRIBUTES = frozenset({"db.statement", "db.query.text"})
# EngineTracer writes the span name (first word of the SQL + database) into these as well.
_OPERATION_ATTRIBUTES = frozenset({"db.operation", "db.operation.name"})
# Never exported: the user name (old conventions) and bound values (opt-in in the conventions).
_DROPPED_ATTRIBUTES = frozenset({"db.user"})
_DROPPED_PREFIXES = ("db.query.parameter.",)
# Redacted statements remembered; past this the cache starts over (bounded memory).
_CACHE_SIZE = 2000


def _instrumentation_enabled() -> Callable[[], bool]:
    try:
        from opentelemetry.instrumentation.utils import is_instrumentation_enabled
    except ImportError:  # opentelemetry-instrumentation not installed: nothing can suppress us
        return lambda: True
    return is_instrumentation_enabled


_enabled = _instrumentation_enabled()


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` of the current sampled span, else None (two context lookups;
    called on every observation when exemplars are on)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.trace_flags.sampled:  # also false for the invalid "no span" context
        return None
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def exception_type(error: BaseException) -> str:
    """The fully qualified class name, as the OpenTelemetry SDK writes ``exception.type``."""
    cls = type(error)
    module = cls.__module__
    return f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__


def record_error(span: trace.Span, error: BaseException) -> None:
    """An ``exception`` event with ``exception.type`` only. ``Span.record_exception`` would also
    write ``exception.message`` and ``exception.stacktrace``, and the traceback text carries the
    message again: a driver's connect error names the user (``FATAL: role "bob" does not
    exist``), a statement error quotes row values."""
    span.add_event("exception", {"exception.type": exception_type(error)})


class Tracing:
    """One pool's tracing: wait spans (``on_wait``), statement spans (``install``), exemplars."""

    def __init__(self, pool_name: str, settings: Settings, tracer_provider: Any = None) -> None:
        self.pool_name = pool_name
        self.threshold = settings.wait_span_threshold
        self._provider = tracer_provider
        self._tracer = trace.get_tracer("poolwatch", __version__, tracer_provider)
        self._attributes: dict[str, AnyValue] = {POOL_NAME_ATTRIBUTE: pool_name}
        self._active = True
        self.timeout_errors: tuple[type[BaseException], ...] = ()
        """The pool library's timeout exceptions (their messages carry only the pool's settings);
        set by the source."""

    @property
    def provider(self) -> Any:
        return self._provider

    def add_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        # A new dict, not an update: a checkout on another thread may be reading the old one.
        self._attributes = {**self._attributes, **attributes}

    def stop(self) -> None:
        """Later waits record no span."""
        self._active = False

    exemplar = staticmethod(current_exemplar)

    # -- wait spans ---------------------------------------------------------------------------
    def on_wait(self, t0: float, t1: float, error: BaseException | None) -> None:
        """Called by the pool wrapper after every checkout with ``perf_counter`` start and end."""
        waited = t1 - t0
        if error is None and waited < self.threshold:
            return
        if not self._active or not _enabled():
            return
        # perf_counter has no epoch; anchor both ends on one reading of each clock, now.
        now_ns = time.time_ns()
        now = time.perf_counter()
        start_ns = now_ns - int((now - t0) * 1e9)
        end_ns = now_ns - int((now - t1) * 1e9)
        # Child of the current span (the request), so its trace shows the wait.
        span = self._tracer.start_span(
            WAIT_SPAN_NAME,
            kind=SpanKind.INTERNAL,
            attributes=self._attributes,
            start_time=start_ns,
            record_exception=False,
            set_status_on_exception=False,
        )
        try:
            if span.is_recording():
                span.set_attribute(WAIT_TIME_ATTRIBUTE, waited)
                if error is not None:
                    self._failed(span, error)
        finally:
            span.end(end_time=end_ns)

    def _failed(self, span: trace.Span, error: BaseException) -> None:
        timed_out = isinstance(error, self.timeout_errors)
        try:
            # The pool's own timeout keeps its class name, apart from a connect timeout.
            error_type = classify_error(error) if timed_out else classify_connection_error(error)
        except Exception:  # a type name is good enough
            error_type = type(error).__qualname__
        span.set_attribute("error.type", error_type)
        if timed_out:
            span.set_status(Status(StatusCode.ERROR, "connection pool timeout"))
        else:
            span.set_status(Status(StatusCode.ERROR))
        record_error(span, error)


class _Redactor:
    """Redacted statement text and span names, cached by the original string."""

    def __init__(self, dialect: str | None = None) -> None:
        # Which readings of quotes and comments redact_sql must agree on (a dialect name).
        self._dialect = dialect
        self._statements: dict[str, str] = {}
        self._names: dict[str, str] = {}

    def statement(self, value: AnyValue) -> AnyValue:
        if not isinstance(value, str):
            return value if value is None else redact_sql(str(value), dialect=self._dialect)
        out = self._statements.get(value)
        if out is None:
            out = redact_sql(value, dialect=self._dialect)
            if len(self._statements) >= _CACHE_SIZE:
                self._statements.clear()
            self._statements[value] = out
        return out

    def name(self, name: str) -> str:
        # EngineTracer names the span "<first word of the SQL> <database>"; the first word of
        # "SELECT'secret'" would carry the literal, so keep its leading letters only.
        out = self._names.get(name)
        if out is None:
            first, _, rest = name.partition(" ")
            keep = ""
            for ch in first:
                if not (ch.isalpha() or ch == "_"):
                    break
                keep += ch
            out = f"{keep} {rest}".strip() if keep != first else name
            if len(self._names) >= _CACHE_SIZE:
                self._names.clear()
            self._names[name] = out or "sql"
        return out or "sql"

    def attributes(self, attributes: Attributes) -> dict[str, AnyValue] | None:
        if not attributes:
            return None
        out: dict[str, AnyValue] = {}
        for key, value in attributes.items():
            if key in _DROPPED_ATTRIBUTES or key.startswith(_DROPPED_PREFIXES):
                continue
            out[key] = self.value(key, value)
        return out

    def value(self, key: str, value: AnyValue) -> AnyValue:
        if key in _STATEMENT_ATTRIBUTES:
            return self.statement(value)
        if key in _OPERATION_ATTRIBUTES and isinstance(value, str):
            return self.name(value)
        return value


class RedactingTracer(trace.Tracer):
    """Hands EngineTracer spans that redact what it writes into them."""

    def __init__(self, tracer: trace.Tracer, dialect: str | None = None) -> None:
        self._tracer = tracer
        self._redactor = _Redactor(dialect)

    def start_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        r = self._redactor
        span = self._tracer.start_span(
            r.name(name), context, kind, r.attributes(attributes), links, start_time,
            record_exception, set_status_on_exception,
        )  # fmt: skip
        if not span.is_recording():
            return span  # sampled out: nothing will be written, no wrapper needed
        return _RedactingSpan(span, r)

    def start_as_current_span(
        self,
        name: str,
        context: Any = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> _AgnosticContextManager[trace.Span]:
        # Not called by EngineTracer; here because the Tracer interface requires it.
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception,
            set_status_on_exception,
        )  # fmt: skip
        return trace.use_span(span, end_on_exit, record_exception, set_status_on_exception)


class _RedactingSpan(trace.Span):
    __slots__ = ("_r", "_span")

    def __init__(self, span: trace.Span, redactor: _Redactor) -> None:
        self._span = span
        self._r = redactor

    def end(self, end_time: int | None = None) -> None:
        self._span.end(end_time)

    def get_span_context(self) -> trace.SpanContext:
        return self._span.get_span_context()

    def set_attributes(self, attributes: Mapping[str, AnyValue]) -> None:
        clean = self._r.attributes(attributes)
        if clean:
            self._span.set_attributes(clean)

    def set_attribute(self, key: str, value: AnyValue) -> None:
        if key in _DROPPED_ATTRIBUTES or key.startswith(_DROPPED_PREFIXES):
            return
        self._span.set_attribute(key, self._r.value(key, value))

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        self._span.add_event(name, self._r.attributes(attributes), timestamp)

    def add_link(self, context: trace.SpanContext, attributes: Attributes = None) -> None:
        self._span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self._span.update_name(self._r.name(name))

    def is_recording(self) -> bool:
        return self._span.is_recording()

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # EngineTracer puts str(exception) here; a database error quotes the offending values
        # ("Key (email)=(...) already exists"), so only the status code is kept.
        code = status.status_code if isinstance(status, Status) else status
        self._span.set_status(Status(code))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        # The type only (see record_error); the caller's attributes are dropped with the rest,
        # since they are written for the event the SDK would have made.
        self._span.add_event("exception", {"exception.type": exception_type(exception)}, timestamp)

    def __getattr__(self, name: str) -> Any:
        # SDK-only attributes (name, attributes, ...) for code that inspects live spans.
        if name in ("_span", "_r"):
            raise AttributeError(name)
        return getattr(self._span, name)
