"""tqdm progress bars for long steps (feature extraction, coreset, fitting), on stderr."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm


class Bars:
    """Hands out bars by name and closes them all at the end; `enabled=False` for quiet runs."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bars: list[tqdm] = []

    def __call__(self, total: int, desc: str) -> Callable[[int], None]:
        bar = tqdm(total=total, desc=desc, unit="step", disable=not self.enabled, leave=True, dynamic_ncols=True)
        self._bars.append(bar)
        return bar.update

    def close(self) -> None:
        for bar in self._bars:
            bar.close()
        self._bars.clear()
