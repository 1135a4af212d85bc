"""The one exception type for bad input data, so CLIs can report it as a clean one-line error."""

from __future__ import annotations

from linewatch.errors import LinewatchError


class DataError(LinewatchError, ValueError):
    """Bad or missing input data; the message always names the offending file or folder."""
