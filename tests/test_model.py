import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mnistcli.errors import ConfigError
from mnistcli.model import MODELS, SimpleCNN, build_model, count_parameters

V1_BEST = Path(__file__).parent / "data" / "v1-best.pt"  # mnistcli 0.1.0, ReLU before pool


def describe(layer: nn.Module) -> tuple:
    """A layer as (type, the hyper-parameters that define it), comparable with ==."""
    if isinstance(layer, nn.Conv2d):
        return (
            "Conv2d",
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.bias is not None,
        )
    if isinstance(layer, nn.Linear):
        return ("Linear", layer.in_features, layer.out_features, layer.bias is not None)
    if isinstance(layer, nn.MaxPool2d):
        return ("MaxPool2d", layer.kernel_size, layer.stride)
    if isinstance(layer, nn.Dropout):
        return ("Dropout", layer.p)
    if isinstance(layer, nn.Flatten):
        return ("Flatten", layer.start_dim, layer.end_dim)
    return (type(layer).__name__,)


# SimpleCNN's layers, in the order forward() runs them. The reference design has each ReLU
# before its max-pool; SimpleCNN pools first (the two commute: the tests below show the same
# function on the reference checkpoint and on a random model, in training too).
EXPECTED_LAYERS = [
    ("Conv2d", 1, 32, (3, 3), (1, 1), (1, 1), True),  # (N, 32, 28, 28)
    ("MaxPool2d", 2, 2),  # (N, 32, 14, 14)
    ("ReLU",),
    ("Conv2d", 32, 64, (3, 3), (1, 1), (1, 1), True),  # (N, 64, 14, 14)
    ("MaxPool2d", 2, 2),  # (N, 64, 7, 7)
    ("ReLU",),
    ("Flatten", 1, -1),  # (N, 3136)
    ("Linear", 3136, 128, True),
    ("ReLU",),
    ("Dropout", 0.5),
    ("Linear", 128, 10, True),  # (N, 10) logits
]


def test_simplecnn_has_the_reference_layers_in_order():
    model = SimpleCNN()
    leaves = [m for m in model.modules() if not list(m.children())]
    assert [describe(m) for m in leaves] == EXPECTED_LAYERS
    assert [describe(m) for m in (*model.features, *model.classifier)] == EXPECTED_LAYERS


def test_each_stage_has_the_designed_shape():
    model = SimpleCNN().eval()
    x = torch.zeros(2, 1, 28, 28)
    assert model.features[:3](x).shape == (2, 32, 14, 14)
    assert model.features(x).shape == (2, 64, 7, 7)
    assert model.classifier[0](model.features(x)).shape == (2, 3136)


def test_simplecnn_has_the_reference_parameter_count():
    # conv1 32*(1*9)+32 = 320, conv2 64*(32*9)+64 = 18,496, fc1 3136*128+128 = 401,536,
    # fc2 128*10+10 = 1,290
    model = SimpleCNN()
    assert count_parameters(model) == 421_642
    assert [p.numel() for p in model.parameters()] == [288, 32, 18_432, 64, 401_408, 128, 1280, 10]
    assert all(p.requires_grad for p in model.parameters())


def test_simplecnn_maps_images_to_ten_logits():
    """(N, 10) raw scores: no softmax at the end, so rows need not sum to 1 nor lie in [0, 1]."""
    torch.manual_seed(0)
    model = SimpleCNN().eval()
    x = torch.randn(5, 1, 28, 28) * 3
    with torch.no_grad():
        out = model(x)
    assert out.shape == (5, 10) and out.dtype == torch.float32
    sums = out.sum(1)
    assert not torch.allclose(sums, torch.ones(5), atol=1e-3)
    assert (out < 0).any()  # probabilities never are
    assert torch.allclose(out.softmax(1).sum(1), torch.ones(5))  # what a caller does with them


def test_dropout_is_active_in_train_mode_and_off_in_eval_mode():
    torch.manual_seed(0)
    model = SimpleCNN()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        model.train()
        first, second = model(x), model(x)
        assert not torch.equal(first, second)  # a fresh dropout mask each pass
        model.eval()
        first, second = model(x), model(x)
        assert torch.equal(first, second)
        # eval mode is the whole network with dropout as the identity (not rescaled)
        without_dropout = nn.Sequential(model.features, *model.classifier[:3], model.classifier[4])
        assert torch.equal(first, without_dropout(x))


def test_registry_builds_by_name_and_suggests_on_typo():
    assert set(MODELS) == {"simplecnn"}
    assert isinstance(build_model("simplecnn"), SimpleCNN)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "unknown model 'simplecn' (did you mean 'simplecnn'?); known models: simplecnn"
        ),
    ):
        build_model("simplecn")
    with pytest.raises(ConfigError, match=r"^unknown model 'resnet50'; known models: simplecnn$"):
        build_model("resnet50")


def reference_order(model: SimpleCNN) -> torch.nn.Module:
    """The reference design's layer order (ReLU before each max-pool) on `model`'s own layers."""
    f, c = model.features, model.classifier
    relu = torch.nn.ReLU()
    return torch.nn.Sequential(
        f[0], relu, torch.nn.MaxPool2d(2), f[3], relu, torch.nn.MaxPool2d(2), c
    )


def test_pooling_before_relu_computes_the_reference_function():
    """ReLU after max-pool is the same function as before it: same logits, same state_dict keys."""
    from mnistcli.loading import load_model

    model, _ = load_model(V1_BEST)
    assert {k.rsplit(".", 1)[0] for k in model.state_dict()} == {
        "features.0",
        "features.3",
        "classifier.1",
        "classifier.4",
    }
    x = torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        got, expected = model(x), reference_order(model).eval()(x)
    assert torch.equal(got, expected)
    assert got.abs().max() > 1  # trained weights, not zeros


def test_a_random_model_agrees_with_the_reference_order_in_training_too():
    torch.manual_seed(3)
    model = SimpleCNN().train()
    x = torch.randn(8, 1, 28, 28)
    torch.manual_seed(1)
    got = model(x)
    torch.manual_seed(1)  # the same dropout mask
    expected = reference_order(model)(x)
    assert torch.equal(got, expected)
