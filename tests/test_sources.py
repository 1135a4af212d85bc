"""Frame sources against real files and real OpenCV, plus fake captures for camera behaviour."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from linewatch.runtime.frames import Frame
from linewatch.runtime.source_spec import SourceSpec, parse_source, parse_sources
from linewatch.runtime.sources import SourceSet

VIDEO_FRAMES = 12


def _bgr(value: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """A BGR frame whose blue channel carries ``value`` (red stays 0), to check order and channels."""
    image = np.zeros((*size, 3), np.uint8)
    image[:, :, 0] = value
    return image


def _write_png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), _bgr(value, (8, 8)))
    return path


def _write_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(VIDEO_FRAMES):
        writer.write(_bgr(20 * i))
    writer.release()
    return path


def _wait_for(condition: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def _collect(sources: SourceSet, limit_s: float = 5.0, delay_s: float = 0.0) -> list[Frame]:
    """Every frame until the set is done (bounded by ``limit_s``), optionally consuming slowly."""
    frames = []
    deadline = time.monotonic() + limit_s
    while not sources.done():
        assert time.monotonic() < deadline, "sources did not finish in time"
        frame = sources.get(0.05)
        if frame is not None:
            frames.append(frame)
            time.sleep(delay_s)
    return frames


def _blue(frame: Frame) -> float:
    return float(frame.image[:, :, 2].mean())


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, source: str, message: str) -> None:
        self.items.append((kind, source, message))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.items]


class FakeCapture:
    """Stands in for a camera: ``frames`` readable frames (None = endless), numbered from ``start``."""

    def __init__(self, opened: bool = True, frames: int | None = None, start: int = 0) -> None:
        self.opened = opened
        self.left = frames
        self.next = start
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.opened or self.left == 0:
            return False, None
        if self.left is not None:
            self.left -= 1
        time.sleep(0.001)
        value, self.next = self.next, self.next + 1
        return True, _bgr(value % 256, (4, 4))

    def release(self) -> None:
        self.released = True


def test_video_source_reads_every_frame_in_order(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "line.avi")
    events = Events()
    spec = parse_source(str(video))
    assert (spec.kind, spec.name, spec.live) == ("video", "line", False)
    with SourceSet([spec], queue_size=4, on_event=events) as sources:
        frames = _collect(sources)
        stats = sources.stats()["line"]
    assert [f.index for f in frames] == list(range(VIDEO_FRAMES))
    assert all(f.path == str(video) and f.source == "line" for f in frames)
    assert all(f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [_blue(f) for f in frames] == pytest.approx([20 * i for i in range(VIDEO_FRAMES)], abs=3)
    assert all(f.image[:, :, 0].mean() < 3 for f in frames)  # BGR was turned into RGB
    assert all(f.decode_ms > 0 and f.t_capture > 0 for f in frames)
    expected = {
        "frames": VIDEO_FRAMES,
        "drops": 0,
        "errors": 0,
        "reopens": 0,
        "loops": 0,
        "queue": 0,
        "state": "finished",
        "outages": 0,
        "down_s": 0.0,
        "down_since": None,
        "down_reason": None,
    }
    assert stats == expected
    assert events.kinds() == ["end"]


def test_unopenable_video_is_reported_and_finishes(tmp_path: Path) -> None:
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    events = Events()
    with SourceSet([parse_source(str(broken))], on_event=events) as sources:
        assert _collect(sources) == []
        assert sources.stats()["broken"]["state"] == "failed"
    assert events.items[0][0] == "error" and str(broken) in events.items[0][2]


def test_folder_recurses_in_sorted_order_and_ignores_other_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "parts"
    order = ["a.png", "b/a.png", "b.png", "c/d/e.png"]
    for value, rel in enumerate(order):
        _write_png(root / rel, 10 * value)
    (root / "notes.txt").write_text("not an image")
    (root / "b" / "labels.csv").write_text("x")
    monkeypatch.chdir(tmp_path)
    spec = parse_source("parts")
    assert (spec.kind, spec.name) == ("folder", "parts")
    with SourceSet([spec]) as sources:
        frames = _collect(sources)
        assert sources.stats()["parts"]["errors"] == 0
    assert [f.path for f in frames] == [str(Path("parts") / rel) for rel in order]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    assert [_blue(f) for f in frames] == [0, 10, 20, 30]


def test_corrupt_file_is_reported_and_skipped(tmp_path: Path) -> None:
    for value in range(3):
        _write_png(tmp_path / "imgs" / f"{value}.png", value)
    corrupt = tmp_path / "imgs" / "1.png"
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    events = Events()
    with SourceSet([parse_source(str(tmp_path / "imgs"))], on_event=events) as sources:
        frames = _collect(sources)
        stats = sources.stats()["imgs"]
    assert [Path(f.path).name for f in frames] == ["0.png", "2.png"]
    assert stats["errors"] == 1 and stats["state"] == "finished"
    errors = [message for kind, _, message in events.items if kind == "error"]
    assert len(errors) == 1 and str(corrupt) in errors[0]
    assert events.kinds()[-1] == "end"


def test_watched_folder_delivers_files_added_after_start(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _write_png(folder / "first.png", 1)
    spec = parse_source(str(folder), watch=True)
    assert spec.watch
    with SourceSet([spec], poll_s=0.02) as sources:
        first = sources.get(3.0)
        assert first is not None and first.path == str(folder / "first.png")
        _write_png(folder / "later" / "second.png", 2)
        second = sources.get(3.0)
        assert second is not None and second.path == str(folder / "later" / "second.png")
        assert second.index == 1
        assert not sources.done()  # a watched folder runs until stopped
    assert sources.stats()["incoming"]["state"] == "stopped"


def test_glob_source_yields_sorted_matches(tmp_path: Path) -> None:
    for value, name in enumerate(["c.png", "a.png", "b.jpg", "sub/d.png"]):
        _write_png(tmp_path / name, value)
    (tmp_path / "e.png.txt").write_text("x")
    spec = parse_source(str(tmp_path / "*.png"))
    assert (spec.kind, spec.name) == ("glob", "glob")
    with SourceSet([spec]) as sources:
        frames = _collect(sources)
    assert [f.path for f in frames] == [str(tmp_path / "a.png"), str(tmp_path / "c.png")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("camera0", ("camera0", "camera", 0, True)),
        ("3", ("camera3", "camera", 3, True)),
        ("rtsp://host/x", ("host", "stream", "rtsp://host/x", True)),
        (
            "http://u:pw@10.0.0.5:8080/v.mjpg",
            ("10.0.0.5", "stream", "http://u:pw@10.0.0.5:8080/v.mjpg", True),
        ),
        ("line1=camera0", ("line1", "camera", 0, True)),
        ("line2=rtsp://cam.local:554/s?a=b", ("line2", "stream", "rtsp://cam.local:554/s?a=b", True)),
    ],
)
def test_parse_live_sources(text: str, expected: tuple[str, str, str | int, bool]) -> None:
    spec = parse_source(text)
    assert (spec.name, spec.kind, spec.target, spec.live) == expected


def test_parse_file_sources(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "belt cam.avi")
    folder = tmp_path / "good"
    image = _write_png(folder / "x.png", 0)
    assert parse_source(str(video)) == SourceSpec("belt-cam", "video", str(video), live=False)
    watched = SourceSpec("good", "folder", str(folder), live=False, watch=True)
    assert parse_source(str(folder), watch=True) == watched
    assert parse_source(f"{folder}/*.png") == SourceSpec("glob", "glob", f"{folder}/*.png", live=False)
    assert parse_source(f"left={folder}").name == "left"
    single = parse_source(str(image))
    assert (single.name, single.kind) == ("x", "glob")
    with pytest.raises(ValueError, match="no such file or folder"):
        parse_source(str(tmp_path / "missing.avi"))
    with pytest.raises(ValueError, match="matches no files"):
        parse_source(str(tmp_path / "*.jpg"))
    with pytest.raises(ValueError, match="source name"):
        parse_source("camera0", name="bad name")


def test_parse_sources_makes_names_unique(tmp_path: Path) -> None:
    names = [spec.name for spec in parse_sources(["camera0", "0", "camera0=camera1", "camera0"])]
    assert names == ["camera0-2", "camera0-3", "camera0", "camera0-4"]
    with pytest.raises(ValueError, match="both named 'a'"):
        parse_sources(["a=camera0", "a=camera1"])


def test_stream_password_stays_out_of_events() -> None:
    events = Events()
    spec = parse_source("rtsp://admin:secret@cam.local/live")
    sources = SourceSet([spec], on_event=events, capture_factory=lambda target: FakeCapture(opened=False))
    sources.start()
    try:
        _wait_for(lambda: len(events.items) > 0)
    finally:
        sources.stop()
    assert "secret" not in events.items[0][2] and "admin:***@cam.local" in events.items[0][2]


def test_live_source_drops_oldest_frames_when_nobody_consumes() -> None:
    spec = parse_source("camera0")
    sources = SourceSet([spec], live_queue_size=3, capture_factory=lambda target: FakeCapture())
    sources.start()
    try:
        _wait_for(lambda: sources.stats()["camera0"]["frames"] >= 30)
    finally:
        sources.stop()
    stats = sources.stats()["camera0"]
    kept = _collect(sources, limit_s=1.0)
    assert stats["state"] == "stopped" and stats["queue"] == 3
    assert stats["drops"] == stats["frames"] - 3
    assert [f.index for f in kept] == list(range(stats["frames"] - 3, stats["frames"]))
    assert [_blue(f) for f in kept] == [f.index % 256 for f in kept]
    assert all(f.path is None for f in kept)


def test_failing_camera_is_reopened_with_backoff() -> None:
    """Two failed opens (one raising), then a capture that ends after 3 frames, then one that keeps going."""
    captures: list[FakeCapture | None] = [
        None,  # the factory raises, as cv2 does for some broken devices
        FakeCapture(opened=False),
        FakeCapture(frames=3),
        FakeCapture(start=3),
    ]
    opened_at: list[float] = []

    def factory(target: str | int) -> FakeCapture:
        assert target == 0
        opened_at.append(time.monotonic())
        capture = captures[min(len(opened_at), len(captures)) - 1]
        if capture is None:
            raise cv2.error("device vanished")
        return capture

    events = Events()
    sources = SourceSet(  # a ring larger than the frames read, so a slow test thread cannot cause drops here
        [parse_source("camera0")], live_queue_size=16, on_event=events, capture_factory=factory,
        backoff_s=(0.02, 0.03),
    )
    sources.start()
    try:
        frames: list[Frame] = []
        while len(frames) < 6:
            frame = sources.get(3.0)
            assert frame is not None, "camera did not come back"
            frames.append(frame)
    finally:
        sources.stop()
    stats = sources.stats()["camera0"]
    assert len(opened_at) == 4 and stats["reopens"] == 3 and stats["errors"] == 3
    gaps = np.diff(opened_at)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.03  # 0.02 doubled, capped at 0.03
    assert gaps[2] >= 0.02  # delay is reset once the camera delivered frames
    assert events.kinds() == ["error", "error", "reopen", "error", "reopen"]
    assert "it was down" in events.items[2][2] and "reopened after 1 failed attempt(s)" in events.items[4][2]
    assert stats["outages"] == 2 and stats["down_since"] is None and stats["down_s"] >= 0.06  # 0.02 + 0.03, then 0.02
    assert "cannot open camera 0 (device vanished)" in events.items[0][2]
    assert "cannot open camera 0" in events.items[1][2]
    assert "stopped delivering" in events.items[3][2]
    assert all(source == "camera0" for _, source, _ in events.items)
    assert [_blue(f) for f in frames] == [0, 1, 2, 3, 4, 5]
    assert all(c.released for c in captures if c is not None)


def test_file_source_applies_back_pressure_and_never_drops(tmp_path: Path) -> None:
    for value in range(10):
        _write_png(tmp_path / "batch" / f"{value:02d}.png", value)
    with SourceSet([parse_source(str(tmp_path / "batch"))], queue_size=2) as sources:
        _wait_for(lambda: sources.stats()["batch"]["queue"] == 2)
        time.sleep(0.05)  # the producer is now blocked on the full queue, not dropping
        assert sources.stats()["batch"]["queue"] == 2 and sources.stats()["batch"]["drops"] == 0
        frames = []
        while not sources.done():
            frame = sources.get(1.0)
            if frame is not None:
                frames.append(frame)
                assert sources.stats()["batch"]["queue"] <= 2
                time.sleep(0.01)
            assert len(frames) <= 10
        stats = sources.stats()["batch"]
    assert [f.index for f in frames] == list(range(10))
    assert stats["drops"] == 0 and stats["frames"] == 10


def test_stop_releases_a_producer_blocked_on_a_full_queue(tmp_path: Path) -> None:
    for value in range(6):
        _write_png(tmp_path / "many" / f"{value}.png", value)
    sources = SourceSet([parse_source(str(tmp_path / "many"))], queue_size=1)
    sources.start()
    _wait_for(lambda: sources.stats()["many"]["queue"] == 1)
    started = time.monotonic()
    sources.stop()
    assert time.monotonic() - started < 1.0
    assert sources.stats()["many"]["state"] == "stopped"
    assert not any(t.name == "source-many" for t in threading.enumerate())


def test_sources_are_served_round_robin(tmp_path: Path) -> None:
    for value in range(3):
        _write_png(tmp_path / "a" / f"{value}.png", value)
        _write_png(tmp_path / "b" / f"{value}.png", value)
    specs = parse_sources([str(tmp_path / "a"), str(tmp_path / "b")])
    with SourceSet(specs) as sources:
        _wait_for(lambda: all(s["queue"] == 3 for s in sources.stats().values()))
        frames = _collect(sources)
    assert [f.source for f in frames] == ["a", "b", "a", "b", "a", "b"]


def test_sources_prepare_model_inputs_in_their_threads_and_skip_failures(tmp_path: Path) -> None:
    for value in range(3):
        _write_png(tmp_path / "imgs" / f"{value}.png", 10 * value)
    workers: set[str] = set()

    def prepare(image: np.ndarray) -> np.ndarray:
        workers.add(threading.current_thread().name)
        if image[0, 0, 2] == 10:  # RGB: blue carries the value
            raise ValueError("unusable frame")
        return image.transpose(2, 0, 1).astype(np.float32)

    events = Events()
    with SourceSet([parse_source(str(tmp_path / "imgs"))], on_event=events, prepare=prepare) as sources:
        frames = _collect(sources)
        stats = sources.stats()["imgs"]
    assert [Path(f.path).name for f in frames] == ["0.png", "2.png"]
    for frame in frames:
        assert np.array_equal(frame.inputs, frame.image.transpose(2, 0, 1)) and frame.preprocess_ms >= 0
    assert workers == {"source-imgs"} and stats["errors"] == 1 and stats["state"] == "finished"
    assert any("1.png" in message and "unusable frame" in message for _, _, message in events.items)


def test_preprocessing_is_timed_in_the_source_threads_cpu_time(tmp_path: Path) -> None:
    """A prepare that waits (for a core, for the GIL: here a sleep) is not charged for the wait; one that
    computes is charged for the work."""
    for value in range(2):
        _write_png(tmp_path / "imgs" / f"{value}.png", 10 * value)

    def prepare(image: np.ndarray) -> np.ndarray:
        if image[0, 0, 2] == 0:
            time.sleep(0.2)
        else:
            start = time.thread_time()
            while time.thread_time() - start < 0.05:  # bounded by this thread's CPU time
                sum(range(1000))
        return image.astype(np.float32)

    with SourceSet([parse_source(str(tmp_path / "imgs"))], on_event=Events(), prepare=prepare) as sources:
        frames = {Path(f.path).name: f for f in _collect(sources)}
    assert frames["0.png"].preprocess_ms < 50
    assert frames["1.png"].preprocess_ms >= 50


# --- looping sources and outages --------------------------------------------------------------------


def _take(sources: SourceSet, count: int, limit_s: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + limit_s
    while len(frames) < count:
        assert time.monotonic() < deadline, f"only {len(frames)} of {count} frames in time"
        if (frame := sources.get(0.05)) is not None:
            frames.append(frame)
    return frames


def _outage_then_recovery(sources: SourceSet, name: str, gone: Callable[[], None], back: Callable[[], None],
                          events: Events) -> tuple[str, list[Frame]]:
    """Take the source away until its outage shows in its stats, bring it back; (reason, frames after that)."""
    gone()
    while sources.get(0.05) is not None or not sources.stats()[name]["down_since"]:
        time.sleep(0.01)  # drain what was read before it vanished, until the outage is reported
    stats_down = sources.stats()[name]
    assert stats_down["state"] == "reconnecting" and stats_down["outages"] == 1
    assert sources.get(0.3) is None  # nothing is delivered while it is gone
    back()
    frames = _take(sources, 3)
    stats = sources.stats()[name]
    assert stats["down_since"] is None and stats["outages"] == 1 and stats["down_s"] >= 0.3
    assert events.kinds()[-1] == "reopen" and "it was down" in events.items[-1][2]
    return stats_down["down_reason"], frames


def test_looping_folder_starts_again_and_waits_out_its_removal(tmp_path: Path) -> None:
    folder = tmp_path / "parts"
    for value in range(3):
        _write_png(folder / f"{value}.png", value)
    spec = parse_source(str(folder), loop=True)
    assert spec.loop and not parse_source(str(folder), watch=True, loop=True).loop
    events = Events()
    with SourceSet([spec], on_event=events, backoff_s=(0.05, 0.1)) as sources:
        frames = _take(sources, 7)
        assert [f.index for f in frames] == list(range(7))
        assert [Path(f.path).name for f in frames] == ["0.png", "1.png", "2.png"] * 2 + ["0.png"]
        assert sources.stats()["parts"]["loops"] >= 2
        reason, after = _outage_then_recovery(sources, "parts", lambda: folder.rename(tmp_path / "away"),
                                              lambda: (tmp_path / "away").rename(folder), events)
    assert "no readable image files (missing, empty or unreadable)" in reason
    assert after[0].index > frames[-1].index and after[0].path.startswith(str(folder))


def test_looping_video_is_retried_with_backoff_while_its_file_is_gone(tmp_path: Path) -> None:
    video = _write_video(tmp_path / "line.avi")
    events = Events()
    with SourceSet([parse_source(str(video), loop=True)], on_event=events, backoff_s=(0.05, 0.1)) as sources:
        frames = _take(sources, VIDEO_FRAMES + 3)
        assert [round(_blue(f) / 20) for f in frames] == list(range(VIDEO_FRAMES)) + [0, 1, 2]
        assert all(f.path == str(video) for f in frames)
        reason, after = _outage_then_recovery(sources, "line", lambda: video.rename(tmp_path / "moved.avi"),
                                              lambda: (tmp_path / "moved.avi").rename(video), events)
        stats = sources.stats()["line"]
    assert reason.startswith(f"cannot open video {video}")
    assert stats["reopens"] >= 1 and stats["loops"] >= 1 and after[0].index > frames[-1].index


def test_watched_folder_that_disappears_is_an_outage(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    _write_png(folder / "first.png", 1)
    events = Events()
    with SourceSet([parse_source(str(folder), watch=True)], on_event=events, poll_s=0.02) as sources:
        assert sources.get(3.0) is not None
        folder.rename(tmp_path / "gone")
        _wait_for(lambda: bool(sources.stats()["incoming"]["down_since"]))
        assert "folder is gone" in sources.stats()["incoming"]["down_reason"]
        (tmp_path / "gone").rename(folder)
        _write_png(folder / "second.png", 2)
        frame = sources.get(3.0)
        assert frame is not None and frame.path == str(folder / "second.png")
    assert sources.stats()["incoming"]["outages"] == 1 and events.kinds()[-1] == "reopen"


def test_looping_folder_of_unreadable_files_backs_off_instead_of_spinning(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with SourceSet([parse_source(str(tmp_path), loop=True)], backoff_s=(0.05, 0.1)) as sources:
        time.sleep(0.6)
    stats = sources.stats()[tmp_path.name]
    assert stats["frames"] == 0 and stats["outages"] == 1 and stats["state"] == "stopped"
    assert 4 <= stats["errors"] <= 20  # one unreadable file and one outage report per pass, 0.05-0.1 s apart
