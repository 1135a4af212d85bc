"""Durable verdict log: every header as one JSON line, flushed before it is published.

PUB drops messages when nobody listens; the journal is the record that survives that.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from linewatch.runtime.messages import encode_json

log = logging.getLogger(__name__)


def _ends_without_newline(path: Path) -> bool:
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) != b"\n"


class Journal:
    """Append-only JSON-lines file; ``fsync=True`` also survives power loss, at a per-line cost."""

    def __init__(self, path: str | Path, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        torn = _ends_without_newline(self.path)
        self._file = self.path.open("ab")
        if torn:
            self._file.write(b"\n")  # isolate a line torn by a crash so the next header stays readable

    def write(self, header: dict[str, Any]) -> None:
        self._file.write(encode_json(header) + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

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
