"""mnistcli.optim.Adam: torch.optim.Adam's arithmetic and state, without importing torch._dynamo."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mnistcli.model import SimpleCNN
from mnistcli.optim import Adam


def _train(model, optimizer, steps, *, one_cycle=False, total=20):
    """`steps` optimizer steps on fixed random digits, dropout seeded: the weights after them."""
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=total)
        if one_cycle
        else None
    )
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    torch.manual_seed(2)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("one_cycle", [False, True])
def test_the_same_weights_as_torch_fused_adam_bit_for_bit(one_cycle):
    torch.manual_seed(0)
    ours_model = SimpleCNN()
    torch_model = copy.deepcopy(ours_model)
    ours = _train(ours_model, Adam(ours_model.parameters(), lr=1e-3), 8, one_cycle=one_cycle)
    theirs = _train(
        torch_model,
        torch.optim.Adam(torch_model.parameters(), lr=1e-3, fused=True),
        8,
        one_cycle=one_cycle,
    )
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ours, SimpleCNN().parameters(), strict=True))


def test_weight_decay_is_adamws_bit_for_bit():
    """[train] weight_decay: decoupled from the gradient, the very update of torch's AdamW."""
    torch.manual_seed(0)
    ours_model = SimpleCNN()
    torch_model = copy.deepcopy(ours_model)
    ours = _train(ours_model, Adam(ours_model.parameters(), lr=1e-3, weight_decay=0.05), 8)
    adamw = torch.optim.AdamW(torch_model.parameters(), lr=1e-3, weight_decay=0.05, fused=True)
    assert all(torch.equal(a, b) for a, b in zip(ours, _train(torch_model, adamw, 8), strict=True))
    torch.manual_seed(0)
    plain_model = SimpleCNN()  # the same start, no decay: different weights
    plain = _train(plain_model, Adam(plain_model.parameters(), lr=1e-3), 8)
    assert not all(torch.equal(a, b) for a, b in zip(ours, plain, strict=True))


def test_state_dicts_are_torch_adams_and_load_both_ways():
    """A checkpoint's optimizer state from torch.optim.Adam (runs before this class) resumes in
    Adam, and Adam's loads into torch.optim.Adam: same keys, same tensors, same next step."""
    torch.manual_seed(0)
    a = SimpleCNN()
    b = copy.deepcopy(a)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    _train(a, opt_a, 3)
    saved = copy.deepcopy(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    opt_b = Adam(b.parameters(), lr=5e-4)  # the saved lr must win
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["lr"] == 1e-3
    mine = opt_b.state_dict()
    assert mine["param_groups"] == saved["param_groups"]
    for key, state in saved["state"].items():
        assert state.keys() == mine["state"][key].keys()
        assert all(torch.equal(state[k], mine["state"][key][k]) for k in state)
    after_a, after_b = _train(a, opt_a, 2), _train(b, opt_b, 2)
    assert all(torch.equal(x, y) for x, y in zip(after_a, after_b, strict=True))
    back = torch.optim.Adam(SimpleCNN().parameters(), lr=1e-3)
    back.load_state_dict(opt_b.state_dict())  # and the other way round


@pytest.mark.slow
def test_a_piped_training_run_imports_neither_torch_dynamo_nor_plotext(mnist_root, tmp_path):
    """Start-up that a run never uses: torch.optim's guards import torch._dynamo (about 1 s), the
    terminal chart imports plotext (0.25 s); with --json into a pipe neither is needed."""
    script = (
        "import json, sys\n"
        "from mnistcli.cli import main\n"
        "sys.argv = ['mnistcli', 'train', '--json', '--device', 'cpu', '--epochs', '1',"
        f" '--limit', '300', '--val-size', '100', '--data-root', {str(mnist_root)!r},"
        f" '--out', {str(tmp_path / 'runs')!r}]\n"
        "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "print(json.dumps([m for m in ('torch._dynamo', 'plotext') if m in sys.modules]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "runs" / "latest" / "best.pt").is_file()


def test_the_moving_average_follows_the_weights_by_its_decay():
    from mnistcli.optim import ParameterEMA

    torch.manual_seed(0)
    model = SimpleCNN()
    start = [p.detach().clone() for p in model.parameters()]
    ema = ParameterEMA(model, decay=0.9)
    assert all(not p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()
    for averaged, before in zip(ema.module.parameters(), start, strict=True):
        assert torch.allclose(averaged, before + 0.1, atol=1e-6)  # 10% of the way
    ema.update()
    for averaged, before in zip(ema.module.parameters(), start, strict=True):
        assert torch.allclose(averaged, before + 0.19, atol=1e-6)
    copy_of = ParameterEMA(SimpleCNN(), decay=0.9)
    copy_of.load_state_dict(ema.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(copy_of.module.parameters(), ema.module.parameters(), strict=True)
    )
