import errno
import os
import stat

import pytest

from mnistcli.files import write_all_atomic, write_atomic
from tests.helpers import HalfWrite


def test_write_atomic_replaces_whole_files_with_ordinary_permissions(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, b"first")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    path.chmod(0o640)
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # an existing file keeps its mode
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    write_atomic(path, b"old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    """The disk fills up in the middle of the data: the half-written temporary file is removed,
    the old file is byte for byte what it was, and the error names the file."""
    path = tmp_path / "last.pt"
    old = os.urandom(100_000)
    write_atomic(path, old)
    half = HalfWrite().install(monkeypatch)
    new = os.urandom(1_000_000)
    with pytest.raises(OSError) as failure:
        write_atomic(path, new)
    [(temp, size)] = half.partial
    assert temp.parent == tmp_path and temp.name.startswith(".last.pt.")
    assert size == 500_000  # the failure came half-way through the write
    assert failure.value.errno == errno.ENOSPC and failure.value.filename == str(path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_write_all_atomic_replaces_every_file_and_removes_those_mapped_to_none(tmp_path):
    report, figure, gallery = (tmp_path / n for n in ("eval.json", "matrix.png", "mistakes.png"))
    for path in (report, gallery):
        path.write_bytes(b"old")
    write_all_atomic({figure: b"new figure", gallery: None, report: b"new report"})
    assert report.read_bytes() == b"new report" and figure.read_bytes() == b"new figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "matrix.png"]


def test_write_all_atomic_failing_half_way_leaves_every_file_as_it_was(tmp_path, monkeypatch):
    """The disk fills up while the second of three files is staged: the first, already staged,
    is never renamed into place, the file to remove stays, every temporary file is removed,
    and the error names the file being written."""
    old = {name: os.urandom(1000) for name in ("matrix.png", "mistakes.png", "eval.json")}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    half = HalfWrite(skip=1).install(monkeypatch)
    with pytest.raises(OSError) as failure:
        write_all_atomic(
            {
                tmp_path / "matrix.png": b"new figure",
                tmp_path / "mistakes.png": None,
                tmp_path / "eval.json": os.urandom(10_000),
            }
        )
    [(temp, size)] = half.partial
    assert temp.name.startswith(".eval.json.") and size == 5_000
    assert failure.value.errno == errno.ENOSPC
    assert failure.value.filename == str(tmp_path / "eval.json")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old
