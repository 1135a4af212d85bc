"""A Triton Inference Server on 127.0.0.1 from the binary `nvidia-pytriton` ships, for tests and benchmarks.

`pip install --no-deps nvidia-pytriton` (its Python package pins numpy < 2; only its files are used here)
brings `tritonserver` 2.51 with the Python backend only: no onnxruntime, TensorRT or PyTorch backend. So
the repository must be exported with `--backend python` (the bundle's ONNX file in onnxruntime inside
Triton's Python stub), which this module arranges the way pytriton does: the stub matching the running
Python's version is copied next to the backend, the wheel's bundled libraries go on LD_LIBRARY_PATH, and
this interpreter's bin directory goes first on PATH, where the stub's embedded Python finds its prefix
and so this environment's site-packages (numpy, onnxruntime). The stub links the system's libpython3.X
(Debian: libpython3.11); `problem()` says what is missing, if anything.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from linewatch.engines.triton_engine import import_grpc_client

PACKAGE = "nvidia-pytriton"
START_TIMEOUT_S = 60.0


def _dist() -> Path | None:
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def _version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def problem() -> str | None:
    """Why a local server cannot start here, or None."""
    dist = _dist()
    if dist is None or not (dist / "bin" / "tritonserver").is_file():
        return f"no tritonserver binary: pip install --no-deps {PACKAGE} (Triton's server, Python backend only)"
    stub = dist / "python_backend_stubs" / _version() / "triton_python_backend_stub"
    if not stub.is_file():
        return f"{PACKAGE} has no Python backend stub for Python {_version()}"
    libpython = f"libpython{_version()}.so.1.0"
    found = subprocess.run(["ldd", str(stub)], capture_output=True, text=True, check=False).stdout
    if f"{libpython} => not found" in found or libpython not in found:
        return f"the Python backend stub needs the system's {libpython} (Debian: apt-get install libpython{_version()})"
    try:
        import_grpc_client()
    except ValueError as exc:
        return str(exc)
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalTriton:
    """`tritonserver` serving `repository` on 127.0.0.1 (gRPC on `grpc_port`), its log in `log_path`."""

    def __init__(self, repository: Path, grpc_port: int | None = None, log_path: Path | None = None) -> None:
        reason = problem()
        if reason:
            raise RuntimeError(f"cannot start a local Triton server: {reason}")
        self.repository = Path(repository)
        self.grpc_port = grpc_port or free_port()
        self.url = f"127.0.0.1:{self.grpc_port}"
        self._work = Path(tempfile.mkdtemp(prefix="linewatch-triton-"))
        self.log_path = log_path or self._work / "tritonserver.log"
        self._process: subprocess.Popen | None = None
        dist = _dist()
        assert dist is not None
        self._binary = dist / "bin" / "tritonserver"
        backend = self._work / "backends" / "python"
        shutil.copytree(dist / "backends" / "python", backend)
        shutil.copy(dist / "python_backend_stubs" / _version() / "triton_python_backend_stub", backend)
        self._libs = dist.parent.parent / "nvidia_pytriton.libs"

    def _environment(self) -> dict[str, str]:
        def joined(*parts: str | None) -> str:
            return os.pathsep.join(p for p in parts if p)

        env = {**os.environ, "PATH": joined(str(Path(sys.executable).parent), os.environ.get("PATH")),
               "LD_LIBRARY_PATH": joined(str(self._libs), os.environ.get("LD_LIBRARY_PATH"))}
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self, timeout_s: float = START_TIMEOUT_S) -> LocalTriton:
        """Start the server and wait until it is live and every model is ready (or raise with its log's tail)."""
        command = [str(self._binary), f"--model-repository={self.repository}",
                   f"--backend-directory={self._work / 'backends'}", "--grpc-address=127.0.0.1",
                   f"--grpc-port={self.grpc_port}", "--allow-http=false", "--allow-metrics=false",
                   "--exit-on-error=true", "--log-verbose=0"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the server writes to it for its whole life
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self._environment())
        log.close()
        client = import_grpc_client().InferenceServerClient(url=self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                try:
                    if client.is_server_ready(client_timeout=1.0):
                        return self
                except Exception:  # noqa: BLE001 - not up yet: connection refused until the gRPC port opens
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        self.stop()
        tail = "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"tritonserver did not become ready within {timeout_s:g} s; its log:\n{tail}")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._work, ignore_errors=True)

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
