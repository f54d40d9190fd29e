"""predict: collecting paths, the batch and the torch backend, predictions in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnistcli.data import normalize
from mnistcli.errors import ImageError
from mnistcli.imaging import Prepared
from mnistcli.loading import module_logits
from mnistcli.predict import collect_paths, predict_paths, softmax, to_batch

# --- collecting paths ----------------------------------------------------------------------


def test_collect_paths_expands_folders_and_globs_and_keeps_errors_in_place(tmp_path):
    (tmp_path / "scans").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", "c.webp"):
        (tmp_path / "scans" / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    found = collect_paths(
        [
            str(tmp_path / "scans"),
            str(tmp_path / "scans" / "*.png"),
            str(tmp_path / "missing.png"),
            str(tmp_path / "*.gif"),
            str(tmp_path / "empty"),
            str(tmp_path / "scans" / "notes.txt"),
        ]
    )
    names = [p.name if isinstance(p, Path) else type(p).__name__ for p in found]
    assert names[:5] == ["a.JPG", "b.png", "c.webp", "b.png", "ImageError"]
    assert names[5:] == ["ImageError", "ImageError", "notes.txt"]
    assert "no such file or folder" in str(found[4]) and found[4].path.endswith("missing.png")
    assert "no files match" in str(found[5])
    assert "holds no images" in str(found[6])


def test_an_unreadable_folder_is_an_error_for_that_folder(tmp_path, monkeypatch):
    def refuse(self):
        raise PermissionError(13, "Permission denied")

    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(Path, "iterdir", refuse)
    [err] = collect_paths([str(tmp_path / "locked")])
    assert isinstance(err, ImageError) and "cannot read this folder (Permission denied)" in str(err)


def test_recursive_globs_list_each_file_once(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 0).save(folder / name)
    found = collect_paths([str(folder) + "/**"])
    assert [p.name for p in found if isinstance(p, Path)] == ["a.png", "b.png"]


# --- the batch and the backend -------------------------------------------------------------


def test_the_batch_is_pixels_over_255_and_the_torch_backend_standardises_as_training():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    batch = to_batch([Prepared(p, False, False, (28, 28), "L") for p in pixels])
    assert batch.shape == (3, 1, 28, 28) and batch.dtype == np.float32
    assert np.array_equal(batch[:, 0], pixels / np.float32(255))
    seen = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 10)

    before = batch.copy()
    logits = module_logits(spy, batch)
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert torch.allclose(seen[0], normalize(torch.from_numpy(pixels)), atol=1e-6)
    assert np.array_equal(batch, before)  # the caller's batch is not changed in place
    assert to_batch([]).shape == (0, 1, 28, 28)


def test_softmax_is_stable_and_sums_to_one():
    probs = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]]))
    assert np.allclose(probs, [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]])


def test_predictions_keep_the_order_and_rank_the_top_k(tmp_path):
    """A backend that answers by the ink's height: a fake model with a known ranking."""
    for name, top in (("tall.png", 5), ("short.png", 40)):
        im = Image.new("L", (60, 60), 255)
        ImageDraw.Draw(im).rectangle((25, top, 32, 50), fill=0)
        im.save(tmp_path / name)
    Image.new("L", (60, 60), 255).save(tmp_path / "blank.png")
    calls = []

    def backend(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        logits = np.zeros((len(batch), 10), np.float32)
        for i, image in enumerate(batch[:, 0]):
            wide = image.any(0).sum() > 10  # the short bar is scaled up to a wide block
            logits[i, [7, 1, 4] if wide else [1, 7, 4]] = [3.0, 2.0, 1.0]
        return logits

    items = [tmp_path / "tall.png", ImageError("no such file", "x.png"), tmp_path / "blank.png"]
    items.append(tmp_path / "short.png")
    preds = list(predict_paths(items, backend, top_k=2, batch_size=3))
    assert [p.status for p in preds] == ["ok", "error", "no digit", "ok"]
    assert calls == [(1, 1, 28, 28), (1, 1, 28, 28)]  # blanks and errors never reach it
    tall, failed, blank, short = preds
    assert tall.digit == 1 and [d for d, _ in tall.top_k] == [1, 7]
    assert short.digit == 7 and short.probability == pytest.approx(
        softmax(np.array([[0, 2.0, 0, 0, 1.0, 0, 0, 3.0, 0, 0]]))[0, 7]
    )
    assert failed.path == "x.png" and failed.error == "x.png: no such file"
    assert blank.digit is None and blank.pixels is not None and blank.pixels.sum() == 0


# --- the worker pool, stdin, low confidence --------------------------------------------------


def bar_image(path: Path, top: int) -> None:
    """Dark ink on light paper: a bar from `top` down to 50 (tall bars stay narrow)."""
    im = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(im).rectangle((25, top, 32, 50), fill=0)
    im.save(path)


def by_width(batch: np.ndarray) -> np.ndarray:
    """A fake model: 7 for a wide block (a short bar scaled up), 1 for a narrow one."""
    logits = np.zeros((len(batch), 10), np.float32)
    for i, image in enumerate(batch[:, 0]):
        logits[i, 7 if image.any(0).sum() > 10 else 1] = 3.0
    return logits


def test_the_pool_keeps_the_input_order_and_isolates_bad_files(tmp_path):
    from mnistcli.predict import POOL_MIN_IMAGES, ImageFeed

    items: list = []
    for i in range(POOL_MIN_IMAGES + 6):
        path = tmp_path / f"{i:03d}.png"
        if i % 9 == 4:
            path.write_text("not an image")  # a damaged file among the good ones
        else:
            bar_image(path, 5 if i % 2 else 40)
        items.append(path)
    items.insert(10, ImageError("no such file or folder", "gone.png"))
    with ImageFeed(items, workers=2) as feed:
        assert feed.workers == 2 and feed._pool is not None
        pooled = list(predict_paths_feed(feed))
    alone = list(predict_paths(items, by_width, workers=1))
    assert [p.path for p in pooled] == [str(getattr(i, "path", None) or i) for i in items]
    assert [(p.digit, p.error) for p in pooled] == [(p.digit, p.error) for p in alone]
    failed = [p for p in pooled if p.error]
    assert len(failed) == 9 and failed[1].reason == "no such file or folder"
    assert all(
        "not an image this program reads" in p.reason for p in failed if p.path != "gone.png"
    )
    assert {p.digit for p in pooled if not p.error} == {1, 7}


def predict_paths_feed(feed):
    from mnistcli.predict import predict_feed

    return predict_feed(feed, by_width, batch_size=32)


def test_one_image_or_one_worker_starts_no_pool(tmp_path):
    from mnistcli.predict import ImageFeed

    bar_image(tmp_path / "a.png", 5)
    with ImageFeed([tmp_path / "a.png"], workers=8) as feed:
        assert feed.workers == 1 and feed._pool is None
        [ready] = list(feed)
    assert not ready.blank
    with ImageFeed([tmp_path / "a.png"] * 100, workers=1) as feed:
        assert feed._pool is None and len(list(feed)) == 100


def test_the_workers_prepare_ahead_while_the_model_loads(tmp_path):
    """Entering the feed queues work for the workers: they prepare hundreds of images while
    this process imports torch and loads the model (seconds), before any is asked for."""
    from mnistcli.predict import CHUNK, ImageFeed

    bar_image(tmp_path / "a.png", 5)
    items = [tmp_path / "a.png"] * 400
    with ImageFeed(items, workers=2) as feed:
        assert feed._next >= len(items)  # every chunk is queued: nothing waits for the caller
        done = [future for _, future in feed._pending]
        for future in done:
            future.result(timeout=60)
        assert len(done) * CHUNK >= len(items)
        assert len(list(feed)) == 400


def test_the_model_computes_on_the_cores_the_workers_leave(tmp_path, monkeypatch):
    from mnistcli import predict
    from mnistcli.predict import ImageFeed

    items = [tmp_path / "a.png"] * 200
    monkeypatch.setattr(predict, "default_workers", lambda: 2)
    assert ImageFeed(items, workers=1).model_threads() is None  # no pool: torch's own default
    assert ImageFeed(items, workers=2).model_threads() == 1
    assert ImageFeed(items, workers=3).model_threads() == 1  # never fewer than one
    monkeypatch.setattr(predict, "default_workers", lambda: 16)
    assert ImageFeed(items, workers=4).model_threads() == 12


def test_default_workers_is_the_cores_this_process_may_use():
    import os

    from mnistcli.predict import default_workers

    assert default_workers() == len(os.sched_getaffinity(0))


def test_a_dash_reads_paths_from_stdin_one_a_line(tmp_path):
    import io

    for name in ("a b.png", "c.png"):
        bar_image(tmp_path / name, 5)
    (tmp_path / "sub").mkdir()
    bar_image(tmp_path / "sub" / "d.png", 5)
    lines = f"{tmp_path / 'a b.png'}\n\n{tmp_path / 'sub'}\n{tmp_path / 'nope*.png'}\r\n"
    found = collect_paths([str(tmp_path / "c.png"), "-"], stdin=io.StringIO(lines))
    names = [p.name if isinstance(p, Path) else p.reason for p in found]
    # a name with a space is kept whole, a folder is expanded, a line is never a glob
    assert names == ["c.png", "a b.png", "d.png", "no such file or folder"]


def test_low_confidence_is_marked_and_json_keeps_the_raw_probability(tmp_path):
    bar_image(tmp_path / "a.png", 5)

    def unsure(batch: np.ndarray) -> np.ndarray:
        return np.tile(np.array([[2.0, 2.1, 0, 0, 0, 0, 0, 0, 0, 0]], np.float32), (len(batch), 1))

    [pred] = predict_paths([tmp_path / "a.png"], unsure, min_confidence=0.5)
    assert pred.digit == 1 and pred.probability < 0.5 and pred.low_confidence
    doc = pred.to_dict()
    assert doc["low_confidence"] is True and doc["probability"] == pred.probability
    [sure] = predict_paths([tmp_path / "a.png"], by_width, min_confidence=0.5)
    assert not sure.low_confidence and sure.to_dict()["probability"] == sure.probability


def test_an_image_error_crosses_processes_whole():
    import pickle

    err = pickle.loads(pickle.dumps(ImageError("bad header", "x.png")))
    assert (err.reason, err.path, str(err)) == ("bad header", "x.png", "x.png: bad header")


def test_a_file_that_kills_its_worker_is_reported_and_the_rest_still_prepared(
    tmp_path, monkeypatch
):
    """A decoder crash takes its worker down: the pool is restarted, the lost chunk retried
    one file at a time, and only the file that kills a worker is reported."""
    import multiprocessing
    import os

    import mnistcli.predict as predict_module
    from mnistcli.predict import ImageFeed

    main, real = os.getpid(), predict_module.load_image

    def deadly(path: Path, raw: bool = False) -> Prepared:
        if path.name == "070.png" and os.getpid() != main:
            os._exit(1)  # as a segfault in a decoder would
        return real(path, raw=raw)

    # fork, so the workers inherit the patched function
    monkeypatch.setattr(
        predict_module, "_pool_context", lambda: multiprocessing.get_context("fork")
    )
    monkeypatch.setattr(predict_module, "load_image", deadly)
    items = [tmp_path / f"{i:03d}.png" for i in range(80)]
    for path in items:
        bar_image(path, 5)
    with ImageFeed(items, workers=2) as feed:
        ready = list(feed)
    assert len(ready) == 80 and isinstance(ready[70], ImageError)
    assert ready[70].reason == "preparing this image stopped its process"
    assert all(isinstance(r, Prepared) for i, r in enumerate(ready) if i != 70)


def test_workers_that_cannot_start_leave_the_work_to_this_process(tmp_path, monkeypatch):
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import mnistcli.predict as predict_module
    from mnistcli.predict import ImageFeed

    class Broken:  # a pool whose every worker died at start (a main module it cannot import)
        def __init__(self, *args, **kwargs) -> None:
            pass

        def submit(self, *args, **kwargs) -> Future:
            future: Future = Future()
            future.set_exception(BrokenProcessPool("died at start"))
            return future

        def shutdown(self, **kwargs) -> None:
            pass

    monkeypatch.setattr(predict_module, "ProcessPoolExecutor", Broken)
    items = [tmp_path / f"{i:03d}.png" for i in range(70)]
    for path in items:
        bar_image(path, 5)
    with ImageFeed(items, workers=2) as feed:
        ready = list(feed)
    assert len(ready) == 70 and all(isinstance(r, Prepared) for r in ready)


def test_a_folder_s_hidden_files_are_not_predicted(tmp_path):
    bar_image(tmp_path / "a.png", 5)
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata
    assert collect_paths([str(tmp_path)]) == [tmp_path / "a.png"]
    assert isinstance(collect_paths(["~nosuchuser-mnistcli/a.png"])[0], ImageError)
