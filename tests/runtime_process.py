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


START_TIMEOUT_S = 300  # a loaded 2-core machine can take minutes to import torch and load a model


class RuntimeProcess:
    """`inspect-run` in its own process; a thread collects its stderr, so a chatty run never blocks on the pipe
    and the test never blocks on a silent one."""

    def __init__(self, args: list[str], preexec_fn: Callable[[], None] | None = None) -> None:
        self.process = subprocess.Popen([*RUN, "--publish", "tcp://127.0.0.1:*", *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self._stderr: list[str] = []
        self._reader = threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True)
        self._reader.start()

    @property
    def log(self) -> str:
        return "".join(self._stderr)

    def endpoint(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """The bound address, from the start-up line ("... publishing on tcp://127.0.0.1:PORT")."""
        found: list[str] = []

        def bound() -> bool:
            found.extend(re.findall(r"publishing on (tcp://\S+)", self.log))
            assert found or self.process.poll() is None, f"runtime exited early: {self.log}"
            return bool(found)

        wait_for(bound, timeout_s, "the runtime to bind its socket")
        return found[0]

    def finish(self, sig: int | None = signal.SIGTERM, timeout_s: float = 180) -> tuple[int, str, str]:
        """Send ``sig`` (None: let it end by itself), wait; returns (exit status, stdout, stderr)."""
        try:
            if sig is not None:
                self.process.send_signal(sig)
            stdout = self.process.stdout.read() if self.process.wait(timeout=timeout_s) is not None else ""
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._reader.join(timeout=10)
        return self.process.returncode, stdout, self.log


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
