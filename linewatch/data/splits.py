"""Deterministic train/val/test splits, so thresholds are calibrated on images the model never saw.

Train-clean: ~80% of train/good. Val-clean: the other ~20% plus ~30% of each defect type from test/
(threshold calibration). Test-clean: test/good plus the remaining defects, only for final numbers.
The split is saved next to the model as `rel` paths so evaluation can reproduce it exactly.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linewatch.data.dataset import Category, Sample
from linewatch.data.errors import DataError

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Splits:
    """The three disjoint splits of one category, each sorted by `rel`."""

    seed: int
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    train_fraction: float = 0.8
    val_anomalous_fraction: float = 0.3

    def to_json(self, path: str | Path) -> None:
        """Write seed, fractions, counts and the `rel` paths of each split."""
        doc = {
            "seed": self.seed,
            "fractions": {"train": self.train_fraction, "val_anomalous": self.val_anomalous_fraction},
            "counts": {name: len(getattr(self, name)) for name in SPLIT_NAMES},
            **{name: [s.rel for s in getattr(self, name)] for name in SPLIT_NAMES},
        }
        Path(path).write_text(json.dumps(doc, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, category: Category) -> Splits:
        """Rebuild splits saved by `to_json` against `category`; every listed file must still exist."""
        try:
            doc = json.loads(Path(path).read_text())
            rels = {name: list(doc[name]) for name in SPLIT_NAMES}
            fractions = doc["fractions"]
            seed, train_fraction = int(doc["seed"]), float(fractions["train"])
            val_fraction = float(fractions["val_anomalous"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a readable splits file ({exc})") from exc
        known = {s.rel: s for s in (*category.train, *category.test)}
        for name, listed in rels.items():
            gone = [rel for rel in listed if rel not in known]
            if gone:
                missing = category.root / gone[0]
                raise DataError(f"{path}: {len(gone)} {name} file(s) gone from the category, e.g. {missing}")
        picked = {name: [known[rel] for rel in listed] for name, listed in rels.items()}
        return cls(seed, **picked, train_fraction=train_fraction, val_anomalous_fraction=val_fraction)


def _round(x: float) -> int:
    """Round half up, so 2.5 images means 3 (Python's round would give 2)."""
    return math.floor(x + 0.5)


def _n_val_anomalous(n: int, fraction: float) -> int:
    """Defects of one type sent to val: at least 1 when there are >= 2, and always 1 left for test."""
    if n < 2 or fraction == 0:
        return 0
    return min(max(_round(n * fraction), 1), n - 1)


def _by_rel(samples: list[Sample]) -> list[Sample]:
    return sorted(samples, key=lambda s: s.rel)


def make_splits(
    category: Category, seed: int = 0, train_fraction: float = 0.8, val_anomalous_fraction: float = 0.3
) -> Splits:
    """Split `category` reproducibly for `seed`; defects are stratified per type into val and test."""
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    if not 0 <= val_anomalous_fraction <= 1:
        raise ValueError(f"val_anomalous_fraction must be in [0, 1], got {val_anomalous_fraction}")
    rng = np.random.default_rng(seed)
    goods = category.train
    n_train = min(max(_round(len(goods) * train_fraction), 1), len(goods))
    order = rng.permutation(len(goods))
    train = [goods[i] for i in order[:n_train]]
    val = [goods[i] for i in order[n_train:]]
    test = [s for s in category.test if s.label == 0]
    by_defect: dict[str, list[Sample]] = defaultdict(list)
    for sample in category.test:
        if sample.label:
            by_defect[sample.defect].append(sample)
    for defect in sorted(by_defect):
        group = by_defect[defect]
        order = rng.permutation(len(group))
        k = _n_val_anomalous(len(group), val_anomalous_fraction)
        val += [group[i] for i in order[:k]]
        test += [group[i] for i in order[k:]]
    return Splits(seed, _by_rel(train), _by_rel(val), _by_rel(test), train_fraction, val_anomalous_fraction)


def evenly_spaced(samples: Sequence[Sample], limit: int) -> list[Sample]:
    """At most `limit` samples spread evenly over a (sorted) split: a cheap, deterministic picture of all of it."""
    picks = np.unique(np.linspace(0, len(samples) - 1, min(limit, len(samples))).round().astype(int))
    return [samples[i] for i in picks] if samples else []
