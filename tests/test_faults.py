"""Faults with real processes, files and sockets: vanishing sources, bad subscribers, SIGKILL, a full disk.

Every test runs `inspect-run` as its own process on the tiny bundle and talks to it over loopback TCP.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from runtime_process import RuntimeProcess, Subscriber, journal_lines, wait_for

SLOW_SUBSCRIBER = """
import json, signal, sys, time, zmq
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVHWM, 5)
sock.setsockopt(zmq.RCVBUF, 4096)
sock.connect(sys.argv[1])
sock.subscribe(b"verdict.")
print("subscribed", flush=True)
seqs = []
while not stop and len(seqs) < int(sys.argv[2]):
    if sock.poll(100):
        seqs.append(json.loads(sock.recv_multipart()[1])["seq"])
        time.sleep(0.05)
print(json.dumps(seqs), flush=True)
"""
SLOW_READS = 300  # > --send-hwm 200 + its RCVHWM 5 + the few dozen frames the kernel's buffers hold
IDLE_SUBSCRIBER = """
import sys, time, zmq
sock = zmq.Context().socket(zmq.SUB)
sock.setsockopt(zmq.RCVBUF, 4096)
sock.connect(sys.argv[1])
sock.subscribe(b"verdict.")
print("subscribed", flush=True)
time.sleep(600)
"""


def _video(images: Path, out: Path, count: int = 8) -> Path:
    frames = [cv2.imread(str(p)) for p in sorted(images.rglob("*.png"))[:count]]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return out


def _by_source(sub: Subscriber, name: str) -> list[dict]:
    return [h for h in sub.verdicts if h["source"] == name]


def test_video_that_disappears_is_retried_while_the_other_source_keeps_serving(
        tiny_bundle: Path, tiny_images: Path, tmp_path: Path) -> None:
    video = _video(tiny_images, tmp_path / "line.avi")
    runtime = RuntimeProcess(["--bundle", str(tiny_bundle), "--source", f"cam={video}", "--source",
                              f"parts={tiny_images / 'good'}", "--loop", "--batch", "2", "--summary",
                              str(tmp_path / "summary.json"), "--journal", str(tmp_path / "j.jsonl")])
    sub = Subscriber(runtime.endpoint(), topics=(b"verdict.", b"status."))
    sub.start()
    try:
        wait_for(lambda: _by_source(sub, "cam") and _by_source(sub, "parts"), 180, "verdicts from both sources")
        video.rename(tmp_path / "moved.avi")  # the camera is gone: its next reopen fails
        wait_for(lambda: any(s["sources"]["cam"]["down_since"] for s in sub.statuses[-3:]), 180,
                 "the status topic to report the outage")
        down = next(s for s in reversed(sub.statuses) if s["sources"]["cam"]["down_since"])["sources"]["cam"]
        assert down["state"] == "reconnecting" and down["outages"] == 1 and "cannot open video" in down["down_reason"]
        parts_during = len(_by_source(sub, "parts"))
        wait_for(lambda: len(_by_source(sub, "parts")) > parts_during + 10, 180, "the other source to keep serving")
        assert all(h["t_capture"] < down["down_since"] for h in _by_source(sub, "cam")), "the vanished video delivered"
        (tmp_path / "moved.avi").rename(video)
        restored = time.time()
        wait_for(lambda: any(h["t_capture"] > restored for h in _by_source(sub, "cam")), 180, "the video to return")
        wait_for(lambda: sub.statuses[-1]["sources"]["cam"]["down_since"] is None, 60, "the outage to end")
    finally:
        status, stdout, log = runtime.finish()
        sub.stop()
    assert status == 0, log
    summary = json.loads((tmp_path / "summary.json").read_text())
    cam = summary["sources"]["cam"]
    assert cam["outages"] == 1 and cam["down_s"] >= 0.5 and cam["reopens"] >= 1 and cam["loops"] >= 1
    assert summary["sources"]["parts"]["outages"] == 0 and summary["outages"] == 1
    assert "source cam: 1 outage(s)" in stdout and "reopened after" in log and "it was down" in log
    assert summary["frames"] == len(journal_lines(tmp_path / "j.jsonl"))


def test_late_slow_and_vanished_subscribers_never_block_the_runtime(tiny_bundle: Path, tmp_path: Path) -> None:
    """A fast subscriber loses nothing while others are slow (sees gaps), stalled (SIGSTOP), killed or late.

    Progress is counted in verdicts, not seconds, so the test means the same on a fast or a loaded machine:
    the slow one reads 20 verdicts a second while 1500 are published, far more than its queues hold, and it
    reads SLOW_READS, more than its queues hold, so it reaches what was published after they filled. Frames
    of noise (~100 KB as JPEG) are sent with every verdict, so the kernel's socket buffers (up to a few MB)
    hold only a few dozen of them and the publisher's queue (--send-hwm 200) is what fills up.
    """
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        cv2.imwrite(str(noise / f"{index}.png"), rng.integers(0, 256, (384, 384, 3), dtype=np.uint8))
    runtime = RuntimeProcess(["--bundle", str(tiny_bundle), "--source", str(noise), "--loop",
                              "--send-frames", "--send-hwm", "200", "--wait-subscribers", "1",
                              "--journal", str(tmp_path / "j.jsonl"), "--summary", str(tmp_path / "s.json")])
    endpoint = runtime.endpoint()
    fast = Subscriber(endpoint, rcvhwm=0)
    fast.start()
    others = {name: subprocess.Popen([sys.executable, "-c", script, endpoint, str(SLOW_READS)], stdout=subprocess.PIPE,
                                     text=True)
              for name, script in (("stalled", IDLE_SUBSCRIBER), ("killed", IDLE_SUBSCRIBER),
                                   ("slow", SLOW_SUBSCRIBER))}
    late = Subscriber(endpoint, rcvhwm=0)
    try:
        assert all(p.stdout.readline() == "subscribed\n" for p in others.values())
        others["stalled"].send_signal(signal.SIGSTOP)  # still connected, reads nothing: the worst kind of slow
        start = len(fast.verdicts)
        wait_for(lambda: len(fast.verdicts) > start + 500, 300, "500 verdicts")
        others["killed"].kill()  # vanishes mid-run
        late.start()
        wait_for(lambda: len(fast.verdicts) > start + 1500, 600, "1500 verdicts")
        slow_seqs = json.loads(others["slow"].communicate(timeout=120)[0])  # it stops after SLOW_READS verdicts
        before = len(fast.verdicts)
        wait_for(lambda: len(fast.verdicts) > before + 50, 120, "publishing to go on")
    finally:
        status, _, log = runtime.finish()
        for process in others.values():
            process.kill()
            process.wait()
        fast.stop()
        if late.is_alive():
            late.stop()
    assert status == 0, log
    published = json.loads((tmp_path / "s.json").read_text())["frames"]
    assert fast.seqs() == list(range(published)), "the fast subscriber lost verdicts"
    assert [h["seq"] for h in journal_lines(tmp_path / "j.jsonl")] == list(range(published))
    print("SLOW", len(slow_seqs), slow_seqs[:5], slow_seqs[-5:], "PUB", published)
    jumps = [b - a for a, b in zip(slow_seqs, slow_seqs[1:], strict=False)]
    assert all(jump >= 1 for jump in jumps) and any(jump > 1 for jump in jumps), "the slow subscriber saw no gap"
    assert late.seqs()[0] > start + 500 and late.seqs() == list(range(late.seqs()[0], published))


def test_sigkill_leaves_whole_lines_and_every_received_verdict_journalled_then_seq_continues(
        tiny_bundle: Path, tiny_images: Path, tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    runtime = RuntimeProcess(["--bundle", str(tiny_bundle), "--source", str(tiny_images), "--loop",
                              "--wait-subscribers", "1", "--journal", str(journal)])
    sub = Subscriber(runtime.endpoint())
    sub.start()
    try:
        wait_for(lambda: len(sub.verdicts) >= 40, 180, "40 verdicts")
    finally:
        runtime.finish(signal.SIGKILL)
        sub.stop()
    lines = journal_lines(journal)
    assert [h["seq"] for h in lines] == list(range(len(lines)))
    by_seq = {h["seq"]: h for h in lines}
    assert all(by_seq[h["seq"]] == h for h in sub.verdicts), "a received verdict is missing from the journal"
    assert len(sub.verdicts) >= 40 and len(lines) >= len(sub.verdicts)

    restarted = RuntimeProcess(["--bundle", str(tiny_bundle), "--source", str(tiny_images / "good"),
                                "--wait-subscribers", "1", "--journal", str(journal)])
    again = Subscriber(restarted.endpoint())
    again.start()
    status, _, log = restarted.finish(sig=None)
    again.stop()
    assert status == 0, log
    first = len(lines)
    count = len(list((tiny_images / "good").iterdir()))
    assert again.seqs() == list(range(first, first + count)), "seq did not continue from the journal"
    assert [h["seq"] for h in journal_lines(journal)] == list(range(first + count))


def _file_size_limit(limit: int) -> Callable[[], None]:
    """A preexec_fn: the child may write files of at most ``limit`` bytes."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_journal_disk_full_follows_on_journal_error(tiny_bundle: Path, tiny_images: Path, tmp_path: Path,
                                                    policy: str) -> None:
    folder = tmp_path / "images"
    shutil.copytree(tiny_images, folder)
    images = len(list(folder.rglob("*.png")))
    journal, summary_file = tmp_path / "journal" / "j.jsonl", tmp_path / "s.json"
    limit = 6000  # bytes: room for a few verdict lines of ~1 KB each
    runtime = RuntimeProcess(["--bundle", str(tiny_bundle), "--source", str(folder), "--journal", str(journal),
                              "--wait-subscribers", "1", "--summary", str(summary_file), "--batch", "1",
                              "--on-journal-error", policy], preexec_fn=_file_size_limit(limit))
    sub = Subscriber(runtime.endpoint())
    sub.start()
    status, stdout, stderr = runtime.finish(sig=None)
    sub.stop()
    lines = journal_lines(journal)
    assert 0 < len(lines) < images and journal.stat().st_size <= limit
    assert [h["seq"] for h in lines] == list(range(len(lines)))
    summary = json.loads(summary_file.read_text())
    assert summary["journal"]["written"] == len(lines)
    if policy == "stop":
        assert status == 2 and "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith(
            f"Error: journal {journal}: cannot write verdict seq {len(lines)} (the file-size limit is reached)")
        assert "stopping (--on-journal-error stop)" in stderr
        assert sub.verdicts == lines, "a verdict was published without being journalled"
        assert summary["frames"] == len(lines) and summary["failure"]
    else:
        assert status == 0, stderr
        assert summary["frames"] == images == len(sub.verdicts) and summary["journal"]["lost"] == images - len(lines)
        assert sub.verdicts[: len(lines)] == lines
        assert "verdicts are still published but not journalled" in stderr
        assert f"{images - len(lines)} verdict(s) not journalled" in stdout


def test_hostile_files_in_a_source_are_skipped_and_counted(tiny_bundle: Path, tiny_images: Path,
                                                           tmp_path: Path) -> None:
    from hostile_images import bombs, broken

    from linewatch.runtime.pipeline import RunOptions, Runtime

    folder = tmp_path / "line"
    shutil.copytree(tiny_images / "good", folder)
    good = len(list(folder.iterdir()))
    hostile = {**bombs(), **broken()}
    for name, data in hostile.items():
        (folder / f"x-{name}").write_bytes(data)
    summary = Runtime(RunOptions(bundle=tiny_bundle, sources=(str(folder),), publish="tcp://127.0.0.1:*",
                                 device="cpu")).run()
    assert summary["frames"] == good and summary["errors"] == len(hostile)
    assert os.path.getsize(folder / "x-bomb.png") < 10_000
