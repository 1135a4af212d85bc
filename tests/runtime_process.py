"""Test helpers: `inspect-run` as a real process, and a subscriber thread on a real SUB socket."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

RUN = [sys.executable, "-c", "from linewatch.runtime.cli import main; main()"]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.05)


class RuntimeProcess:
    """`inspect-run` in its own process; its stderr goes to a file so a chatty run can never block on a pipe."""

    def __init__(self, args: list[str], workdir: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        self.log = workdir / f"runtime-{time.monotonic_ns()}.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen([*RUN, "--publish", "tcp://127.0.0.1:*", *args], stdout=subprocess.PIPE,
                                        stderr=self._log_file, text=True, preexec_fn=preexec_fn)

    def endpoint(self, timeout_s: float = 90) -> str:
        """The bound address, from the start-up line ("... publishing on tcp://127.0.0.1:PORT")."""
        found: list[str] = []

        def bound() -> bool:
            assert self.process.poll() is None, f"runtime exited early: {self.log.read_text()}"
            found.extend(re.findall(r"publishing on (tcp://\S+)", self.log.read_text()))
            return bool(found)

        wait_for(bound, timeout_s, "the runtime to bind its socket")
        return found[0]

    def finish(self, sig: int | None = signal.SIGTERM, timeout_s: float = 60) -> tuple[int, str, str]:
        """Send ``sig`` (None: let it end by itself), wait; returns (exit status, stdout, stderr)."""
        try:
            if sig is not None:
                self.process.send_signal(sig)
            stdout, _ = self.process.communicate(timeout=timeout_s)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._log_file.close()
        return self.process.returncode, stdout, self.log.read_text()


class Subscriber(threading.Thread):
    """Collects verdict headers (and status messages) until stopped; ``delay_s`` makes it a slow reader."""

    def __init__(self, endpoint: str, topics: tuple[bytes, ...] = (b"verdict.",), delay_s: float = 0.0,
                 rcvhwm: int = 1000) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.topics, self.delay_s, self.rcvhwm = endpoint, topics, delay_s, rcvhwm
        self.verdicts: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.connected = threading.Event()
        self.last_message = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self.rcvhwm)
        sock.connect(self.endpoint)
        for topic in self.topics:
            sock.subscribe(topic)
        self.connected.set()
        try:
            while not self._halt.is_set():
                if not sock.poll(50):
                    continue
                topic, header, *_ = sock.recv_multipart()
                self.last_message = time.monotonic()
                (self.statuses if topic.startswith(b"status.") else self.verdicts).append(json.loads(header))
                if self.delay_s:
                    time.sleep(self.delay_s)
        finally:
            sock.close()

    def stop(self, quiet_s: float = 1.0) -> None:
        """Stop once nothing has arrived for ``quiet_s`` (what was on the wire is read), at most 10 s later."""
        deadline = time.monotonic() + 10
        while time.monotonic() - self.last_message < quiet_s and time.monotonic() < deadline:
            time.sleep(0.05)
        self._halt.set()
        self.join(timeout=10)

    def seqs(self) -> list[int]:
        return [h["seq"] for h in self.verdicts]


def journal_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a journal, insisting that each is whole JSON and the file ends with a newline."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), f"{path} ends inside a line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]
