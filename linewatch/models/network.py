"""A detector's network in the bundle: the manifest's `network` section and its safetensors weights.

The section names the architecture and its hyper-parameters, the input (name, size, channels), where
normalisation happens and the output names, so engines, export and the runtime need nothing else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from linewatch.bundle import BundleError

NETWORK_FILE = "network.safetensors"
INPUT_NAME = "images"


def network_section(
    architecture: str, params: dict[str, Any], size: tuple[int, int], channels: int, outputs: tuple[str, ...],
    normalization: dict[str, Any] | str, **extra: Any,
) -> dict[str, Any]:
    """The manifest's `network` section; `extra` adds facts such as pretrained-weight provenance."""
    return {
        "architecture": architecture,
        "params": params,
        "input": {"name": INPUT_NAME, "size": [int(size[0]), int(size[1])], "channels": int(channels),
                  "dtype": "float32", "range": [0, 255], "layout": "NCHW " + ("RGB" if channels == 3 else "grey")},
        "normalization": normalization,
        "outputs": list(outputs),
        "weights": NETWORK_FILE,
        **extra,
    }


def save_network(module: Any, directory: Path) -> str:
    """Write the network's state dict (parameters and buffers) as safetensors; return the file name."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(Path(directory) / NETWORK_FILE))
    return NETWORK_FILE


def load_network(directory: Path, manifest: dict[str, Any]) -> Any:
    """Build the bundle's network from its section and fill it from its weights file (eval mode, CPU)."""
    from safetensors.torch import load_file

    from linewatch.models.registry import get_spec

    section = manifest["network"]
    module = get_spec(manifest["detector"]["kind"]).build_network(section)
    path = Path(directory) / section["weights"]
    try:
        module.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise BundleError(f"{path} does not fit the {section['architecture']} network in the manifest: {exc}") from exc
    return module.eval()
