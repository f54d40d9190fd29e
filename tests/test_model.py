import torch

from mnistcli.model import MODELS, SimpleCNN, build_model, count_parameters


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
