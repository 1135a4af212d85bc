"""`inspect-bench` grid configuration: categories x detectors x settings x seeds (+ an optional global model).

The YAML file names detectors by registry kind, so a detector added to the registry can be benchmarked
without touching this code; each detector's options are validated against its registry schema up
front, so a typo fails before hours of training, not in the middle. Paths are relative to the current
directory, as in training configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linewatch.config import ConfigError, read_yaml_mapping, resolve
from linewatch.models.registry import DETECTOR_KINDS
from linewatch.train.options import options_for

SETTINGS = ("clean", "shift", "adapted")
TOP_KEYS = {"name", "split_seed", "seeds", "settings", "shift", "categories", "detectors", "global", "examples",
            "batch_size"}
GLOBAL = "global"


@dataclass(frozen=True)
class DetectorEntry:
    """One detector column of the grid: a label, its registry kind, options and seeds."""

    name: str
    kind: str
    options: dict[str, Any]
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class CategoryEntry:
    name: str
    data: Path
    options: dict[str, dict[str, Any]]  # detector name -> option overrides for this category


@dataclass(frozen=True)
class GlobalEntry:
    """A model per detector trained on the pooled good images of several categories, evaluated on each."""

    categories: tuple[str, ...]
    detectors: tuple[str, ...]
    settings: tuple[str, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # detector name -> option overrides


@dataclass(frozen=True)
class BenchConfig:
    path: Path
    name: str
    split_seed: int
    settings: tuple[str, ...]
    shift_seed: int
    vignetting: bool
    categories: tuple[CategoryEntry, ...]
    detectors: tuple[DetectorEntry, ...]
    global_model: GlobalEntry | None = None
    examples: int = 4
    batch_size: int = 8
    ablation: tuple[str, ...] = ()  # detectors whose clean models also see each shift group alone
    raw: dict[str, Any] = field(default_factory=dict)

    def category(self, name: str) -> CategoryEntry:
        return next(c for c in self.categories if c.name == name)

    def detector(self, name: str) -> DetectorEntry:
        return next(d for d in self.detectors if d.name == name)


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _settings(path: Path, value: Any, where: str) -> tuple[str, ...]:
    settings = tuple(value)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or not settings:
        raise _fail(path, f"{where}: settings must be some of {', '.join(SETTINGS)}, got {value!r}")
    return tuple(s for s in SETTINGS if s in settings)


def _seeds(path: Path, value: Any, where: str) -> tuple[int, ...]:
    seeds = [value] if isinstance(value, int) else value
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise _fail(path, f"{where}: seeds must be an integer or a list of integers, got {value!r}")
    return tuple(seeds)


def check_options(path: Path, kind: str, options: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate detector options against the registry; `data`, `out`, `model` and `seed` belong to the grid."""
    schema = options_for(kind)
    reserved = {"data", "out", "model", "seed"} & set(options)
    if reserved:
        raise _fail(path, f"{where}: {', '.join(sorted(reserved))} are set by the grid, not per detector")
    unknown = sorted(set(options) - set(schema))
    if unknown:
        raise _fail(path, f"{where}: {kind} has no option(s) {', '.join(unknown)}")
    try:
        resolve({k: schema[k] for k in options}, None, options)
    except ConfigError as exc:
        raise _fail(path, f"{where}: {exc}") from None
    return dict(options)


def _detectors(path: Path, raw: Any, default_seeds: tuple[int, ...]) -> tuple[DetectorEntry, ...]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "'detectors' must map names to {kind, options, seeds}")
    entries = []
    for name, spec in raw.items():
        spec = spec or {}
        unknown = set(spec) - {"kind", "options", "seeds"}
        if unknown:
            raise _fail(path, f"detectors.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        kind = spec.get("kind", name)
        if kind not in DETECTOR_KINDS:
            raise _fail(path, f"detectors.{name}: kind {kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
        options = check_options(path, kind, spec.get("options") or {}, f"detectors.{name}.options")
        seeds = _seeds(path, spec["seeds"], f"detectors.{name}") if "seeds" in spec else default_seeds
        entries.append(DetectorEntry(str(name), kind, options, seeds))
    return tuple(entries)


def _categories(path: Path, raw: Any, detectors: tuple[DetectorEntry, ...]) -> tuple[CategoryEntry, ...]:
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "'categories' must map names to a data path or {data, options}")
    kinds = {d.name: d.kind for d in detectors}
    entries = []
    for name, spec in raw.items():
        if name == GLOBAL:
            raise _fail(path, f"categories: {GLOBAL!r} is reserved for the global model")
        spec = {"data": spec} if isinstance(spec, str) else spec or {}
        if "data" not in spec:
            raise _fail(path, f"categories.{name}: needs 'data' (a category folder)")
        data = Path(spec["data"]).expanduser()
        if not (data / "train" / "good").is_dir():
            raise _fail(path, f"categories.{name}: {data} is not a category folder (no train/good)")
        entries.append(CategoryEntry(str(name), data.resolve(), _overrides(path, spec.get("options"), kinds,
                                                                           f"categories.{name}.options")))
    return tuple(entries)


def _overrides(path: Path, raw: Any, kinds: dict[str, str], where: str) -> dict[str, dict[str, Any]]:
    """Per-detector option overrides ({detector: {option: value}}), each checked against its detector."""
    overrides = raw or {}
    for detector, values in overrides.items():
        if detector not in kinds:
            raise _fail(path, f"{where}: {detector!r} is not a detector of this grid")
        check_options(path, kinds[detector], values, f"{where}.{detector}")
    return {k: dict(v) for k, v in overrides.items()}


def _global(path: Path, raw: Any, config_settings: tuple[str, ...], categories: tuple[CategoryEntry, ...],
            detectors: tuple[DetectorEntry, ...]) -> GlobalEntry | None:
    if raw is None:
        return None
    unknown = set(raw) - {"categories", "detectors", "settings", "options"}
    if unknown:
        raise _fail(path, f"global: unknown key(s) {', '.join(sorted(unknown))}")
    names = {c.name for c in categories}
    members = tuple(raw.get("categories") or names)
    if len(members) < 2 or not set(members) <= names:
        raise _fail(path, f"global.categories: at least two of {', '.join(sorted(names))}, got {members!r}")
    chosen = tuple(raw.get("detectors") or (d.name for d in detectors))
    if not set(chosen) <= {d.name for d in detectors}:
        raise _fail(path, f"global.detectors: {chosen!r} are not all detectors of this grid")
    settings = _settings(path, raw["settings"], "global") if "settings" in raw else config_settings
    options = _overrides(path, raw.get("options"), {d.name: d.kind for d in detectors}, "global.options")
    return GlobalEntry(members, chosen, settings, options)


def load_config(path: Path) -> BenchConfig:
    """Read and validate a bench YAML file (see configs/bench-*.yaml)."""
    path = Path(path)
    raw = read_yaml_mapping(path)
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(TOP_KEYS))}")
    settings = _settings(path, raw.get("settings", list(SETTINGS)), "settings")
    shift = raw.get("shift") or {}
    if set(shift) - {"seed", "vignetting", "ablation"}:
        raise _fail(path, "shift: only 'seed', 'vignetting' and 'ablation' can be set")
    detectors = _detectors(path, raw.get("detectors"), _seeds(path, raw.get("seeds", [0]), "seeds"))
    ablation = tuple(shift.get("ablation") or ())
    if not set(ablation) <= {d.name for d in detectors}:
        raise _fail(path, f"shift.ablation: {list(ablation)!r} are not all detectors of this grid")
    if ablation and "shift" not in settings:
        raise _fail(path, "shift.ablation needs the 'shift' setting: it splits that setting's drop by transform")
    categories = _categories(path, raw.get("categories"), detectors)
    return BenchConfig(
        path=path, name=str(raw.get("name", path.stem)), split_seed=int(raw.get("split_seed", 0)),
        settings=settings, shift_seed=int(shift.get("seed", 0)), vignetting=bool(shift.get("vignetting", False)),
        categories=categories, detectors=detectors,
        global_model=_global(path, raw.get("global"), settings, categories, detectors),
        examples=int(raw.get("examples", 4)), batch_size=int(raw.get("batch_size", 8)), ablation=ablation, raw=raw,
    )
