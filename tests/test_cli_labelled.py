"""`mnistcli eval --images` and predict at scale, as a user runs them: real MNIST digits as
files, the same figures as predict's answers counted by hand, layout errors, `predict -`,
inputs checked before torch, Ctrl-C keeping the rows, progress on a terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mnistcli.cli import app
from tests.helpers import REPO, HalfWrite, start_cli

runner = CliRunner()


def scan(pixels) -> Image.Image:
    """A 28x28 MNIST digit as a 64x64 scan: dark ink on light paper."""
    im = Image.frombytes("L", (28, 28), bytes(pixels.flatten().tolist()))
    return im.point(lambda v: 255 - v).resize((64, 64))


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory, real_mnist) -> tuple[Path, Path]:
    """40 real test digits laid out DIR/<digit>/<index>.png, and a manifest of the same files
    with paths relative to it."""
    root = tmp_path_factory.mktemp("digits")
    rows = ["path,label"]
    for i in range(40):
        label = int(real_mnist.test_labels[i])
        path = root / "set" / str(label) / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        scan(real_mnist.test_images[i]).save(path)
        rows.append(f"set/{label}/{i:03d}.png,{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "set", root / "labels.csv"


@pytest.mark.slow
def test_eval_images_gives_predicts_answers_counted_by_hand(trained_run, digits_folder, tmp_path):
    folder, manifest = digits_folder
    ck = ["--checkpoint", str(trained_run)]
    predicted = runner.invoke(app, ["predict", str(folder / "*" / "*.png"), "--json", *ck])
    assert predicted.exit_code == 0, predicted.output
    confusion = [[0] * 10 for _ in range(10)]
    for doc in map(json.loads, predicted.stdout.splitlines()):
        confusion[int(Path(doc["path"]).parent.name)][doc["digit"]] += 1
    correct = sum(confusion[d][d] for d in range(10))
    for source in (["--images", str(folder)], ["--labels", str(manifest)]):
        result = runner.invoke(app, ["eval", *source, "--json", "--out-dir", str(tmp_path), *ck])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["confusion_matrix"] == confusion and doc["n"] == 40
        assert doc["accuracy"] == correct / 40 and doc["left_out"] == 0
        assert doc["no_digit"] == [0] * 10 and doc["split"] == "images"
    assert {p.name for p in tmp_path.iterdir()} >= {
        "eval_images.json",
        "confusion_matrix_images.png",
    }
    shown = runner.invoke(app, ["eval", "--images", str(folder), "--no-save", *ck])
    assert shown.exit_code == 0, shown.output
    assert f"{correct / 40:.2%}" in shown.stdout and "40 images from" in shown.stdout
    if correct < 40:  # the gallery names each mistake's file
        assert "each: true -> predicted, confidence, and its file" in shown.stdout
        assert ".png" in shown.stdout.split("most confident mistakes")[1]


def test_eval_images_layout_errors_are_one_line(tmp_path):
    (tmp_path / "set" / "3").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "set" / "3" / "a.png")
    (tmp_path / "set" / "threes").mkdir()
    result = runner.invoke(app, ["eval", "--images", str(tmp_path / "set")])
    assert result.exit_code == 2
    assert result.stderr.strip().startswith(f"error: {tmp_path / 'set' / 'threes'}: not a class")
    assert len(result.stderr.strip().splitlines()) == 1
    (tmp_path / "m.csv").write_text("path,label\nset/3/a.png,11\n")
    result = runner.invoke(app, ["eval", "--labels", str(tmp_path / "m.csv")])
    assert result.exit_code == 2 and "line 2: label '11' is not a digit 0-9" in result.stderr
    result = runner.invoke(app, ["eval", "--images", str(tmp_path / "set"), "--split", "val"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--split chooses an MNIST split; --images scores your images" in result.stderr


CHECK_TORCH = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules, file=sys.stderr))\n"
    "from mnistcli.cli import main\n"
    "sys.argv = ['mnistcli', *sys.argv[1:]]\n"
    "main()\n"
)


def test_every_input_missing_exits_2_before_torch_is_imported(tmp_path):
    argv = [sys.executable, "-c", CHECK_TORCH, "predict", "gone.png", "nope/*.png"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines == [
        "error: gone.png: no such file or folder",
        "error: nope/*.png: no files match this pattern",
        "torch imported: False",
    ]


def cli_with_stdin(*args: str, cwd: Path, stdin: str) -> tuple[int, str, str]:
    proc = start_cli(*args, cwd=cwd, stdin=subprocess.PIPE)
    out, err = proc.communicate(stdin, timeout=240)
    return proc.returncode, out, err


@pytest.mark.slow
def test_predict_dash_reads_paths_from_stdin(trained_run, digits_folder, tmp_path):
    folder, _ = digits_folder
    files = sorted(folder.glob("*/*.png"))[:3]
    stdin = "".join(f"{f}\n" for f in files) + f"{tmp_path / 'missing.png'}\n"
    code, out, err = cli_with_stdin(
        "predict", "-", "--json", "--checkpoint", str(trained_run), cwd=tmp_path, stdin=stdin
    )
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [d["path"] for d in docs] == [
        *map(str, files),
        str(tmp_path / "missing.png"),
    ]
    assert [d["status"] for d in docs] == ["ok", "ok", "ok", "error"]
    assert docs[3]["error"].endswith("no such file or folder")
    assert err.strip() == f"error: {tmp_path / 'missing.png'}: no such file or folder"


@pytest.fixture(scope="module")
def many_files(tmp_path_factory, real_mnist) -> Path:
    """1,500 small digit files: enough for a Ctrl-C to land half-way through."""
    folder = tmp_path_factory.mktemp("many")
    for i in range(1500):
        Image.frombytes("L", (28, 28), bytes(real_mnist.test_images[i].flatten().tolist())).save(
            folder / f"{i:04d}.png"
        )
    return folder


@pytest.mark.slow
def test_ctrl_c_keeps_the_rows_done_stops_the_pool_and_exits_130(trained_run, many_files):
    proc = start_cli(
        "predict",
        str(many_files),
        "--checkpoint",
        str(trained_run),
        "--workers",
        "2",
        cwd=many_files,
    )
    header = proc.stdout.readline()
    first = proc.stdout.readline()  # a row printed: the pool is running
    assert header.startswith("image") and first.split()[0].endswith("0000.png")
    pool = descendants(proc.pid)
    assert pool  # the fork server and its workers
    os.kill(proc.pid, signal.SIGINT)
    # read through the same buffered streams as readline above: communicate() reads the pipes'
    # file descriptors and would lose the rows readline had already buffered
    rest = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    rows = [first, *[line for line in rest.splitlines() if line.strip()]]
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    [said] = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    done = int(said.split()[1].replace(",", ""))
    assert 1 <= done < 1500 and said.endswith("of 1,500 images done (their rows are above)")
    assert len(rows) == done  # every row done was printed, none after
    time.sleep(1)
    assert not [pid for pid in pool if running(pid)]  # the pool is gone


def running(pid: int) -> bool:
    """Whether `pid` is a live process: not gone, and not a zombie that nobody reaped (a
    container's first process may never reap the orphans it inherits)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal test")
def test_rows_and_progress_on_one_terminal_never_run_into_each_other(trained_run, many_files):
    """stdout and stderr on the same terminal (the usual case): every row is printed on a line
    of its own above the progress line, never written over it, and the line is gone at the
    end. (Rows printed by a second console went straight through it before.)"""
    import re

    from tests.helpers import on_a_terminal

    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO)}
    env.pop("_TYPER_FORCE_DISABLE_TERMINAL", None)
    args = ["predict", str(many_files), "--checkpoint", str(trained_run)]
    _, screen = on_a_terminal(args, many_files, env, stream="both", columns=80)
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    segments = re.split(r"[\r\n]", plain)
    bars = [s for s in segments if "files" in s and "ETA" in s]
    assert bars, "no progress line was drawn"
    assert not [s for s in bars if ".png" in s or "digit" in s]  # nothing written over it
    rows = [s for s in segments if s.startswith(f"{many_files}/")]
    assert [r.split()[0] for r in rows] == [f"{many_files}/{i:04d}.png" for i in range(1500)]
    assert all(len(r) <= 80 for r in rows)  # each row fits the terminal
    tail = screen[screen.rindex("files") :]
    assert "\x1b[2K" in tail and "1,500 images: " in tail  # the line cleared, the summary


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="a pseudo-terminal test")
def test_progress_shows_on_a_terminal_even_with_no_color_and_json(
    trained_run, many_files, tmp_path
):
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100x24
    env = {**os.environ, "TERM": "xterm-256color", "NO_COLOR": "1", "PYTHONPATH": str(REPO)}
    env.pop("_TYPER_FORCE_DISABLE_TERMINAL", None)
    argv = [sys.executable, "-m", "mnistcli", "predict", str(many_files), "--json"]
    start = time.monotonic()
    with open(tmp_path / "out.jsonl", "wb") as stdout:  # a file: a full pipe would block it
        proc = subprocess.Popen(
            [*argv, "--checkpoint", str(trained_run)],
            stdout=stdout,
            stderr=slave,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=many_files,
        )
    os.close(slave)
    seen, first = b"", None
    while True:
        if not select.select([master], [], [], 1.0)[0]:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
        if first is None and b"/1500 files" in seen:
            first = time.monotonic() - start
    os.close(master)
    proc.wait(timeout=120)
    out = (tmp_path / "out.jsonl").read_bytes()
    assert proc.returncode == 0
    assert first is not None and first < 20  # 5 s on a quiet machine; this one is shared
    assert b"images/s" in seen and b"ETA" in seen
    assert b"\x1b[3" not in seen  # NO_COLOR: no colour, and still progress
    assert len(out.splitlines()) == 1500 and b"\x1b" not in out  # stdout: the JSON alone


def test_eval_images_writes_its_report_all_or_none(trained_run, digits_folder, tmp_path):
    """The report's files are one: a disk that fills up half-way through leaves the previous
    report byte for byte (no new figure beside the old JSON, no temporary file), and a report
    without mistakes removes the earlier gallery instead of leaving it beside the new JSON."""
    folder, _ = digits_folder
    ck = ["--checkpoint", str(trained_run), "-j", "1"]
    predicted = runner.invoke(app, ["predict", str(folder / "*" / "*.png"), "--json", *ck])
    assert predicted.exit_code == 0, predicted.output
    docs = [json.loads(line) for line in predicted.stdout.splitlines()]
    right = [Path(d["path"]) for d in docs if d["digit"] == int(Path(d["path"]).parent.name)]
    clean, mixed = tmp_path / "clean", tmp_path / "mixed"
    for path in right[:10]:
        for root in (clean, mixed):
            (root / path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / path.parent.name / path.name)
    # a digit the model reads correctly, filed under the next digit: one certain mistake
    wrong, label = right[10], (int(right[10].parent.name) + 1) % 10
    (mixed / str(label)).mkdir(exist_ok=True)
    shutil.copy(wrong, mixed / str(label) / wrong.name)
    out = tmp_path / "out"

    first = runner.invoke(app, ["eval", "--images", str(mixed), "--out-dir", str(out), *ck])
    assert first.exit_code == 0, first.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == [
        "confusion_matrix_images.png",
        "eval_images.json",
        "misclassified_images.png",
    ]
    with pytest.MonkeyPatch.context() as mp:
        half = HalfWrite(skip=1).install(mp)  # the figure is staged, then the JSON fails
        failed = runner.invoke(app, ["eval", "--images", str(clean), "--out-dir", str(out), *ck])
    assert failed.exit_code == 2, failed.output
    assert failed.stderr.strip().endswith(
        "No space left on device; choose another folder with --out-dir DIR, or pass --no-save"
    )
    assert len(half.partial) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    second = runner.invoke(app, ["eval", "--images", str(clean), "--out-dir", str(out), *ck])
    assert second.exit_code == 0, second.output
    assert sorted(p.name for p in out.iterdir()) == [
        "confusion_matrix_images.png",
        "eval_images.json",
    ]
    doc = json.loads((out / "eval_images.json").read_text())
    assert doc["errors"] == 0 and doc["n"] == 10
    assert sorted(Path(p).name for p in doc["saved"]) == sorted(p.name for p in out.iterdir())


def test_eval_images_all_unreadable_is_one_line_and_writes_nothing(trained_run, tmp_path):
    """Only unreadable files (a zero-byte PNG, text named .png): the files left out are listed,
    then one error line, exit 2, and the report already in the folder is left as it was."""
    (tmp_path / "allbad" / "3").mkdir(parents=True)
    (tmp_path / "allbad" / "3" / "zero.png").write_bytes(b"")
    (tmp_path / "allbad" / "3" / "text.png").write_text("not an image\n")
    out = tmp_path / "out"
    out.mkdir()
    old = {"eval_images.json": b'{"n": 40}\n', "confusion_matrix_images.png": b"a figure"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    args = ["eval", "--images", str(tmp_path / "allbad"), "--out-dir", str(out), "--json"]
    result = runner.invoke(app, [*args, "--checkpoint", str(trained_run), "-j", "1"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[-3:]] == ["left out", "left out", "error"]
    assert lines[-1] == "error: none of the 2 images can be scored"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
