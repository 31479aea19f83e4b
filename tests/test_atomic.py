"""hetrain._atomic: the one atomic writer (protocol.files re-exports it; ckks and outputs use it)."""
import os
import stat
import threading

import pytest

from hetrain import _atomic
from hetrain._atomic import atomic_write, atomic_writer, temp_sibling
from hetrain.protocol import files


def test_protocol_files_reexports_the_one_writer():
    assert files.atomic_write is atomic_write and not hasattr(files, "atomic_writer")  # re-exported only where used


def test_writes_whole_file_with_mode_and_leaves_nothing_else(tmp_path):
    p = tmp_path / "key.bin"
    atomic_write(p, b"secret", durable=True, mode=0o600)
    assert p.read_bytes() == b"secret" and stat.S_IMODE(p.stat().st_mode) == 0o600
    atomic_write(p, "text é")  # str: UTF-8; default mode from the umask
    assert p.read_text(encoding="utf-8") == "text é"
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~_atomic.UMASK
    assert sorted(os.listdir(tmp_path)) == ["key.bin"]


def test_failure_inside_the_block_keeps_the_old_file(tmp_path):
    p = tmp_path / "model.json"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_writer(p) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk gone")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["model.json"]


def test_exclusive_refuses_an_existing_file(tmp_path):
    p = tmp_path / "channel.json"
    atomic_write(p, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        atomic_write(p, "second", exclusive=True)
    assert p.read_text() == "first" and sorted(os.listdir(tmp_path)) == ["channel.json"]


def test_temporary_names_are_unique_across_threads(tmp_path):
    names, lock = [], threading.Lock()

    def make():
        fd, name = temp_sibling(tmp_path / "out.bin")
        os.close(fd)
        with lock:
            names.append(name)

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 16
    assert all(os.path.dirname(n) == str(tmp_path) and os.path.basename(n).startswith(".out.bin.") for n in names)


def test_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "nowhere" / "f.bin", b"x")
