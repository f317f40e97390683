"""The store's one error type, and the wrappers that turn database failures into it.

Callers catch StateError and never import SQLAlchemy; the message names the operation and the
driver's first line, never a password or row data (parameters are hidden by the engine).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from goalkeeper.logs import first_line

P = ParamSpec("P")
R = TypeVar("R")


class StateError(Exception):
    """A database operation failed. The message holds no password and no row data."""


class StateUnavailable(StateError):
    """The store could not be opened. The message names the database without its password."""


def translated(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (SQLAlchemyError, OSError) as err:
            what = f"{method.__name__}: {type(err).__name__}: {first_line(err)}"
            raise StateError(what) from err

    return wrapper


@contextmanager
def translating(what: str) -> Iterator[None]:
    """What `translated` does, for the store's context managers."""
    try:
        yield
    except (SQLAlchemyError, OSError) as err:
        raise StateError(f"{what}: {type(err).__name__}: {first_line(err)}") from err
