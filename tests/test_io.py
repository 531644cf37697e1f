"""Atomic writes: no moment without a complete target, crashes recovered, the umask's permissions."""

import os
import stat
import threading
import time

import pytest

from itemlm import io
from itemlm.io import atomic_folder, atomic_write_text


def test_atomic_write_text_uses_the_umask_not_private_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_folder(tmp_path / "model") as staging:
            (staging / "w").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_replacing_a_folder_never_leaves_it_missing(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "v").write_text("1")
    seen_missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not (target / "v").exists():
                seen_missing.append(True)
            time.sleep(0)  # let the writer run

    watcher = threading.Thread(target=watch)
    watcher.start()
    for version in range(2, 20):
        with atomic_folder(target) as staging:
            (staging / "v").write_text(str(version))
    stop.set()
    watcher.join()
    assert (target / "v").read_text() == "19"
    assert not seen_missing
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_a_crash_between_the_fallback_renames_is_recovered(tmp_path, monkeypatch):
    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "v").write_text("old")
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)  # a system without an atomic exchange
    real_replace = os.replace

    def crash_on_second(src, dst):
        if str(dst) == str(target):
            raise KeyboardInterrupt  # killed after the old folder was moved aside
        return real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as staging:
            (staging / "v").write_text("new")
    monkeypatch.setattr(io.os, "replace", real_replace)
    assert not target.exists()
    with atomic_folder(tmp_path / "model") as staging:  # the next writer first puts the old one back
        assert (target / "v").read_text() == "old"
        (staging / "v").write_text("newer")
    assert (target / "v").read_text() == "newer"


def test_a_failing_writer_leaves_the_old_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as staging:
        (staging / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "v").write_text("2")
            raise RuntimeError("boom")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_write_bytes_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "plot.png"
    io.atomic_write_bytes(target, b"\x89PNG old")
    real_fsync = os.fsync

    def crash(fd):  # the new bytes are written but never made durable: the old file must stay
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk gone"):
        io.atomic_write_bytes(target, b"\x89PNG new")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert target.read_bytes() == b"\x89PNG old" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    io.atomic_write_bytes(target, b"\x89PNG new")
    assert target.read_bytes() == b"\x89PNG new"
