from pathlib import Path

import torch

from mnistcli.model import MODELS, SimpleCNN, build_model, count_parameters

V1_BEST = Path(__file__).parent / "data" / "v1-best.pt"  # mnistcli 0.1.0, ReLU before pool


def test_simplecnn_has_the_reference_parameter_count():
    # conv1 320 + conv2 18,496 + fc1 401,536 + fc2 1,290
    assert count_parameters(SimpleCNN()) == 421_642


def test_simplecnn_maps_images_to_ten_logits():
    model = SimpleCNN().eval()
    out = model(torch.zeros(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert not torch.allclose(out.softmax(1).sum(1), out.sum(1))  # logits, not probabilities


def test_feature_shapes_follow_the_design():
    model = SimpleCNN()
    x = torch.zeros(2, 1, 28, 28)
    assert model.features[:3](x).shape == (2, 32, 14, 14)
    assert [type(m).__name__ for m in model.features] == [
        "Conv2d",
        "MaxPool2d",
        "ReLU",
        "Conv2d",
        "MaxPool2d",
        "ReLU",
    ]
    assert model.features(x).shape == (2, 64, 7, 7)


def test_registry_builds_by_name_and_suggests_on_typo():
    assert set(MODELS) == {"simplecnn"}
    assert isinstance(build_model("simplecnn"), SimpleCNN)
    try:
        build_model("simplecn")
    except Exception as exc:  # ConfigError
        assert "did you mean 'simplecnn'" in str(exc)
    else:
        raise AssertionError("unknown model accepted")


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
