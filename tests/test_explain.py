"""mnistcli.explain: integrated gradients (completeness), the deletion test (the saliency is
faithful, random scores are not), activations captured per layer, and their drawings."""

from __future__ import annotations

import re

import pytest
import torch
from rich.console import Console

from mnistcli import explain
from mnistcli.data import normalize
from mnistcli.loading import load_model
from mnistcli.render.colorscale import Scale
from mnistcli.render.feature_view import activations_view, map_grid, shrink_factor

ANSI = re.compile(r"\x1b\[")


@pytest.fixture(scope="module")
def model(trained_run):
    net, _ = load_model(trained_run / "best.pt")
    return net


@pytest.fixture(scope="module")
def digits(real_mnist) -> torch.Tensor:
    return real_mnist.test_images[:100]


@pytest.fixture(scope="module")
def predicted(model, digits) -> list[int]:
    with torch.inference_mode():
        return model(normalize(digits)).argmax(1).tolist()


@pytest.fixture(scope="module")
def saliency(model, digits, predicted) -> torch.Tensor:
    return explain.saliency_maps(model, digits, predicted)


@pytest.mark.slow
def test_integrated_gradients_add_up_to_the_change_in_probability(model, digits, predicted):
    x = normalize(digits[:8])
    targets = torch.tensor(predicted[:8])
    attributions = explain.integrated_gradients(model, x, targets)
    black = normalize(torch.zeros(1, 28, 28, dtype=torch.uint8))
    with torch.inference_mode():
        p = torch.softmax(model(x), 1).gather(1, targets[:, None])[:, 0]
        p_black = torch.softmax(model(black), 1)[0, targets]
    # completeness: the attributions sum to p(x) - p(black), up to the 32-step approximation
    gap = (attributions.sum((1, 2, 3)) - (p - p_black)).abs()
    assert gap.max() < 0.01, gap
    assert model.training is False


@pytest.mark.slow
def test_saliency_is_28x28_non_negative_and_zero_on_black_pixels(saliency, digits):
    assert saliency.shape == (100, 28, 28) and saliency.dtype == torch.float32
    assert saliency.min() >= 0 and saliency.max() > 0
    assert saliency[digits == 0].abs().max() == 0  # a black pixel equals the baseline
    lists = explain.saliency_lists(saliency[:1])
    assert len(lists[0]) == 28 and all(len(row) == 28 for row in lists[0])
    assert all(v >= 0 and str(v) != "-0.0" for row in lists[0] for v in row)


@pytest.mark.slow
def test_deletion_blanking_salient_ink_costs_4x_more_than_random_ink(model, digits, saliency):
    result = explain.deletion_test(model, digits, saliency, fraction=0.15)
    assert result.images == 100
    assert result.drop_salient > 0.05
    assert result.ratio >= 4, result


@pytest.mark.slow
def test_deletion_test_sees_through_random_scores(model, digits):
    scores = torch.rand(digits.shape, generator=torch.Generator().manual_seed(1))
    result = explain.deletion_test(model, digits, scores, fraction=0.15)
    assert 0.5 < result.ratio < 2, result  # random ranking: no better than random pixels


@pytest.mark.slow
def test_activations_follow_the_forward_pass(model, digits):
    acts = explain.capture_activations(model, digits[0])
    names = [layer.name for layer in acts.layers]
    assert names == [name for name, m in model.named_modules() if name and not list(m.children())]
    by_name = {layer.name: layer for layer in acts.layers}
    conv, pool, relu = by_name["features.0"], by_name["features.1"], by_name["features.2"]
    assert conv.shape == (32, 28, 28) and pool.shape == relu.shape == (32, 14, 14)
    assert conv.min < 0 and pool.min < 0  # kept before the in-place ReLU overwrote them
    assert torch.equal(pool.values, torch.nn.functional.max_pool2d(conv.values[None], 2)[0])
    assert torch.equal(relu.values, pool.values.clamp(min=0))
    assert relu.fraction_zero == pytest.approx(float((pool.values <= 0).float().mean()))
    assert relu.to_dict().keys() >= {"layer", "type", "shape", "mean", "max", "fraction_zero"}
    with torch.inference_mode():
        expected = torch.softmax(model(normalize(digits[:1])), 1)[0]
    assert torch.allclose(torch.tensor(acts.probabilities), expected, atol=1e-6)
    assert acts.filters is not None and acts.filters.shape == (32, 1, 3, 3)
    assert acts.filters_layer == "features.0"


@pytest.mark.slow
@pytest.mark.parametrize("color", [True, False])
def test_the_layer_view_fits_100_columns(model, digits, color):
    acts = explain.capture_activations(model, digits[0])
    console = Console(
        width=100,
        record=True,
        force_terminal=color,
        color_system="truecolor" if color else None,
        no_color=not color,
    )
    console.print(activations_view(acts, color=color, width=100))
    text = console.export_text(styles=False)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    for title in ("features.0  Conv2d  (32, 28, 28)", "features.4  MaxPool2d  (64, 7, 7)"):
        assert any(line.startswith(title) for line in lines)
    assert "its 32 learned 3x3 filters" in text and "units 64-127" in text
    if not color:
        assert not ANSI.search(console.export_text(styles=True))


def test_map_grids_shrink_only_as_much_as_the_width_needs():
    assert shrink_factor(28, 32, 100) == 2  # 6 maps of 14 columns fit in 100
    assert shrink_factor(28, 32, 200) == 1
    assert shrink_factor(7, 64, 100) == 1
    maps = torch.zeros(3, 4, 4)
    maps[1, 0, 0] = 1.0
    lines = map_grid(maps, Scale(0, 1), color=False, width=100)
    assert lines[0].plain.split() == ["0", "1", "2"]
    art = [line.plain for line in lines[1:]]
    assert len(art) == 2 and art[0][5] == "▒"  # map 1, first cell: the mean of 1 and 0
    assert art[0].replace("▒", " ").strip() == ""


@pytest.mark.slow
def test_explained_predictions_carry_the_same_saliency_as_the_maps(model, digits, saliency):
    from mnistcli.predict import Prediction

    preds = [
        Prediction(
            path="a.png", digit=int(model(normalize(digits[:1])).argmax()), pixels=digits[0]
        ),
        Prediction(path="blank.png", pixels=torch.zeros(28, 28, dtype=torch.uint8)),
        Prediction(path="bad.png", error="bad.png: no such file"),
    ]
    explained = explain.explain_predictions(model, preds)
    assert all(e.prediction is p for e, p in zip(explained, preds, strict=True))
    assert explained[1].saliency is None and explained[2].saliency is None
    assert torch.allclose(explained[0].saliency, saliency[0], atol=1e-6)
    doc = explained[0].to_dict()
    assert doc["path"] == "a.png" and doc["saliency"] == explain.saliency_lists(saliency[:1])[0]
    assert explained[1].to_dict()["saliency"] is None


@pytest.mark.slow
def test_inspect_model_returns_the_activations_of_the_image(trained_run, real_mnist, tmp_path):
    from PIL import Image

    from mnistcli.errors import CheckpointError, InputError
    from mnistcli.settings import InspectSettings
    from mnistcli.summary import inspect_model

    image = tmp_path / "d.png"
    Image.fromarray(real_mnist.test_images[0].numpy()).save(image)
    settings = InspectSettings(checkpoint=str(trained_run), image=image, raw=True)
    found = inspect_model(settings)
    assert found.image == str(image) and not found.blank
    assert [a.name for a in found.activations.layers] == [r.name for r in found.summary.layers]
    doc = found.to_dict([tmp_path / "x.png"])
    assert doc["image"]["saved"] == [str(tmp_path / "x.png")]
    assert doc["activations"][0]["shape"] == [32, 28, 28]
    assert (
        "activations" not in inspect_model(InspectSettings(checkpoint=str(trained_run))).to_dict()
    )
    with pytest.raises(InputError, match="no such file"):
        inspect_model(InspectSettings(checkpoint=str(trained_run), image=tmp_path / "none.png"))
    with pytest.raises(CheckpointError, match="no checkpoint was loaded"):
        inspect_model(InspectSettings(runs_dir=tmp_path / "runs", image=image))


@pytest.mark.slow
def test_explaining_many_reports_progress_a_batch_at_a_time(model, digits, predicted, saliency):
    """predict --explain on many files shows its progress: the saliency is computed a batch at
    a time, each batch said, and the maps are those computed all at once."""
    from mnistcli.predict import Prediction

    preds = [
        Prediction(f"{i}.png", digit, 0.9, ((digit, 0.9),), pixels=digits[i].numpy())
        for i, digit in enumerate(predicted)
    ] + [Prediction("blank.png")]  # no digit: no saliency, not counted
    seen: list[tuple[int, int]] = []
    explained = explain.explain_predictions(
        model, preds, batch_size=40, on_progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(40, 100), (80, 100), (100, 100)]
    assert explained[-1].saliency is None
    got = torch.stack([e.saliency for e in explained[:-1]])
    assert torch.allclose(got, saliency, atol=1e-6)
