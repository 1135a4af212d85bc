"""The bundle's network on a Triton Inference Server over gRPC; the scorer stays in the runtime.

Many runtimes (one per line) share one server, whose dynamic batching merges their requests. At start
the engine waits (with backoff, up to `retry_s`) for the server and the model, then checks that the
served model takes the bundle's input, returns its outputs and, when the repository was written by
`export-model --format triton`, that it is the very network file of the bundle (its SHA-256 is a
parameter of config.pbtxt). A batch that fails (server down or restarting, model unloaded, timeout) is
retried with the same backoff as a camera reopen (0.5 s doubling to 10 s) for up to `retry_s`; after
that the batch raises, so the runtime counts its frames as errors (logged, in status messages). No
frame is dropped silently. tritonclient is imported lazily (the `triton` extra).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from linewatch.bundle import BundleError
from linewatch.engines.base import TRITON_EXTRA, EngineUnavailable, NetworkIO, check_names
from linewatch.errors import LinewatchError

log = logging.getLogger(__name__)

DEFAULT_URL_PORT = 8001  # Triton's gRPC port
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRY_S = 60.0
BACKOFF_S = (0.5, 10.0)  # first retry delay and its cap, as sources reopen cameras
SHA_PARAMETER = "linewatch_network_sha256"


@dataclass(frozen=True)
class TritonTarget:
    """Where the network is served: `url` HOST:PORT (gRPC), the model name, per-request timeout, retry budget."""

    url: str
    model: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry_s: float = DEFAULT_RETRY_S


class TritonUnavailable(LinewatchError, RuntimeError):
    """The server or model stayed unreachable for the whole retry budget; the message says what failed."""


def import_grpc_client() -> Any:
    """`tritonclient.grpc`, or EngineUnavailable naming the extra to install."""
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as exc:
        raise EngineUnavailable(f"the triton engine needs tritonclient's gRPC client: {TRITON_EXTRA}") from exc
    return grpcclient


def _dims(shape: list[Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape)


class TritonEngine:
    """Sends float32 NCHW batches to `target.model` and returns its named outputs as numpy arrays."""

    name = "triton"
    device = "remote"

    def __init__(self, target: TritonTarget, io: NetworkIO, network_sha256: str | None = None,
                 cancel: threading.Event | None = None) -> None:
        grpcclient = import_grpc_client()
        from tritonclient.utils import InferenceServerException

        self._grpc, self._error = grpcclient, InferenceServerException
        self.target, self.io, self.network_sha256 = target, io, network_sha256
        self.cancel = cancel or threading.Event()
        self.client = grpcclient.InferenceServerClient(url=target.url)
        self.state = "connecting"
        self.failures = 0
        self.server_version = "?"
        self.max_batch = 0
        self._retrying(self._verify, "connect")

    def _explain(self, exc: Exception) -> str:
        """One line saying what went wrong, in the user's terms."""
        status = str(getattr(exc, "status", lambda: "")() or "")
        message = str(getattr(exc, "message", lambda: str(exc))() or exc)
        where = f"Triton at {self.target.url}"
        if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
            return f"{where} did not answer within {self.target.timeout_s:g} s (timeout)"
        if "UNAVAILABLE" in status or "failed to connect" in message.lower():
            return f"{where} is unreachable (down or restarting): {message}"
        if "NOT_FOUND" in status or "unknown model" in message.lower() or "not found" in message.lower():
            return f"model {self.target.model!r} is not loaded on {where}: {message}"
        return f"{where}: {message}"

    def _verify(self) -> None:
        """Server live, model ready, model I/O = the bundle's network; BundleError when it serves something else."""
        timeout = self.target.timeout_s
        if not self.client.is_server_live(client_timeout=timeout):
            raise TritonUnavailable(f"Triton at {self.target.url} answers but is not live")
        if not self.client.is_model_ready(self.target.model, client_timeout=timeout):
            raise TritonUnavailable(f"model {self.target.model!r} is not ready on Triton at {self.target.url} "
                                    f"(not in its repository, still loading, or failed to load: see the server log)")
        self.server_version = self.client.get_server_metadata(as_json=True, client_timeout=timeout).get("version", "?")
        meta = self.client.get_model_metadata(self.target.model, as_json=True, client_timeout=timeout)
        config = self.client.get_model_config(self.target.model, as_json=True, client_timeout=timeout)["config"]
        where = f"Triton model {self.target.model!r} at {self.target.url}"
        check_names(where, self.io, [i["name"] for i in meta["inputs"]], [o["name"] for o in meta["outputs"]])
        tensors = [*meta["inputs"], *meta["outputs"]]
        if any(t["datatype"] != "FP32" for t in tensors):
            raise BundleError(f"{where}: tensors {[(t['name'], t['datatype']) for t in tensors]}, expected FP32")
        shape = _dims(meta["inputs"][0]["shape"])
        if shape[1:] != (self.io.channels, *self.io.size):
            raise BundleError(f"{where} takes {list(shape)}, the bundle's network (N, {self.io.channels}, "
                              f"{self.io.size[0]}, {self.io.size[1]}); export the bundle's repository again")
        served = config.get("parameters", {}).get(SHA_PARAMETER, {}).get("string_value")
        if self.network_sha256 and served and served != self.network_sha256:
            raise BundleError(f"{where} serves another network (SHA-256 {served[:12]}..., the bundle's is "
                              f"{self.network_sha256[:12]}...); export-model BUNDLE --format triton --out REPO again")
        if self.network_sha256 and not served:
            log.warning("%s has no %s parameter: cannot check it serves this bundle's network", where, SHA_PARAMETER)
        self.max_batch = int(config.get("max_batch_size", 0))

    def _retrying(self, action: Any, what: str) -> Any:
        """Run `action` until it succeeds, retrying with backoff for up to `retry_s`; BundleError is final."""
        deadline = time.monotonic() + self.target.retry_s
        delay = BACKOFF_S[0]
        while True:
            try:
                result = action()
            except (self._error, TritonUnavailable) as exc:
                problem = self._explain(exc) if isinstance(exc, self._error) else str(exc)
                self.failures += 1
                self.state = f"retrying: {problem}"
                if time.monotonic() + delay > deadline or self.cancel.is_set():
                    self.state = f"unavailable: {problem}"
                    raise TritonUnavailable(f"{what} failed for {self.target.retry_s:g} s: {problem}") from exc
                log.warning("triton %s: %s; retrying in %.1f s", what, problem, delay)
                self.cancel.wait(delay)
                delay = min(2 * delay, BACKOFF_S[1])
                continue
            if self.state != "ok":
                log.info("triton: model %r ready on %s (Triton %s)", self.target.model, self.target.url,
                         self.server_version)
            self.state = "ok"
            return result

    def _infer(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        if self.state != "ok":
            self._verify()  # after a failure: the server may have come back with another model
        request = self._grpc.InferInput(self.io.input_name, list(chunk.shape), "FP32")
        request.set_data_from_numpy(chunk)
        wanted = [self._grpc.InferRequestedOutput(name) for name in self.io.outputs]
        result = self.client.infer(self.target.model, [request], outputs=wanted, client_timeout=self.target.timeout_s)
        return {name: result.as_numpy(name) for name in self.io.outputs}

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        inputs = self.io.check(batch)
        step = self.max_batch or len(inputs)
        chunks = [self._retrying(lambda c=inputs[i : i + step]: self._infer(c), "inference")
                  for i in range(0, len(inputs), step)]
        if len(chunks) == 1:
            return chunks[0]
        return {name: np.concatenate([c[name] for c in chunks]) for name in self.io.outputs}

    def describe(self) -> str:
        return (f"triton {self.server_version} model {self.target.model} at {self.target.url} "
                f"(max batch {self.max_batch}, {self.state}, {self.failures} failed calls)")

    def close(self) -> None:
        self.client.close()
