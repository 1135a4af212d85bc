"""PNG decoding cost: OpenCV (libpng) vs libspng (`imagecodecs`, what `linewatch.data.io` uses for 8-bit PNGs).

Times both decoders on the same files held in memory (no disk reads), one thread, alternating rounds, and
reports the median ms per image of each and their ratio; checks that both give the same RGB pixels; and
measures how much Python the main thread still runs while another thread decodes with each (a decoder
that holds the GIL stalls the runtime's inference thread; `none` is the loop's rate with no decoding).
Run: .venv/bin/python tools/bench_decode.py --data ../shared/data/mvtec_ad/bottle/test [--files 40]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
import cv2
import imagecodecs
import numpy as np

from linewatch.data.io import to_rgb


def _opencv(data: bytes) -> np.ndarray:
    return to_rgb(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))


def _libspng(data: bytes) -> np.ndarray:
    return imagecodecs.spng_decode(data)


def main_thread_loops(decode: Callable[[bytes], np.ndarray] | None, blobs: list[bytes], seconds: float = 1.0) -> int:
    """Iterations/s of a small pure-Python loop in this thread while another thread decodes in a loop."""
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            for blob in blobs:
                decode(blob)

    thread = threading.Thread(target=worker) if decode is not None else None
    if thread is not None:
        thread.start()
        time.sleep(0.05)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sum(range(1000))
        count += 1
    stop.set()
    if thread is not None:
        thread.join()
    return int(count / seconds)


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder searched recursively for .png files.")
@click.option("--files", type=int, default=40, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/decode.json"), show_default=True)
def main(data: Path, files: int, rounds: int, out: Path) -> None:
    cv2.setNumThreads(1)
    paths = sorted(data.rglob("*.png"))[:files]
    if not paths:
        raise click.ClickException(f"no .png files under {data}")
    blobs = [p.read_bytes() for p in paths]
    same = all(np.array_equal(_opencv(b), _libspng(b)) for b in blobs)
    times: dict[str, list[float]] = {"opencv": [], "libspng": []}
    for _ in range(rounds):
        for name, decode in (("opencv", _opencv), ("libspng", _libspng)):
            for blob in blobs:
                start = time.perf_counter()
                decode(blob)
                times[name].append(1000 * (time.perf_counter() - start))
    loops = {"none": main_thread_loops(None, blobs), "opencv": main_thread_loops(_opencv, blobs),
             "libspng": main_thread_loops(_libspng, blobs)}
    shape = _opencv(blobs[0]).shape
    result = {"data": str(data), "files": len(blobs), "shape": list(shape), "identical_pixels": same,
              **{f"{k}_ms": round(float(np.median(v)), 3) for k, v in times.items()},
              "main_thread_loops_per_s_beside": loops}
    result["speedup"] = round(result["opencv_ms"] / result["libspng_ms"], 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    click.echo(f"{len(blobs)} PNGs {shape[1]}x{shape[0]}: OpenCV {result['opencv_ms']:.2f} ms, libspng "
               f"{result['libspng_ms']:.2f} ms per image ({result['speedup']:.2f}x), identical pixels: {same}")
    beside = ", ".join(f"{k} {v:,}" for k, v in loops.items())
    click.echo(f"main-thread Python loops/s while another thread decodes: {beside}")


if __name__ == "__main__":
    main()
