"""loading: what --checkpoint names -> one LoadedModel, whatever the file (.pt, .safetensors,
.onnx), with the same logits from each; what it refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnistcli import export
from mnistcli.data import normalize
from mnistcli.errors import CheckpointError
from mnistcli.loading import LoadedModel, load_model, module_logits, open_model
from tests.helpers import make_settings, synthetic_mnist

MNIST = synthetic_mnist(n_train=300, n_test=60)
X = MNIST.test_images[:20][:, None].numpy().astype(np.float32) / 255  # (20, 1, 28, 28)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """runs/test: a model trained one epoch on synthetic digits, exported to .onnx and
    .safetensors beside its checkpoints."""
    from mnistcli.train import train

    tmp = tmp_path_factory.mktemp("loading")
    result = train(make_settings(tmp, epochs=1, val_size=60, batch_size=32), MNIST)
    for fmt in ("onnx", "safetensors"):
        export.export_model(result.run_dir / "best.pt", fmt, MNIST.test_images, MNIST.test_labels)
    return result.run_dir


def reference(run: Path) -> np.ndarray:
    model, _ = load_model(run / "best.pt")
    with torch.inference_mode():
        return model(normalize(MNIST.test_images[:20])).numpy()


def test_checkpoint_arguments_resolve_to_the_run_best_pt(run):
    runs_dir = run.parent
    for arg in (None, "latest", str(run), run / "best.pt"):
        loaded = open_model(arg, "cpu", runs_dir=runs_dir)
        assert loaded.path.resolve() == (run / "best.pt").resolve(), arg
        assert loaded.description == "simplecnn, epoch 1" and loaded.device == "cpu"
        assert loaded.meta is not None and loaded.require_meta().model == "simplecnn"
        assert isinstance(loaded.module, torch.nn.Module) and not loaded.module.training
    with pytest.raises(CheckpointError, match="no trained model found"):
        open_model(None, runs_dir=runs_dir / "empty")


def test_every_file_gives_the_checkpoint_logits(run):
    expected = reference(run)
    for name in ("best.pt", "model.safetensors", "model.onnx"):
        loaded = open_model(run / name, "cpu", channels_last=True)
        got = loaded.logits(X)
        assert got.shape == (20, 10) and got.dtype == np.float32, name
        assert np.abs(got - expected).max() <= 1e-4, name
        assert np.array_equal(loaded(X), got), name  # calling it is `logits`
        assert np.allclose(loaded.logits(X, batch_size=7), got, atol=1e-5), name
        assert loaded.logits(X[:0]).shape == (0, 10), name
    onnx = open_model(run / "model.onnx", "auto")
    assert onnx.module is None and onnx.device == "cpu (onnxruntime)"
    assert onnx.meta == open_model(run).meta  # the run's description travels with the export


def test_need_module_reads_the_onnx_weights_into_pytorch(run):
    original, _ = load_model(run / "best.pt")
    loaded = open_model(run / "model.onnx", "cpu", need_module=True)
    assert loaded.module is not None and loaded.device == "cpu"
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor), name
    assert np.abs(loaded.logits(X) - reference(run)).max() <= 1e-4


def test_module_logits_standardise_pixels_as_training(run):
    model, _ = load_model(run / "best.pt")
    assert np.abs(module_logits(model, X) - reference(run)).max() <= 1e-5


def test_an_onnx_without_mnistcli_metadata_predicts_but_describes_no_run(run, tmp_path):
    import onnx

    proto = onnx.load(str(run / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    loaded = open_model(tmp_path / "foreign.onnx")
    assert isinstance(loaded, LoadedModel) and loaded.meta is None
    assert loaded.description == "ONNX model"
    assert np.abs(loaded.logits(X) - reference(run)).max() <= 1e-4
    with pytest.raises(CheckpointError, match="was not written by 'mnistcli export'"):
        loaded.require_meta()


def test_a_pt2_program_is_refused_unread(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not even a zip")  # refused by its name: torch.export.load never runs
    with pytest.raises(CheckpointError, match="loading one can run code"):
        open_model(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        open_model(tmp_path / "missing.onnx")


def test_threads_sets_the_threads_the_model_computes_on(run):
    before = torch.get_num_threads()
    try:
        open_model(run / "best.pt", "cpu", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    onnx = open_model(run / "model.onnx", "cpu", threads=1)
    session = onnx.run.__self__.session  # type: ignore[attr-defined]
    assert session.get_session_options().intra_op_num_threads == 1
