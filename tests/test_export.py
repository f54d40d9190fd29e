"""`mnistcli export`: the ONNX contract and metadata, the self-check (and what a failed one
leaves), safetensors and pt2 read back, eval on model.onnx, onnxruntime without torch, bad
input, and the docs' onnxruntime example (docs/export.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from mnistcli import export
from mnistcli.cli import app
from mnistcli.config import resolve
from mnistcli.data import Images, normalize
from mnistcli.errors import CheckpointError, ConfigError, ExportError, OutputError
from mnistcli.loading import load_model
from mnistcli.onnx_runtime import OnnxModel
from tests.helpers import REPO, make_settings, run_cli, synthetic_mnist

runner = CliRunner()
MNIST = synthetic_mnist(n_train=500, n_test=200)
TEST_PART = Images(images=MNIST.test_images, labels=MNIST.test_labels)  # what export loads


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder with a model trained one epoch on synthetic digits, exported to all three
    formats through the command line (MNIST replaced by the synthetic set)."""
    from mnistcli.train import train

    tmp = tmp_path_factory.mktemp("export")
    result = train(make_settings(tmp, epochs=1, val_size=100, batch_size=32), MNIST)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("mnistcli.data.load_part", lambda *_a, **_k: TEST_PART)
        for fmt in ("onnx", "safetensors", "pt2"):
            done = runner.invoke(
                app, ["export", "--checkpoint", str(result.run_dir), "-f", fmt, "--json"]
            )
            assert done.exit_code == 0, done.output
            doc = json.loads(done.stdout)
            assert doc["path"] == str(result.run_dir / f"model.{fmt}")
            assert doc["check"]["passed"] and doc["check"]["n"] == 200, doc
    return result.run_dir


def torch_logits(run: Path, images: torch.Tensor) -> np.ndarray:
    model, _ = load_model(run / "best.pt")
    with torch.inference_mode():
        return model(normalize(images)).numpy()


def test_onnx_keeps_the_contract_and_carries_the_metadata(run):
    import onnxruntime as ort

    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(float)", [1, 28, 28])
    assert isinstance(inp.shape[0], str)  # a dynamic batch
    assert (out.name, out.type, out.shape[1]) == ("logits", "tensor(float)", 10)
    for n in (1, 7):  # any batch; pixels / 255 in, the same logits as the PyTorch model
        x = MNIST.test_images[:n]
        (logits,) = session.run(None, {"image": x[:, None].numpy().astype(np.float32) / 255})
        assert logits.shape == (n, 10)
        assert np.abs(logits - torch_logits(run, x)).max() <= 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    checkpoint_hash = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert meta["source_checkpoint_sha256"] == checkpoint_hash
    expected_acc = torch_logits(run, MNIST.test_images).argmax(1) == MNIST.test_labels.numpy()
    assert float(meta["test_accuracy"]) == pytest.approx(expected_acc.mean(), abs=1e-12)
    assert meta["test_images"] == "200"
    from mnistcli import __version__

    assert meta["mnistcli_version"] == __version__
    assert f"mnistcli {__version__}" in meta["preprocessing"] and "/ 255" not in meta["labels"]
    assert "divided by 255" in meta["preprocessing"]


def test_onnx_runs_without_importing_torch(run, tmp_path):
    x = MNIST.test_images[:5][:, None].numpy().astype(np.float32) / 255
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, json, numpy as np\n"
        "from pathlib import Path\n"
        "from mnistcli.loading import onnx_meta\n"
        "from mnistcli.onnx_runtime import OnnxModel\n"
        f"m = OnnxModel(Path({str(run / 'model.onnx')!r}))\n"
        f"logits = m(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'logits': logits.tolist(), "
        "'model': onnx_meta(m).model, 'epoch': onnx_meta(m).epoch}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["torch"] is False and doc["model"] == "simplecnn" and doc["epoch"] == 1
    expected = torch_logits(run, MNIST.test_images[:5])
    assert np.abs(np.array(doc["logits"]) - expected).max() <= 1e-4


def test_safetensors_and_pt2_read_back_as_the_same_model(run):
    original, original_meta = load_model(run / "best.pt")
    model, meta = load_model(run / "model.safetensors")
    assert meta == original_meta  # the typed description survives the export whole
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    sidecar = json.loads((run / "model.safetensors.json").read_text())
    assert sidecar["model"] == meta.model == "simplecnn"
    assert sidecar["normalisation"] == {"mean": 0.1307, "std": 0.3081, "inside_model": True}
    assert sidecar["labels"] == [str(d) for d in range(10)] and sidecar["config"]["epochs"] == 1
    program = torch.export.load(run / "model.pt2").module()
    x = MNIST.test_images[:3]
    with torch.inference_mode():
        got = program(x[:, None].float() / 255).numpy()
    assert np.abs(got - torch_logits(run, x)).max() <= 1e-5


def test_eval_on_the_onnx_file_matches_the_checkpoint(run, monkeypatch):
    monkeypatch.setattr("mnistcli.data.load_part", lambda *_a, **_k: TEST_PART)
    docs = {}
    for name in ("best.pt", "model.onnx", "model.safetensors"):
        args = ["eval", "--checkpoint", str(run / name), "--json", "--no-save"]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        docs[name] = json.loads(done.stdout)
    ref, onnx = docs["best.pt"], docs["model.onnx"]
    assert onnx["device"] == "cpu (onnxruntime)" and onnx["epoch"] == ref["epoch"]
    for doc in (onnx, docs["model.safetensors"]):
        assert doc["accuracy"] == ref["accuracy"]
        assert doc["confusion_matrix"] == ref["confusion_matrix"]
        assert doc["loss"] == pytest.approx(ref["loss"], abs=1e-5)


def test_inspect_and_predict_take_the_exports(run, tmp_path):
    done = runner.invoke(app, ["inspect", "--checkpoint", str(run / "model.onnx"), "--json"])
    assert done.exit_code == 0, done.output
    info = json.loads(done.stdout)["checkpoint"]
    assert info["weights_loaded"] and info["model"] == "simplecnn" and info["epochs_run"] == 1
    digit = tmp_path / "digit.png"
    Image.fromarray(MNIST.test_images[3].numpy()).save(digit)
    answers = []
    for name in ("best.pt", "model.safetensors", "model.onnx"):
        args = ["predict", "--raw", "--json", "--checkpoint", str(run / name), str(digit)]
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        answers.append(json.loads(done.stdout))
    assert answers[0]["digit"] == torch_logits(run, MNIST.test_images[3:4]).argmax()
    for other in answers[1:]:
        assert other["digit"] == answers[0]["digit"]
        assert other["probability"] == pytest.approx(answers[0]["probability"], abs=1e-5)


def test_a_failed_self_check_leaves_no_file(run, tmp_path, monkeypatch):
    def off_by_a_little(paths):
        read = export.read_safetensors(paths)
        return lambda x: read(x) + np.float32(1e-3)

    monkeypatch.setitem(export.READERS, "safetensors", off_by_a_little)
    out = tmp_path / "weights.safetensors"
    images, labels = MNIST.test_images[:20], MNIST.test_labels[:20]
    with pytest.raises(ExportError, match=r"max \|logit difference\| 1\.00e-03.*nothing was"):
        export.export_model(run / "best.pt", "safetensors", images, labels, out)
    assert list(tmp_path.iterdir()) == []  # neither file, no temporary left behind


def test_a_folder_that_refuses_the_file_is_a_one_line_error(run, tmp_path, monkeypatch):
    """A folder that passes the access check but refuses new files (/proc, a full disk): the
    error names the file, nothing is left behind, and the CLI prints one line."""

    def refuse(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("mnistcli.files.tempfile.mkstemp", refuse)
    out = tmp_path / "model.onnx"
    images, labels = MNIST.test_images[:20], MNIST.test_labels[:20]
    with pytest.raises(OutputError, match=r"cannot write .*model\.onnx: No space left"):
        export.export_model(run / "best.pt", "onnx", images, labels, out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("mnistcli.data.load_part", lambda *_a, **_k: TEST_PART)
    done = runner.invoke(app, ["export", "--checkpoint", str(run), "--out", str(out)])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.output
    assert "No space left on device" in done.stderr


def foreign_onnx(path: Path, *, side: int = 28, output: str = "logits", classes: int = 10):
    """A model from elsewhere: (N, 1, side, side) -> Flatten -> MatMul -> (N, classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((side * side, classes), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], [output]),
        ],
        "foreign",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_bad_exported_files_are_one_line_errors(run, tmp_path):
    noise = os.urandom(4096)
    (tmp_path / "noise.onnx").write_bytes(noise)
    (tmp_path / "noise.safetensors").write_bytes(noise)
    (tmp_path / "noise.safetensors.json").write_text((run / "model.safetensors.json").read_text())
    (tmp_path / "alone.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    cases = {
        "noise.onnx": "not an ONNX model",
        "wide.onnx": "breaks mnistcli's ONNX contract",
        "probs.onnx": "breaks mnistcli's ONNX contract",
        "eight.onnx": "breaks mnistcli's ONNX contract",
        "plain.onnx": "not written by 'mnistcli export'",
        "noise.safetensors": "not a safetensors file",
        "alone.safetensors": "needs its sidecar alone.safetensors.json",
    }
    foreign_onnx(tmp_path / "wide.onnx", side=32)
    foreign_onnx(tmp_path / "probs.onnx", output="probs")
    foreign_onnx(tmp_path / "eight.onnx", classes=8)
    foreign_onnx(tmp_path / "plain.onnx")  # keeps the contract, but carries no mnistcli metadata
    digit = tmp_path / "digit.png"
    Image.fromarray(MNIST.test_images[0].numpy()).save(digit)
    for name, message in cases.items():
        for command in (["eval"], ["inspect"], ["predict", str(digit)]):
            if name == "plain.onnx" and command[0] == "predict":
                continue  # predict needs only the contract: below
            done = runner.invoke(app, [*command, "--checkpoint", str(tmp_path / name)])
            assert done.exit_code == 2, (name, command, done.output)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (name, done.stderr)
            assert message in lines[0], (name, command, lines[0])
    with pytest.raises(CheckpointError, match="contract"):
        OnnxModel(tmp_path / "eight.onnx")
    # an ONNX file from elsewhere that keeps the contract is enough for predict
    done = runner.invoke(app, ["predict", "--checkpoint", str(tmp_path / "plain.onnx"), str(digit)])
    assert done.exit_code == 0, done.output
    assert "(ONNX model) on cpu (onnxruntime)" in done.stderr


def test_bad_export_options_are_one_line_errors(run, tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "mnistcli-checkpoint", "x": Boom()}, tmp_path / "evil.pt")
    cases = [
        (["--out", str(tmp_path / "evil.pt" / "m.onnx")], "is a file, not a folder"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(run / "best.pt")], "has '.pt', so the format is unknown"),
        (
            ["--checkpoint", str(run / "model.onnx"), "--out", str(run / "model.onnx")],
            "is the checkpoint itself",
        ),
        (["--checkpoint", str(tmp_path / "evil.pt")], "could run code"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
    ]
    for args, message in cases:
        extra = [] if "--checkpoint" in args else ["--checkpoint", str(run)]
        done = runner.invoke(app, ["export", *extra, *args])
        assert done.exit_code == 2, (args, done.output)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
    assert not (tmp_path / "pwned").exists()
    proc = run_cli("export", "--checkpoint", str(run), "-f", "tflite", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.count("\n") == 1
    assert "--format tflite: not one of 'onnx', 'safetensors', 'pt2'" in proc.stderr
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        resolve({"export.format": "onx"}, env={}, cwd=tmp_path)


def test_export_settings_come_from_the_config_file(run, tmp_path, monkeypatch):
    monkeypatch.setattr("mnistcli.data.load_part", lambda *_a, **_k: TEST_PART)
    config = tmp_path / "export.toml"
    config.write_text('[export]\nformat = "safetensors"\ncheck_images = 30\n')
    out = tmp_path / "w.safetensors"
    args = ["export", "--checkpoint", str(run), "--config", str(config), "--out", str(out)]
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["format"] == "safetensors" and doc["check"]["n"] == 30
    names = ["export.toml", "w.safetensors", "w.safetensors.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # the flag beats the file; bad values name the key, where it was set, and a suggestion
    done = runner.invoke(app, [*args, "--check-images", "-1"])
    assert done.exit_code == 2 and "export.check_images = -1 (from --check-images)" in done.stderr
    config.write_text('[export]\nformat = "onx"\n')
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "export.format = 'onx'" in done.stderr and "did you mean 'onnx'" in done.stderr


def test_docs_onnxruntime_example_reproduces_predict(run, tmp_path):
    page = (REPO / "docs" / "export.md").read_text()
    section = page.split("## The ONNX contract", 1)[1].split("\n## ", 1)[0]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([line for line in example.splitlines() if line.strip()]) == 5
    (tmp_path / "model.onnx").write_bytes((run / "model.onnx").read_bytes())
    for i in range(4):
        Image.fromarray(MNIST.test_images[i].numpy()).save(tmp_path / "digit.png")
        proc = subprocess.run(
            [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        args = ["predict", "--raw", "--json", "--checkpoint", str(run / "best.pt")]
        done = runner.invoke(app, [*args, str(tmp_path / "digit.png")])
        assert int(proc.stdout) == json.loads(done.stdout)["digit"]


def test_predict_on_the_onnx_file_never_imports_torch(run, tmp_path):
    """predict with a .onnx runs on onnxruntime: the same answers as best.pt, torch not loaded."""
    for i in range(3):
        Image.fromarray(255 - MNIST.test_images[i].numpy()).resize((84, 84)).save(
            tmp_path / f"d{i}.png"
        )
    script = (
        "import json, sys\n"
        "from mnistcli.cli import main\n"
        f"sys.argv = ['mnistcli', 'predict', '--json', '--checkpoint', {str(run / 'model.onnx')!r},"
        f" {str(tmp_path)!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'"
        " or m == 'numpy.ma')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    *lines, loaded = proc.stdout.strip().splitlines()
    assert json.loads(loaded) == []  # not one torch module, nor numpy.ma (np.median's 11 ms)
    onnx_answers = [json.loads(line) for line in lines]
    done = runner.invoke(app, ["predict", "--json", "--checkpoint", str(run), str(tmp_path)])
    assert done.exit_code == 0, done.output
    torch_answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["digit"] for a in onnx_answers] == [a["digit"] for a in torch_answers]
    for a, b in zip(onnx_answers, torch_answers, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)
    onnx_file = str(run / "model.onnx")
    wrong = runner.invoke(app, ["predict", "--checkpoint", onnx_file, "-d", "cuda", str(tmp_path)])
    assert wrong.exit_code == 2 and "onnxruntime's CPU provider" in wrong.stderr
    explained = runner.invoke(
        app,
        ["predict", "--explain", "--json", "--checkpoint", str(run / "model.onnx"), str(tmp_path)],
    )
    assert explained.exit_code == 0, explained.output
    assert all(len(json.loads(line)["saliency"]) == 28 for line in explained.stdout.splitlines())


def test_eval_and_predict_refuse_a_gpu_for_an_onnx_file_alike(run):
    """One check (onnx_runtime.open_onnx) for both commands: eval used to run on the CPU
    silently."""
    for command in (["eval", "--no-save"], ["predict", str(run)]):
        args = [*command, "--checkpoint", str(run / "model.onnx"), "--device", "cuda:0"]
        done = runner.invoke(app, args)
        assert done.exit_code == 2, (command, done.output)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "onnxruntime's CPU provider" in lines[0], done.stderr


def test_the_format_comes_from_the_suffix_of_out(run, tmp_path, monkeypatch):
    """--out's suffix names the format; missing folders are made (and removed again when the
    export fails); an unknown suffix, or one that contradicts --format, is a one-line error."""
    monkeypatch.setattr("mnistcli.data.load_part", lambda *_a, **_k: TEST_PART)
    base = ["export", "--checkpoint", str(run), "--check-images", "20", "--json"]
    for fmt in ("pt2", "safetensors"):
        out = tmp_path / "new" / "deeper" / f"m.{fmt}"
        done = runner.invoke(app, [*base, "--out", str(out)])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["format"] == fmt and out.is_file()
    cases = [
        (["--out", str(tmp_path / "m.bin")], "has '.bin', so the format is unknown"),
        (["--out", str(tmp_path / "m")], "has no suffix"),
        (["-f", "pt2", "--out", str(tmp_path / "m.onnx")], "--format pt2 writes a .pt2 file"),
    ]
    for args, message in cases:
        done = runner.invoke(app, [*base, *args])
        assert done.exit_code == 2 and done.stdout == "", (args, done.output)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, done.stderr)
    assert not (tmp_path / "m.onnx").exists()
    monkeypatch.setattr(export, "compare", lambda *_a: export.ExportCheck(20, 1, 0, 9.0, 20))
    failed = runner.invoke(app, [*base, "--out", str(tmp_path / "gone" / "sub" / "m.onnx")])
    assert failed.exit_code == 2 and not (tmp_path / "gone").exists()


def test_export_reports_its_progress_to_the_callback(run, tmp_path):
    seen: list[export.ExportProgress] = []
    export.export_model(
        run / "best.pt",
        "onnx",
        MNIST.test_images[:120],
        MNIST.test_labels[:120],
        tmp_path / "m.onnx",
        on_progress=seen.append,
    )
    stages = [p.stage for p in seen]
    assert stages[0] == "reference" and "writing" in stages and stages[-1] == "checking"
    assert seen[-1] == export.ExportProgress("checking", 120, 120)


def test_torch_log_lines_never_reach_stderr(tmp_path):
    """Anything torch writes to file descriptor 2 while an exporter runs (C++ glog lines
    such as "W1204 ...", logging, warnings) is kept off the screen."""
    import logging

    probe = tmp_path / "probe.py"
    probe.write_text(
        "import logging, os, warnings\n"
        "from mnistcli.export import torch_quiet\n"
        "with torch_quiet():\n"
        "    os.write(2, b'W1204 12:00:00.000 glog line\\n')\n"
        "    logging.getLogger('torch.export').warning('a torch warning')\n"
        "    warnings.warn('a python warning')\n"
        "os.write(2, b'after\\n')\n"
    )
    proc = subprocess.run(
        [sys.executable, str(probe)], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == "after\n", proc.stderr
    before = [logging.getLogger(n).level for n in export.TORCH_LOGGERS]
    with export.torch_quiet():
        assert logging.getLogger("torch").level == logging.CRITICAL
    assert [logging.getLogger(n).level for n in export.TORCH_LOGGERS] == before


@pytest.mark.slow
def test_a_real_export_prints_no_torch_log_lines(trained_run, tmp_path):
    from tests.helpers import SHARED_MNIST

    for fmt in ("onnx", "pt2"):
        out = tmp_path / "made" / f"m.{fmt}"
        proc = run_cli(
            "export",
            "--checkpoint",
            str(trained_run),
            "--out",
            str(out),
            "--check-images",
            "200",
            "--data",
            str(SHARED_MNIST),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == "" and out.is_file(), proc.stderr
        assert proc.stdout.startswith("wrote ") and len(proc.stdout.splitlines()) == 2


@pytest.mark.slow
def test_a_real_export_shows_its_progress_on_a_terminal_and_leaves_none_behind(
    trained_run, tmp_path
):
    """On a terminal (NO_COLOR too) each stage shows a transient progress line on stderr;
    stdout keeps the result alone; nothing of torch's log reaches the screen."""
    import os

    from tests.helpers import SHARED_MNIST, on_a_terminal

    env = {**os.environ, "TERM": "xterm-256color", "NO_COLOR": "1"}
    out = tmp_path / "m.onnx"
    args = ["export", "--checkpoint", str(trained_run), "--out", str(out)]
    args += ["--check-images", "2000", "--data", str(SHARED_MNIST)]
    stdout, screen = on_a_terminal(args, tmp_path, env, stream="stderr")
    assert out.is_file() and stdout.startswith("wrote ") and len(stdout.splitlines()) == 2
    assert "PyTorch on the test digits" in screen and "checking the written file" in screen
    assert "/2,000" in screen  # the self-check counts its digits, with separators
    assert "\x1b[3" not in screen  # NO_COLOR: no colour codes, the progress all the same
    assert "W1" not in screen and "torch" not in screen.replace("PyTorch", "")


def test_a_torch_export_program_is_named_whatever_its_suffix(run, tmp_path):
    """A .pt2 under another name is refused as what it is, never as a damaged checkpoint with
    a paragraph of torch's advice cut mid-word."""
    from mnistcli.loading import open_model

    for name in ("x.pt", "x.onnx"):
        disguised = tmp_path / name
        disguised.write_bytes((run / "model.pt2").read_bytes())
        with pytest.raises(CheckpointError, match=r"is a torch.export program \(.pt2\)"):
            open_model(disguised)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((run / "best.pt").read_bytes()[:3000])
    with pytest.raises(CheckpointError) as info:
        open_model(cut)
    message = str(info.value)
    assert "internal miniz error" not in message and "If you" not in message
    assert message.endswith(")") and "failed" in message
