"""The base of every user-facing error (bad data, bundle, config, missing dependency): CLIs print one line."""

from __future__ import annotations


class LinewatchError(Exception):
    """A problem the user can fix; the message says what and how."""
