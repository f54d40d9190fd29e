"""bench/robustness.py on a quick subset: every way of making a digit still gives the digit.

The full benchmark (2,000 digits per condition, the reference model) runs by hand with
`make bench-robustness`; here 20 digits per condition and the session's quickly trained model,
with floors of their own, so a preprocessing change that loses digits fails the suite."""

from __future__ import annotations

import functools
import time

import pytest

from tests.helpers import load_bench_script


@pytest.fixture(scope="module")
def robustness():
    return load_bench_script("robustness")


def test_quick_subset_of_the_robustness_benchmark(robustness, trained_run, real_mnist):
    from mnistcli.loading import load_model, module_logits

    model, _ = load_model(trained_run / "best.pt")
    digits = real_mnist.test_images.numpy()[robustness.sample(20)]
    start = time.perf_counter()
    rows = robustness.score(digits, functools.partial(module_logits, model))
    print(robustness.table(rows, len(digits)), f"\n{time.perf_counter() - start:.1f} s")
    assert set(rows) == set(robustness.CONDITIONS) and len(rows) == 15
    assert all(r["no_digit"] == 0 for r in rows.values()), rows
    strict = [r["agreement"] for name, r in rows.items() if name.startswith("tight crop")]
    assert min(strict) >= 0.9, rows
    assert min(r["agreement"] for r in rows.values()) >= 0.8, rows
    assert robustness.overall(rows) >= 0.9, rows


def test_the_sample_is_fixed_and_the_renderings_are_seeded(robustness, real_mnist):
    import numpy as np

    assert robustness.sample(5).tolist() == robustness.sample(5).tolist()
    assert len(set(robustness.sample(2000).tolist())) == 2000
    digit = real_mnist.test_images[0].numpy()
    for render in robustness.CONDITIONS.values():
        a = render(digit, np.random.default_rng([0, 1, 2]))
        b = render(digit, np.random.default_rng([0, 1, 2]))
        assert np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    ("condition", "index"),
    [
        ("tight crop, 4 edges", 4927),  # a thick stroke covering most of the border
        ("phone photo (light, noise, JPEG)", 3393),  # a gradient wider than the ink's contrast
        ("squared paper", 1093),  # grid lines along three edges
        ("squared paper", 5246),  # grid lines along all four edges
    ],
)
def test_renderings_that_once_gave_no_digit_found(robustness, real_mnist, condition, index):
    """Digits of the full benchmark's sample that earlier versions declared blank."""
    import numpy as np

    from mnistcli import imaging

    position = robustness.sample(2000).tolist().index(index)
    c = list(robustness.CONDITIONS).index(condition)
    render = robustness.CONDITIONS[condition]
    im = render(real_mnist.test_images[index].numpy(), np.random.default_rng([0, c, position]))
    assert not imaging.preprocess(im).blank
