"""Shared CLI plumbing: logging set-up and turning known errors into clean one-line failures."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import click

from linewatch.bundle import BundleError
from linewatch.config import ConfigError
from linewatch.data import DataError
from linewatch.features.weights import WeightsError

USER_ERRORS = (BundleError, ConfigError, DataError, WeightsError, ValueError, FileNotFoundError)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input as `Error: ...` with exit code 2 instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
