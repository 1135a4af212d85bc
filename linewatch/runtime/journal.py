"""Durable verdict log: every header as one JSON line, written and flushed before it is published.

PUB drops messages when nobody listens; the journal is the record that survives that. Each line goes
to the file in one `write` on an O_APPEND descriptor, and a line the disk could only partly take is cut
off again, so the file holds whole lines only; a line torn by a crash (power loss) is cut off when the
journal is next opened. It also remembers the last `seq`, so a restarted runtime continues the count.

When a line cannot be written (disk full, file-size limit, I/O error) the journal either raises
`JournalError` (`on_error="stop"`: a line that cannot record its verdicts must not pretend to) or
counts the lost lines and keeps trying (`"continue"`), logging when writing fails and when it recovers.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from linewatch.errors import LinewatchError
from linewatch.runtime.messages import encode_json

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("stop", "continue")
_TAIL_CHUNK = 1 << 16  # bytes read at a time when looking for the last line
_TAIL_LIMIT = 1 << 24  # bytes read at most from the end to find the last seq (once a newline is found)


class JournalError(LinewatchError, OSError):
    """The journal file cannot be written; the message names the file and the reason (disk full, ...)."""


def _reason(exc: OSError) -> str:
    names = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file-size limit is reached",
             errno.EDQUOT: "the disk quota is exhausted"}
    return names.get(exc.errno or 0, exc.strerror or str(exc))


def _seq(line: bytes) -> int | None:
    try:
        seq = json.loads(line).get("seq")
    except (ValueError, AttributeError, RecursionError):
        return None
    return seq if isinstance(seq, int) else None


def _scan_tail(fd: int, size: int) -> tuple[int, int | None]:
    """(offset just after the last newline, ``seq`` of the last whole JSON line), reading backwards in chunks."""
    start, data, whole = size, b"", None
    while start > 0 and (whole is None or size - start < _TAIL_LIMIT):
        step = max(0, start - _TAIL_CHUNK)
        data = os.pread(fd, start - step, step) + data
        start = step
        if whole is None:
            if (cut := data.rfind(b"\n")) < 0:
                continue
            whole, data = start + cut + 1, data[: cut + 1]
        lines = data.split(b"\n")[:-1]
        for line in reversed(lines if start == 0 else lines[1:]):  # the first piece may be cut off
            if (seq := _seq(line)) is not None:
                return whole, seq
    return whole or 0, None


class Journal:
    """Append-only JSON-lines file; ``fsync=True`` also survives power loss, at a per-line cost."""

    def __init__(self, path: str | Path, fsync: bool = False, on_error: str = "stop") -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.path = Path(path)
        self.fsync = fsync
        self.on_error = on_error
        self.written = 0  # lines written by this process
        self.lost = 0  # verdicts that could not be journalled (on_error="continue")
        self.failing: str | None = None  # the reason while writes fail
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            self._size = os.fstat(self._fd).st_size
            whole, last = _scan_tail(self._fd, self._size)
        except OSError as exc:
            raise JournalError(f"journal {self.path}: cannot open ({_reason(exc)})") from exc
        if whole < self._size:
            log.warning("journal %s: removing %d byte(s) of a line torn by a crash", self.path, self._size - whole)
            os.ftruncate(self._fd, whole)
            self._size = whole
        self.next_seq = 0 if last is None else last + 1  # the publisher continues from here after a restart

    def write(self, header: dict[str, Any]) -> bool:
        """Append one line; False when it was lost under ``on_error="continue"`` (raises under "stop")."""
        line = encode_json(header) + b"\n"
        try:
            done = 0
            while done < len(line):
                written = os.write(self._fd, line[done:])
                if written == 0:
                    raise OSError(errno.ENOSPC, "no byte written")
                done += written
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            self._undo_partial()
            return self._failed(exc, header)
        self._size += len(line)
        self.written += 1
        if self.failing is not None:
            log.warning("journal %s: writing again after %d lost line(s)", self.path, self.lost)
            self.failing = None
        return True

    def _undo_partial(self) -> None:
        """Cut off what a failed write left, so the file still ends with a whole line."""
        try:
            if os.fstat(self._fd).st_size > self._size:
                os.ftruncate(self._fd, self._size)
        except OSError as exc:
            log.error("journal %s: could not remove a partly written line (%s)", self.path, exc)

    def _failed(self, exc: OSError, header: dict[str, Any]) -> bool:
        reason = _reason(exc)
        message = (f"journal {self.path}: cannot write verdict seq {header.get('seq')} ({reason}) after "
                   f"{self._size:,} bytes")
        if self.on_error == "stop":
            raise JournalError(f"{message}; stopping (--on-journal-error stop): free space or move the journal, "
                               "then restart") from exc
        self.lost += 1
        if self.failing is None:
            log.error("%s; verdicts are still published but not journalled (--on-journal-error continue)", message)
        self.failing = reason
        return False

    def stats(self) -> dict[str, Any]:
        return {"path": str(self.path), "written": self.written, "lost": self.lost, "failing": self.failing}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def read_journal(path: str | Path) -> list[dict[str, Any]]:
    """All headers in order; lines torn by a crash are skipped with a warning, not fatal."""
    headers = []
    with Path(path).open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                headers.append(json.loads(line))
            except json.JSONDecodeError as exc:
                log.warning("%s:%d: skipping a line that is not JSON (%s)", path, number, exc)
    return headers
