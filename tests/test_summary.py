"""summary.py: shapes, parameters, MACs and output-size formulas, found by running the model."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mnistcli.model import SimpleCNN
from mnistcli.summary import checkpoint_info, output_size_formulas, summarize

SIMPLECNN_ROWS = [  # name, type, output shape, params, MACs for one image
    ("features.0", "Conv2d", (1, 32, 28, 28), 1 * 32 * 9 + 32, 28 * 28 * 32 * 1 * 9),
    ("features.1", "MaxPool2d", (1, 32, 14, 14), 0, 0),
    ("features.2", "ReLU", (1, 32, 14, 14), 0, 0),
    ("features.3", "Conv2d", (1, 64, 14, 14), 32 * 64 * 9 + 64, 14 * 14 * 64 * 32 * 9),
    ("features.4", "MaxPool2d", (1, 64, 7, 7), 0, 0),
    ("features.5", "ReLU", (1, 64, 7, 7), 0, 0),
    ("classifier.0", "Flatten", (1, 3136), 0, 0),
    ("classifier.1", "Linear", (1, 128), 3136 * 128 + 128, 3136 * 128),
    ("classifier.2", "ReLU", (1, 128), 0, 0),
    ("classifier.3", "Dropout", (1, 128), 0, 0),
    ("classifier.4", "Linear", (1, 10), 128 * 10 + 10, 128 * 10),
]


def evaluate_formula(line: str) -> tuple[int, int]:
    """'H, W: (28 + 2*1 - 3)/1 + 1 = 28' -> (value of the left side, the stated result)."""
    expr, stated = line.split(": ", 1)[1].rsplit(" = ", 1)
    assert re.fullmatch(r"[0-9+\-*/() a-z]+", expr), expr
    value = eval(expr, {"__builtins__": {}, "floor": math.floor, "ceil": math.ceil})
    return value, int(stated)


def test_simplecnn_rows_and_totals():
    s = summarize(SimpleCNN(), batch_size=64)
    got = [(r.name, r.type, r.output_shape, r.params, r.macs) for r in s.layers]
    assert got == SIMPLECNN_ROWS
    assert s.input_shape == (1, 1, 28, 28)
    assert s.params == s.trainable_params == 421_642
    assert s.macs == 225_792 + 3_612_672 + 401_408 + 1_280 == 4_241_152
    assert s.param_bytes == 421_642 * 4 and s.buffer_bytes == 0 and s.dtype == "float32"
    assert s.input_bytes == 28 * 28 * 4
    # every layer that makes a new tensor; Flatten is a view and Dropout in eval is the identity
    # (ReLU works in place, so it makes no new tensor)
    floats = 32 * 28 * 28 + 32 * 14 * 14 + 64 * 14 * 14 + 64 * 7 * 7 + 128 + 10
    assert s.activation_bytes == floats * 4
    assert s.activation_bytes_batch == 64 * floats * 4
    by_name = {r.name: r for r in s.layers}
    assert by_name["classifier.0"].activation_bytes == 0
    assert by_name["classifier.3"].activation_bytes == 0
    assert by_name["features.0"].settings == "1->32, kernel 3x3, stride 1, pad 1"
    assert by_name["features.1"].settings == "kernel 2x2, stride 2"
    assert by_name["classifier.3"].settings == "p=0.5"


def test_simplecnn_formulas_are_the_worked_output_sizes():
    s = summarize(SimpleCNN())
    formulas = {r.name: r.formulas for r in s.layers if r.formulas}
    assert formulas == {
        "features.0": ("H, W: (28 + 2*1 - 3)/1 + 1 = 28",),
        "features.1": ("H, W: (28 + 2*0 - 2)/2 + 1 = 14",),
        "features.3": ("H, W: (14 + 2*1 - 3)/1 + 1 = 14",),
        "features.4": ("H, W: (14 + 2*0 - 2)/2 + 1 = 7",),
    }


def test_agrees_with_torchinfo_and_flop_counter():
    """Independent cross-checks: torchinfo's shapes and parameters, torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode
    from torchinfo import summary as torchinfo_summary

    model = SimpleCNN()
    s = summarize(model)
    stats = torchinfo_summary(model, input_size=(1, 1, 28, 28), verbose=0, device="cpu")
    leaves = [row for row in stats.summary_list if row.is_leaf_layer]
    assert [tuple(row.output_size) for row in leaves] == [r.output_shape for r in s.layers]
    assert [row.num_params for row in leaves] == [r.params for r in s.layers]
    assert stats.total_params == s.params
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.zeros(3, 1, 28, 28))
    assert counter.get_total_flops() == 3 * 2 * s.macs
    assert_macs_agree_with_torchinfo(model, s)


def assert_macs_agree_with_torchinfo(model: nn.Module, s) -> None:
    """torchinfo's mult-adds, counted by its own rules, layer by layer: a Conv2d or Linear
    layer's MACs plus one add per output element for its bias (which we leave out of MACs)."""
    from torchinfo import summary as torchinfo_summary

    stats = torchinfo_summary(model, input_size=(1, 1, 28, 28), verbose=0, device="cpu")
    leaves = [row for row in stats.summary_list if row.is_leaf_layer]
    assert [row.var_name for row in leaves] == [r.name.rsplit(".", 1)[-1] for r in s.layers]
    counted = 0
    for row, ours in zip(leaves, s.layers, strict=True):
        if isinstance(row.module, nn.Conv2d | nn.Linear):
            bias_adds = math.prod(row.output_size) if row.module.bias is not None else 0
            assert row.macs == ours.macs + bias_adds, ours.name
            counted += ours.macs
        else:
            assert ours.macs == 0, ours.name  # pooling, activations, norms: no multiply-adds
    assert counted == s.layer_macs > 0


class Odd(nn.Module):
    """A model unlike SimpleCNN: non-square kernel, dilation, 'same' padding, a floor-rounded
    pool, batch norm buffers, frozen weights, a reused layer and a matmul in forward()."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, kernel_size=(5, 3), stride=2, padding=(0, 1))
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride=2)
        self.dilated = nn.Conv2d(4, 6, 3, padding="same", dilation=2, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.head = nn.Linear(6 * 5 * 6, 8)
        self.mix = nn.Parameter(torch.ones(8, 8))
        self.stem.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.norm(self.stem(x))))
        x = self.act(self.dilated(x))
        return self.head(x.flatten(1)) @ self.mix


def test_another_model_gets_its_own_figures():
    s = summarize(Odd(), batch_size=10)
    rows = [(r.name, r.output_shape, r.params, r.macs) for r in s.layers]
    # stem: H floor((28 - 5)/2) + 1 = 12, W floor((28 + 2 - 3)/2) + 1 = 14
    assert rows == [
        ("stem", (1, 4, 12, 14), 4 * 5 * 3 + 4, 12 * 14 * 4 * 5 * 3),
        ("norm", (1, 4, 12, 14), 8, 0),
        ("act", (1, 4, 12, 14), 0, 0),
        ("pool", (1, 4, 5, 6), 0, 0),  # floor((12 - 3)/2) + 1 = 5, floor((14 - 3)/2) + 1 = 6
        ("dilated", (1, 6, 5, 6), 4 * 6 * 9, 5 * 6 * 6 * 4 * 9),
        ("act", (1, 6, 5, 6), 0, 0),  # the same ReLU again: its own row
        ("head", (1, 8), 180 * 8 + 8, 180 * 8),
    ]
    assert s.params == 64 + 8 + 216 + 1448 + 64
    assert s.trainable_params == s.params - 64  # the frozen stem
    assert s.buffer_bytes == (4 + 4) * 4 + 8  # running mean and var (float32), the step count
    assert s.macs == s.layer_macs + 8 * 8  # the matmul in forward() belongs to no layer
    assert_macs_agree_with_torchinfo(Odd(), s)
    assert s.to_dict()["macs_outside_layers"] == 64
    act = [r for r in s.layers if r.name == "act"]
    assert [r.activation_bytes for r in act] == [0, 0]  # in place
    assert s.activation_bytes_batch == 10 * s.activation_bytes
    formulas = {r.name: r.formulas for r in s.layers if r.formulas}
    assert formulas["stem"] == (
        "H: floor((28 + 2*0 - 5)/2) + 1 = 12",
        "W: floor((28 + 2*1 - 3)/2) + 1 = 14",
    )
    assert formulas["pool"] == (
        "H: floor((12 + 2*0 - 3)/2) + 1 = 5",
        "W: floor((14 + 2*0 - 3)/2) + 1 = 6",
    )
    assert formulas["dilated"] == (
        "H: (5 + 2*2 - 2*(3 - 1) - 1)/1 + 1 = 5",
        "W: (6 + 2*2 - 2*(3 - 1) - 1)/1 + 1 = 6",
    )


def test_a_model_without_children_and_its_mode_are_kept():
    model = nn.Linear(784, 10).train()
    s = summarize(model, input_shape=(784,))
    assert [(r.name, r.output_shape, r.macs) for r in s.layers] == [("Linear", (1, 10), 7840)]
    assert model.training  # summarize() runs in eval mode and puts the mode back


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 40),
    kernel=st.integers(1, 6),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
    kind=st.sampled_from(["conv", "max", "avg"]),
    ceil=st.booleans(),
)
def test_formula_matches_pytorch(size, kernel, stride, padding, dilation, kind, ceil):
    """Whatever the settings, the worked formula's value is the size PyTorch produced."""
    if kind == "conv":
        layer = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
    elif kind == "max":
        layer = nn.MaxPool2d(kernel, stride, padding, dilation=dilation, ceil_mode=ceil)
    else:
        layer = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil)
        dilation = 1
    x = torch.zeros(1, 1, size, size + 1)
    try:
        out = layer(x)
    except RuntimeError:
        return  # PyTorch refuses these settings (kernel larger than the input, pad > kernel/2)
    lines = output_size_formulas(layer, tuple(x.shape), tuple(out.shape))
    assert lines, "no formula for a conv or pool layer"
    for line, actual in zip(lines, out.shape[-len(lines) :], strict=True):
        value, stated = evaluate_formula(line)
        assert value == stated == actual, line


def test_no_formula_for_other_layers():
    assert output_size_formulas(nn.ReLU(), (1, 4, 8, 8), (1, 4, 8, 8)) == ()
    assert output_size_formulas(nn.Linear(3, 4), (1, 3), (1, 4)) == ()


@pytest.mark.slow
def test_checkpoint_info_reads_the_payload(trained_run):
    from mnistcli.checkpoint import load_checkpoint

    path = trained_run / "best.pt"
    payload = torch.load(path, weights_only=True)  # the stored dict, read independently
    info = checkpoint_info(load_checkpoint(path).meta, path, weights_loaded=True)
    assert info.kind == "best" and info.model == "simplecnn" and info.finished
    assert info.epochs_run == len(payload["history"]) == 1
    assert info.best_epoch == payload["best"]["epoch"] == 1
    assert info.best_val_acc == pytest.approx(payload["best"]["val_acc"])
    assert info.test_acc == pytest.approx(payload["test"]["acc"]) and info.test_n == 10_000
    assert info.config["limit"] == 2000 and info.data == payload["data"]
    assert info.versions["torch"] == str(torch.__version__)
    assert info.created == payload["created"]
