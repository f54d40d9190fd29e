import gzip
import math
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnistcli import data
from mnistcli.errors import DataError


def idx_images(n: int, rows: int = 28, cols: int = 28, fill: int = 7) -> bytes:
    return struct.pack(">IIII", 2051, n, rows, cols) + bytes([fill]) * (n * rows * cols)


def idx_labels(labels: list[int]) -> bytes:
    return struct.pack(">II", 2049, len(labels)) + bytes(labels)


@pytest.fixture
def fake_files(monkeypatch):
    """Four small IDX files and a FILES table with their checksums."""
    contents = {
        "train-images-idx3-ubyte": idx_images(12, fill=1),
        "train-labels-idx1-ubyte": idx_labels([i % 10 for i in range(12)]),
        "t10k-images-idx3-ubyte": idx_images(4, fill=2),
        "t10k-labels-idx1-ubyte": idx_labels([1, 2, 3, 4]),
    }
    table = {name: (data.md5_of(raw), len(raw)) for name, raw in contents.items()}
    monkeypatch.setattr(data, "FILES", table)
    return contents


def test_parse_idx_images_and_labels():
    images = data.parse_idx(idx_images(3, 2, 4, fill=9), expect_images=True)
    assert images.shape == (3, 2, 4) and images.dtype == torch.uint8 and int(images[2, 1, 3]) == 9
    labels = data.parse_idx(idx_labels([3, 1, 4]), expect_images=False)
    assert labels.tolist() == [3, 1, 4]


@pytest.mark.parametrize(
    ("raw", "images", "fragment"),
    [
        (b"\x00\x00", True, "too short"),
        (idx_labels([1, 2]), True, "too short"),
        (idx_images(2)[:-1], True, "promises"),
        (idx_images(1), False, "magic number is 2051, expected 2049"),
    ],
)
def test_parse_idx_rejects_malformed_data(raw, images, fragment):
    with pytest.raises(DataError, match=fragment):
        data.parse_idx(raw, expect_images=images)


@st.composite
def idx_files(draw) -> tuple[bytes, bool, torch.Tensor]:
    """A well-formed IDX file of images or labels with random sizes and contents, and the
    tensor it holds."""
    images = draw(st.booleans())
    count = draw(st.integers(0, 6))
    shape = (count, draw(st.integers(1, 5)), draw(st.integers(1, 5))) if images else (count,)
    payload = draw(st.binary(min_size=math.prod(shape), max_size=math.prod(shape)))
    header = struct.pack(">IIII", 2051, *shape) if images else struct.pack(">II", 2049, count)
    return header + payload, images, torch.tensor(list(payload), dtype=torch.uint8).reshape(shape)


@settings(max_examples=100, deadline=None)
@given(idx_files())
def test_parse_idx_reads_every_well_formed_file(file):
    raw, images, expected = file
    out = data.parse_idx(raw, expect_images=images)
    assert out.dtype == torch.uint8 and out.shape == expected.shape
    assert torch.equal(out, expected)


@settings(max_examples=200, deadline=None)
@given(idx_files(), st.sampled_from(["cut", "extend", "magic", "kind"]), st.data())
def test_parse_idx_refuses_every_damaged_file_with_data_error(file, damage, draw):
    """A valid file cut short, grown, with another magic number, or read as the other kind:
    always DataError saying which, never another exception or a tensor."""
    raw, images, _ = file
    header = 16 if images else 8
    if damage == "cut":
        raw = raw[: draw.draw(st.integers(0, len(raw) - 1))]
        fragment = "too short" if len(raw) < header else "promises"
    elif damage == "extend":
        raw += draw.draw(st.binary(min_size=1, max_size=32))
        fragment = "promises"
    elif damage == "magic":
        magic = draw.draw(st.integers(0, 2**32 - 1).filter(lambda m: m not in (2049, 2051)))
        raw = struct.pack(">I", magic) + raw[4:]
        fragment = f"magic number is {magic}, expected {2051 if images else 2049}"
    else:  # an images file where labels are expected, or the other way round
        images = not images
        fragment = "too short|magic number is"
    with pytest.raises(DataError, match=fragment):
        data.parse_idx(raw, expect_images=images)


def test_mirrors_are_tried_in_order_and_bad_ones_skipped(tmp_path, fake_files):
    missing = tmp_path / "missing"
    corrupt = tmp_path / "corrupt"
    good = tmp_path / "good"
    corrupt.mkdir()
    good.mkdir()
    for name, raw in fake_files.items():
        (corrupt / name).write_bytes(raw[:-1] + b"\xff")  # wrong checksum
        (good / f"{name}.gz").write_bytes(gzip.compress(raw))  # gzipped, verified decompressed
    messages: list[str] = []
    root = tmp_path / "root"
    mnist = data.load_mnist(
        root, [str(missing), str(corrupt), str(good)], on_message=messages.append
    )
    assert mnist.train_images.shape == (12, 28, 28) and mnist.test_labels.tolist() == [1, 2, 3, 4]
    assert all(f"from {good}" in m for m in messages) and len(messages) == 4
    assert sorted(p.name for p in root.iterdir()) == sorted(fake_files)  # cached, decompressed


def test_corrupt_cached_file_is_replaced(tmp_path, fake_files):
    good = tmp_path / "good"
    good.mkdir()
    for name, raw in fake_files.items():
        (good / name).write_bytes(raw)
    root = tmp_path / "root"
    data.load_mnist(root, [str(good)])
    cached = root / "train-images-idx3-ubyte"
    cached.write_bytes(cached.read_bytes()[:100])  # truncated, as by a crash
    messages: list[str] = []
    data.load_mnist(root, [str(good)], on_message=messages.append)
    assert cached.read_bytes() == fake_files["train-images-idx3-ubyte"]
    assert any("corrupt or incomplete" in m for m in messages)


def test_nothing_works_gives_one_error_listing_what_was_tried(tmp_path, fake_files):
    with pytest.raises(DataError) as err:
        data.load_mnist(tmp_path / "root", [str(tmp_path / "a"), "http://127.0.0.1:9/mnist/"])
    msg = str(err.value)
    assert str(tmp_path / "a") in msg and "127.0.0.1:9" in msg and "--data DIR" in msg
    assert "\n" not in msg


@pytest.mark.slow
def test_real_mnist_is_verified_and_shaped(real_mnist):
    assert real_mnist.train_images.shape == (60000, 28, 28)
    assert real_mnist.test_images.shape == (10000, 28, 28)
    assert real_mnist.train_labels.bincount().tolist()[:2] == [5923, 6742]


def test_validation_split_is_disjoint_reproducible_and_seeded():
    a = data.split_indices(1000, 100, seed=3)
    b = data.split_indices(1000, 100, seed=3)
    c = data.split_indices(1000, 100, seed=4)
    assert torch.equal(a.val, b.val) and torch.equal(a.train, b.train)
    assert not torch.equal(a.val, c.val)
    assert len(a.val) == 100 and len(a.train) == 900
    assert set(a.val.tolist()).isdisjoint(a.train.tolist())
    limited = data.split_indices(1000, 100, seed=3, limit=50)
    assert len(limited.train) == 50 and torch.equal(limited.val, a.val)


def test_url_mirror_over_http_on_loopback(tmp_path, fake_files):
    """A base-URL mirror: the .gz files are fetched over HTTP, verified and cached."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    for name, raw in fake_files.items():
        (served / f"{name}.gz").write_bytes(gzip.compress(raw))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        messages: list[str] = []
        mnist = data.load_mnist(
            tmp_path / "root", [str(tmp_path / "nothing-here"), url], on_message=messages.append
        )
    finally:
        server.shutdown()
        server.server_close()
    assert mnist.test_labels.tolist() == [1, 2, 3, 4]
    assert len(messages) == 4 and all(url in m for m in messages)
    assert (tmp_path / "root" / "train-labels-idx1-ubyte").read_bytes() == fake_files[
        "train-labels-idx1-ubyte"
    ]


def test_one_part_opens_only_its_two_files(tmp_path, fake_files, monkeypatch):
    """eval on the test split loads the t10k files alone: a mirror holding nothing else works,
    and the training files are never looked for."""
    only_test = tmp_path / "only-test"
    only_test.mkdir()
    for name in data.PART_FILES["test"]:
        (only_test / f"{name}.gz").write_bytes(gzip.compress(fake_files[name]))
    looked_up: list[str] = []
    real = data.ensure_file
    monkeypatch.setattr(
        data, "ensure_file", lambda name, *a, **k: looked_up.append(name) or real(name, *a, **k)
    )
    events: list[data.FileProgress] = []
    root = tmp_path / "root"
    part = data.load_part(root, [str(only_test)], "test", on_progress=events.append)
    assert part.labels.tolist() == [1, 2, 3, 4] and part.images.shape == (4, 28, 28)
    assert looked_up == list(data.PART_FILES["test"])
    assert sorted(p.name for p in root.iterdir()) == sorted(data.PART_FILES["test"])
    # each file checked to its last byte, after fetching (from a folder: no download steps)
    last = {e.name: e for e in events if e.action == "checking"}
    assert {n: (e.done, e.total) for n, e in last.items()} == {
        n: (data.FILES[n][1],) * 2 for n in data.PART_FILES["test"]
    }
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        data.load_part(root, [str(only_test)], "train")


@pytest.mark.slow
def test_train_count_is_the_training_part_size(real_mnist):
    assert data.TRAIN_COUNT == len(real_mnist.train_labels) == 60_000
