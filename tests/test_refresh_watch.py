"""The generic file-watch reload mechanism (FileWatcher, WatchedFile, the Reloadable protocol)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from originshield.files import FileSignature, FileWatcher, Reloadable, WatchedFile


def _replace_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_file_watcher_sees_atomic_replace_with_same_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("aaaa")
    before = FileSignature.of(path)
    watcher = FileWatcher(path)
    assert watcher.changed() is None
    _replace_atomically(path, "bbbb")
    os.utime(path, ns=(before.mtime_ns, before.mtime_ns))  # same size, same mtime: only the inode differs
    sig = watcher.changed()
    assert sig is not None
    assert sig.inode != before.inode
    watcher.mark(sig)
    assert watcher.changed() is None


def test_file_watcher_sees_in_place_rewrite_and_older_mtime(tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("aaaa")
    watcher = FileWatcher(path)
    st = path.stat()
    os.utime(path, ns=(st.st_mtime_ns - 10**9, st.st_mtime_ns - 10**9))  # a restored backup
    assert watcher.changed() is not None


def test_file_watcher_missing_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("x")
    watcher = FileWatcher(path)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        watcher.changed()


class _Resource:
    def __init__(self, path: str) -> None:
        text = Path(path).read_text()
        if text.startswith("broken"):
            raise ValueError("unusable file")
        self.text = text
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_watched_file_swaps_before_closing_and_keeps_old_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "db.txt"
    path.write_text("one")
    watched = WatchedFile(path, _Resource, _Resource.close, name="test-db")
    assert isinstance(watched, Reloadable)
    first = watched.current
    assert watched.check() is False

    _replace_atomically(path, "two")
    assert watched.check() is True
    second = watched.current
    assert second.text == "two"
    # The old version is still open: a request that read it before the swap can finish with it.
    assert first.closed is False
    assert watched.check() is False
    assert first.closed is True  # closed one check later

    _replace_atomically(path, "broken!")
    with pytest.raises(ValueError, match="unusable"):
        watched.check()
    assert watched.current is second
    assert not second.closed
    assert watched.check() is False  # the same broken version is not retried every tick

    _replace_atomically(path, "three")
    assert watched.check() is True
    assert watched.current.text == "three"
    assert watched.reloads == 2
    watched.close()
    assert watched.current.closed
    assert second.closed
