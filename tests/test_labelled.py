"""labelled: the folder layout and the manifest, their errors, and eval's figures on files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnistcli.errors import ImageError, InputError
from mnistcli.labelled import (
    class_folders,
    collect_labelled,
    digit_of,
    evaluate_images,
    read_manifest,
)
from mnistcli.predict import ImageFeed


def bar(path: Path, top: int = 5) -> Path:
    """A dark bar on light paper: tall (top 5) reads as 1, short (top 40) as 7 to `by_width`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(im).rectangle((25, top, 32, 50), fill=0)
    im.save(path)
    return path


def by_width(batch: np.ndarray) -> np.ndarray:
    logits = np.zeros((len(batch), 10), np.float32)
    for i, image in enumerate(batch[:, 0]):
        logits[i, 7 if image.any(0).sum() > 10 else 1] = 3.0
    return logits


# --- one folder per class --------------------------------------------------------------------


def test_class_folders_follow_imagefolder_and_skip_hidden_files(tmp_path):
    bar(tmp_path / "1" / "b.png")
    bar(tmp_path / "1" / "a.PNG")
    bar(tmp_path / "1" / "deeper" / "c.jpg")  # found below its class folder, as ImageFolder
    bar(tmp_path / "1" / "._a.png")  # macOS metadata: hidden, never decoded
    (tmp_path / "1" / "notes.txt").write_text("x")
    bar(tmp_path / "7" / "z.png")
    bar(tmp_path / ".ipynb_checkpoints" / "x.png")  # hidden folder: not a class
    (tmp_path / "4").mkdir()
    bar(tmp_path / "loose.png")
    found = class_folders(tmp_path)
    names = [p.relative_to(tmp_path).as_posix() for p in found.items]
    assert names == ["1/a.PNG", "1/b.png", "1/deeper/c.jpg", "7/z.png"]
    assert found.labels == [1, 1, 1, 7]
    warnings = "\n".join(found.warnings)
    assert f"{tmp_path / '4'}: no images in this class folder" in warnings
    assert "no folder for digit(s) 0, 2, 3, 5, 6, 8, 9" in warnings
    assert "1 image(s) directly in the folder" in warnings and len(found.warnings) == 3


@pytest.mark.parametrize("name", ["cats", "10", "07"])
def test_a_folder_not_named_with_one_digit_is_an_error_naming_it(tmp_path, name):
    bar(tmp_path / "3" / "a.png")
    (tmp_path / name).mkdir()
    with pytest.raises(InputError, match="not a class folder") as info:
        class_folders(tmp_path)
    assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_a_folder_without_class_folders_says_how_to_lay_it_out(tmp_path):
    bar(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"no class folders in it; lay the images out as"):
        class_folders(tmp_path)


def test_files_and_globs_take_the_digit_of_their_folder(tmp_path):
    bar(tmp_path / "set" / "3" / "a.png")
    bar(tmp_path / "set" / "5" / "b.png")
    bar(tmp_path / "other" / "c.png")
    assert digit_of(tmp_path / "set" / "3" / "a.png") == 3
    found = collect_labelled(
        [str(tmp_path / "set" / "*" / "*.png"), str(tmp_path / "other" / "c.png")]
    )
    assert found.labels == [3, 5, -1]
    assert isinstance(found.items[2], ImageError) and "no label" in found.items[2].reason
    seven = collect_labelled([str(tmp_path / "set" / "5")])  # a digit folder itself
    assert seven.labels == [5]


# --- a manifest ------------------------------------------------------------------------------


def test_a_csv_or_tsv_manifest_gives_paths_from_its_folder(tmp_path):
    bar(tmp_path / "imgs" / "a.png")
    bar(tmp_path / "imgs" / "b.png")
    (tmp_path / "labels.csv").write_text("\ufeffPath,Label,who\nimgs/a.png,3,me\n\nimgs/b.png,8,\n")
    (tmp_path / "labels.tsv").write_text("label\tpath\n3\timgs/a.png\n")
    rows = read_manifest(tmp_path / "labels.csv")
    assert [(r.line, r.path, r.label) for r in rows] == [
        (2, tmp_path / "imgs" / "a.png", 3),
        (4, tmp_path / "imgs" / "b.png", 8),
    ]
    [row] = read_manifest(tmp_path / "labels.tsv")
    assert (row.path, row.label) == (tmp_path / "imgs" / "a.png", 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\na.png,12\n", "line 2: label '12' is not a digit 0-9"),
        ("path,label\na.png,7\nb.png,x\nc.png,-1\n", "line 3: label 'x' is not a digit 0-9 (and 1"),
        ("file,digit\na.png,1\n", "needs a 'path' and a 'label' column"),
        ("path,label\n", "no rows under its header"),
    ],
)
def test_manifest_errors_name_the_file_and_line(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(InputError, match=r"m\.csv") as info:
        read_manifest(tmp_path / "m.csv")
    assert message in str(info.value)


def test_manifest_rows_pointing_nowhere_are_left_out_one_line_each(tmp_path):
    bar(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,label\na.png,1\nmissing.png,2\n")
    found = collect_labelled([], tmp_path / "m.csv")
    assert found.labels == [1, -1]
    assert str(found.items[1]) == f"{tmp_path / 'missing.png'}: no such file (--labels line 3)"
    bar(tmp_path / "b.png")
    both = collect_labelled([str(tmp_path / "a.png"), str(tmp_path / "b.png")], tmp_path / "m.csv")
    assert both.labels == [1, -1] and "no row for it in" in str(both.items[1])


# --- scoring ---------------------------------------------------------------------------------


def test_figures_count_no_digit_as_wrong_and_leave_unreadable_files_out(tmp_path):
    bar(tmp_path / "1" / "a.png", top=5)  # read as 1: right
    bar(tmp_path / "1" / "b.png", top=40)  # read as 7: wrong
    (tmp_path / "1" / "c.png").write_text("broken")  # unreadable: left out
    bar(tmp_path / "7" / "d.png", top=40)  # read as 7: right
    Image.new("L", (60, 60), 255).save(tmp_path / "7" / "e.png")  # no digit found: wrong
    labelled = class_folders(tmp_path)
    seen = []
    with ImageFeed(labelled.items) as feed:
        ev, left_out = evaluate_images(labelled, feed, by_width, on_prediction=seen.append)
    assert len(seen) == 5
    assert (ev.n, ev.correct, ev.accuracy) == (4, 2, 0.5)
    assert ev.confusion[1][1] == 1 and ev.confusion[1][7] == 1 and ev.confusion[7][7] == 1
    assert sum(map(sum, ev.confusion)) == 3 and ev.no_digit == (0,) * 7 + (1, 0, 0)
    assert ev.per_class[7].support == 2 and ev.per_class[7].recall == 0.5
    assert len(left_out) == 1 and "c.png: not an image" in left_out[0]
    [mistake] = ev.mistakes
    assert (mistake.true, mistake.pred, mistake.path) == (1, 7, str(tmp_path / "1" / "b.png"))
    assert len(mistake.pixels) == 784 and mistake.to_dict()["path"] == mistake.path
    doc = ev.to_dict()
    assert doc["no_digit"] == list(ev.no_digit) and doc["n"] == 4


# --- links, loops, hidden folders and files reached twice ------------------------------------


def test_each_folder_is_read_once_and_never_under_another_digit(tmp_path):
    """A link back up (a loop) or to another class folder is skipped with a warning: before,
    os.walk followed it down to the system's limit and gave every image reached the digit of
    the folder the link sat in. Hidden subfolders are skipped as the docstring says."""
    for d in (2, 3):
        bar(tmp_path / "set" / str(d) / "a.png")
    (tmp_path / "set" / "2" / "loop").symlink_to("..")  # back to the root
    (tmp_path / "set" / "2" / "three").symlink_to("../3")  # another class's folder
    bar(tmp_path / "set" / "3" / ".ipynb_checkpoints" / "x-checkpoint.png")
    found = collect_labelled([str(tmp_path / "set")])
    names = [p.relative_to(tmp_path / "set").as_posix() for p in found.items]
    assert names == ["2/a.png", "3/a.png"] and found.labels == [2, 3]
    skipped = [w for w in found.warnings if "a link to a folder already read" in w]
    assert len(skipped) == 2
    alone = collect_labelled([str(tmp_path / "set" / "2")])  # the digit folder itself
    assert [p.name for p in alone.items] == ["a.png"] and alone.labels == [2]


def test_a_digit_folder_given_labels_everything_below_it_with_its_digit(tmp_path):
    bar(tmp_path / "set" / "3" / "sub" / "7" / "deep.png")
    assert collect_labelled([str(tmp_path / "set")]).labels == [3]
    assert collect_labelled([str(tmp_path / "set" / "3")]).labels == [3]  # was 7


def test_a_file_reached_twice_is_scored_once_and_two_labels_are_an_error(tmp_path):
    one = bar(tmp_path / "set" / "1" / "a.png")
    twice = collect_labelled([str(tmp_path / "set"), str(one)])
    assert twice.items == [one] and twice.labels == [1]
    assert any("1 file(s)" in w and "each scored once" in w for w in twice.warnings)
    (tmp_path / "set" / "7").mkdir()
    (tmp_path / "set" / "7" / "a.png").symlink_to(one)  # the same image as a 7
    with pytest.raises(InputError, match="with another label"):
        collect_labelled([str(tmp_path / "set")])


def test_manifest_duplicates_warn_and_conflicting_rows_name_their_lines(tmp_path):
    bar(tmp_path / "a.png")
    (tmp_path / "dup.csv").write_text("path,label\na.png,1\na.png,1\n")
    found = collect_labelled([], tmp_path / "dup.csv")
    assert found.labels == [1] and any("each scored once" in w for w in found.warnings)
    (tmp_path / "two.csv").write_text("path,label\na.png,1\n./a.png,7\n")
    with pytest.raises(InputError, match=r"lines 2 and 3 give .*a.png two labels \(1 and 7\)"):
        collect_labelled([], tmp_path / "two.csv")


def test_semicolon_manifests_folders_with_a_manifest_and_odd_paths(tmp_path):
    bar(tmp_path / "imgs" / "0" / "a.png")
    (tmp_path / "semi.csv").write_text("path;label\nimgs/0/a.png;4\n")
    assert [(r.path.name, r.label) for r in read_manifest(tmp_path / "semi.csv")] == [("a.png", 4)]
    # a folder given with a manifest is searched below, as class folders are
    found = collect_labelled([str(tmp_path / "imgs")], tmp_path / "semi.csv")
    assert found.labels == [4]
    # an unknown ~user and a NUL byte are files that do not exist, not tracebacks
    (tmp_path / "nul.csv").write_text("path,label\nimgs/x\x00.png,0\nimgs/0/a.png,0\n")
    odd = collect_labelled([str(tmp_path / "imgs" / "0" / "a.png")], tmp_path / "nul.csv")
    assert odd.labels == [0]
    gone = collect_labelled(["~nosuchuser-mnistcli/x.png"])
    assert isinstance(gone.items[0], ImageError) and "no such file" in str(gone.items[0])


def test_labels_from_standard_input_is_refused_in_one_line():
    with pytest.raises(InputError, match="--labels -: the labels are read from a file"):
        read_manifest(Path("-"))
