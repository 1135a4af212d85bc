"""Checkpoints of the epoch loop without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds `state.safetensors` (module weights, optimizer moments, the best weights so
far, RNG states) and `state.json` (epoch, history, optimizer hyper-parameters, scheduler state, the run's
settings), so resuming reproduces an uninterrupted run exactly on CPU.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from linewatch.config import ConfigError

TENSORS = "state.safetensors"
META = "state.json"


@dataclass
class LoopState:
    """What the loop needs besides tensors to continue where it stopped."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    bad_epochs: int = 0
    reference_loss: float | None = None  # the first step's loss, against which an explosion is judged


@dataclass
class Snapshot:
    """Everything of one epoch boundary, copied so training can go on while it waits to be written."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["loop"]["epoch"])


def _optimizer_parts(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{name}.{pid}.{key}"] = value.detach().clone().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def capture(modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
            schedulers: dict[str, Any], generator: torch.Generator, loop: LoopState,
            best: dict[str, torch.Tensor] | None, settings: dict[str, Any]) -> Snapshot:
    """Copy the state of one epoch boundary."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update({f"module.{name}.{k}": v.detach().clone().cpu() for k, v in module.state_dict().items()})
    optim_meta = {}
    for name, optimizer in optimizers.items():
        parts, optim_meta[name] = _optimizer_parts(name, optimizer)
        tensors.update(parts)
    if best:
        tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.shuffle"] = generator.get_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {"loop": {**loop.__dict__, "history": [dict(h) for h in loop.history]}, "optimizers": optim_meta,
            "schedulers": {name: s.state_dict() for name, s in schedulers.items()}, "settings": settings}
    return Snapshot(tensors, meta)


def write(snapshot: Snapshot, folder: Path) -> Path:
    """Write a snapshot to `folder` (replaced atomically enough: a temp folder renamed into place)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in snapshot.tensors.items()}, str(tmp / TENSORS))
    (tmp / META).write_text(json.dumps(snapshot.meta, indent=1) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read(folder: Path) -> Snapshot:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / TENSORS).is_file() or not (folder / META).is_file():
        raise ConfigError(f"{folder} is not a linewatch checkpoint (expects {TENSORS} and {META})")
    return Snapshot(load_file(str(folder / TENSORS)), json.loads((folder / META).read_text()))


def restore(snapshot: Snapshot, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
            schedulers: dict[str, Any], generator: torch.Generator) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Put a snapshot back into the live objects; returns the loop state and the best weights."""
    tensors = snapshot.tensors
    for name, module in modules.items():
        prefix = f"module.{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in optimizers.items():
        meta = snapshot.meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = defaultdict(dict)
        prefix = f"optim.{name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, entry = key[len(prefix):].split(".", 1)
                state[int(pid)][entry] = value
        for key, value in meta["scalars"].items():
            pid, entry = key.split(".", 1)
            state[int(pid)][entry] = value
        optimizer.load_state_dict({"state": dict(state), "param_groups": meta["param_groups"]})
    for name, scheduler in schedulers.items():
        scheduler.load_state_dict(snapshot.meta["schedulers"][name])
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.shuffle"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    best = {k[len("best."):]: v for k, v in tensors.items() if k.startswith("best.")} or None
    return LoopState(**snapshot.meta["loop"]), best


def check_settings(snapshot: Snapshot, settings: dict[str, Any], folder: Path) -> None:
    """Refuse to resume a run whose detector settings differ (only the epoch budget may change)."""
    saved = snapshot.meta.get("settings", {})
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {settings.get(k)!r}" for k in changed[:4])
        raise ConfigError(f"cannot resume from {folder}: it was trained with other settings ({detail})")
