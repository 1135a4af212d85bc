"""The base of every user-facing error, so the CLIs can tell bad input from a bug.

A `LinewatchError` means the user can fix it (bad data, bundle, config or message, a missing device or
package); its message names the thing and, where possible, the fix. The CLIs print it as one line and
exit with status 2. Any other exception is a bug and keeps its traceback. Subclasses live next to the
code they describe (`DataError` in `data`, `BundleError` in `bundle`, ...) and also derive from the
built-in type they replaced (ValueError, RuntimeError, OSError), so existing `except` clauses still hold.
"""

from __future__ import annotations


class LinewatchError(Exception):
    """A problem the user can fix; the message says what and where, and how where it can."""


class DeviceUnavailable(LinewatchError, RuntimeError):
    """A device asked for (a CUDA GPU) is not present on this machine."""
