"""Shared CLI plumbing: logging set-up and turning user errors into clean one-line failures."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from linewatch.errors import LinewatchError

USER_ERROR_EXIT = 2  # the status click gives usage errors too: "the command was asked something it cannot do"


class UserError(click.ClickException):
    """A LinewatchError as click reports it: `Error: <message>` on stderr, exit status 2."""

    exit_code = USER_ERROR_EXIT


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report a LinewatchError as one line with exit status 2; any other exception is a bug and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LinewatchError as exc:
            raise UserError(" ".join(str(exc).split()) or type(exc).__name__) from exc

    return wrapper
