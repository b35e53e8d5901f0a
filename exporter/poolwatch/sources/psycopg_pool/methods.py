"""The cursor methods poolwatch observes besides the compiled ``execute``: ``executemany``, a
server-side cursor's ``execute``, ``stream()`` and ``copy()``, sync and async.

Each is built from a ``begin(query) -> token`` and a ``finish(token, query, error)`` pair, so the
statement timing (:mod:`.statements`) and the spans (:mod:`.tracing`) observe the same span of
time. A token of None means "not observed" (poolwatch switched off, or ``begin`` failed), and
``finish`` is still called with it. These are off the per-statement hot path (one call for many
rows or a whole COPY), hence plain Python, arguments passed on as given.

What "duration" means for the two that do not end when they return: ``stream()`` from its first
row asked for (the query is sent then) to the end of the iteration: the last row, an error, or
the iterator closed early (``break``, which is not an error); ``copy()`` from entering its block
(the ``COPY`` sent) to leaving it (the copy finished at the server). Both include the time the
application spends between rows or writes, as the caller sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

__all__ = ["Begin", "Finish", "observed_call", "observed_copy", "observed_stream"]

Begin = Callable[[Any], Any]
Finish = Callable[[Any, Any, "BaseException | None"], None]


def observed_call(
    original: Callable[..., Any], begin: Begin, finish: Finish, *, is_async: bool
) -> Callable[..., Any]:
    """A method that runs its statement when called (``executemany``, a server cursor's
    ``execute``, which declares the cursor: its fetches are the rows read, as for any cursor)."""
    if is_async:

        async def call_async(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            token = begin(query)
            try:
                result = await original(cursor, query, *args, **kwargs)
            except BaseException as e:
                finish(token, query, e)
                raise
            finish(token, query, None)
            return result

        return call_async

    def call(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        token = begin(query)
        try:
            result = original(cursor, query, *args, **kwargs)
        except BaseException as e:
            finish(token, query, e)
            raise
        finish(token, query, None)
        return result

    return call


def observed_stream(
    original: Callable[..., Any], begin: Begin, finish: Finish, *, is_async: bool
) -> Callable[..., Any]:
    """``stream()``: observed from the first row asked for to the end of the iteration."""
    if is_async:

        async def stream_async(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            rows: Any = original(cursor, query, *args, **kwargs)
            token = begin(query)
            error: BaseException | None = None
            try:
                async for row in rows:
                    yield row
            except GeneratorExit:
                raise  # closed early: not an error
            except BaseException as e:
                error = e
                raise
            finally:
                try:
                    # An async generator is not closed by the loop that left it: psycopg's own
                    # clean-up (cancel the query, read what is left) is part of the stream.
                    await rows.aclose()
                finally:
                    finish(token, query, error)

        return stream_async

    def stream(cursor: Any, query: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        token = begin(query)
        try:
            # ``yield from`` hands close() and throw() on to psycopg's generator.
            yield from original(cursor, query, *args, **kwargs)
        except GeneratorExit:
            finish(token, query, None)  # closed early: not an error
            raise
        except BaseException as e:
            finish(token, query, e)
            raise
        finish(token, query, None)

    return stream


def observed_copy(
    original: Callable[..., Any], begin: Begin, finish: Finish, *, is_async: bool
) -> Callable[..., Any]:
    """``copy()``: observed from entering its block to leaving it."""
    if is_async:

        @asynccontextmanager
        async def copy_async(cursor: Any, statement: Any, *args: Any, **kwargs: Any
                             ) -> AsyncIterator[Any]:  # fmt: skip
            token = begin(statement)
            try:
                async with original(cursor, statement, *args, **kwargs) as copy:
                    yield copy
            except BaseException as e:
                finish(token, statement, e)
                raise
            finish(token, statement, None)

        return copy_async

    @contextmanager
    def copy(cursor: Any, statement: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        token = begin(statement)
        try:
            with original(cursor, statement, *args, **kwargs) as copy:
                yield copy
        except BaseException as e:
            finish(token, statement, e)
            raise
        finish(token, statement, None)

    return copy
