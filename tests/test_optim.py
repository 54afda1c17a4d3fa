import math

import pytest
import torch

from alexnet.config import ScheduleConfig
from alexnet.train import PaperSGD, Schedule


def run(optimizer_cls, rates, **kwargs):
    """Minimise L = w²/2 (so ∂L/∂w = w) from w = 1 with the given learning rate per step."""
    w = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = optimizer_cls([w], lr=rates[0], momentum=0.9, weight_decay=0.01, **kwargs)
    for lr in rates:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        (0.5 * w**2).sum().backward()
        opt.step()
    return w.item()


def test_paper_rule_by_hand_with_a_rate_drop():
    # §5: v ← 0.9 v − 0.01·ε·w − ε·w;  w ← w + v, with ε = 0.1, 0.1, then 0.01.
    # step 1: v = −0.1·1.01·1 = −0.101;                    w = 0.899
    # step 2: v = 0.9·(−0.101) − 0.1·1.01·0.899 = −0.181699;  w = 0.717301
    # step 3: v = 0.9·(−0.181699) − 0.01·1.01·0.717301 = −0.1707738401;  w = 0.5465271599
    assert run(PaperSGD, [0.1]) == pytest.approx(0.899, abs=1e-12)
    assert run(PaperSGD, [0.1, 0.1]) == pytest.approx(0.717301, abs=1e-12)
    assert run(PaperSGD, [0.1, 0.1, 0.01]) == pytest.approx(0.5465271599, abs=1e-12)


def test_torch_sgd_agrees_at_a_constant_rate_and_differs_after_the_drop():
    # torch: b ← 0.9 b + (w + 0.01 w); w ← w − ε b.  Step 3 (ε = 0.01):
    # b = 0.9·1.81699 + 1.01·0.717301 = 2.35976501;  w = 0.717301 − 0.0235976501 = 0.6937033499
    assert run(torch.optim.SGD, [0.1, 0.1]) == pytest.approx(run(PaperSGD, [0.1, 0.1]), abs=1e-12)
    assert run(torch.optim.SGD, [0.1, 0.1, 0.01]) == pytest.approx(0.6937033499, abs=1e-12)


def written_out(params, grads, velocities, lr, mu, wd):
    """§5's rule as four passes, v ← μv − λεw − εg; w ← w + v (PaperSGD before it used torch's kernel)."""
    for w, g, v in zip(params, grads, velocities, strict=True):
        v.mul_(mu).add_(w, alpha=-wd * lr).add_(g, alpha=-lr)
        w.add_(v)


@pytest.mark.parametrize("mu", [0.9, 0.0])
def test_paper_sgd_on_torchs_fused_kernel_is_the_rule_written_out(monkeypatch, mu):
    # two groups as the paper preset has them (weights decayed, biases not), a rate drop and an odd
    # rate; fp32, so the two differ only in rounding (the kernel adds λw to g before scaling by ε)
    calls = []
    kernel = torch._fused_sgd_
    monkeypatch.setattr(torch, "_fused_sgd_", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    torch.manual_seed(0)
    weights = [torch.randn(64, 27), torch.randn(5, 5, 3, 3).contiguous(memory_format=torch.channels_last)]
    biases = [torch.randn(64)]  # the conv weight channels_last, as training holds it
    ours = [torch.nn.Parameter(t.clone()) for t in weights + biases]
    opt = PaperSGD(
        [{"params": ours[:2]}, {"params": ours[2:], "weight_decay": 0.0}], momentum=mu, weight_decay=5e-4
    )
    ref = [t.clone() for t in weights + biases]
    velocities = [torch.zeros_like(t) for t in ref]
    for lr in (0.01, 0.01, 0.001, 0.0123):
        grads = [torch.randn_like(t) for t in ref]
        for p, g in zip(ours, grads, strict=True):
            p.grad = g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        written_out(ref[:2], grads[:2], velocities[:2], lr, mu, 5e-4)
        written_out(ref[2:], grads[2:], velocities[2:], lr, mu, 0.0)
        for p, r in zip(ours, ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=2e-7, atol=2e-7)
    if mu:  # the velocity, under the name a checkpoint keeps it by
        for p, v in zip(ours, velocities, strict=True):
            # a few ulp of velocities near 0.03
            torch.testing.assert_close(opt.state[p]["velocity"], v, rtol=1e-6, atol=1e-8)
    assert len(calls) == 8  # one fused call per group and step: no per-tensor passes


def test_plateau_divides_by_ten_after_patience_at_most_max_drops():
    s = Schedule(ScheduleConfig(name="plateau", patience=1, max_drops=2), 0.01, steps_per_epoch=10, epochs=90)
    assert s.lr(0, 0) == 0.01
    assert s.end_epoch(0, 50.0) is None and s.end_epoch(1, 40.0) is None
    assert s.end_epoch(2, 41.0) is None  # one bad epoch: within patience
    message = s.end_epoch(3, 40.5)  # second bad epoch: drop
    assert message and "learning rate ÷10 to 0.001 (drop 1 of 2)" in message
    assert s.lr(4, 0) == pytest.approx(0.001)
    assert s.end_epoch(4, 39.0) is None  # improvement resets
    s.end_epoch(5, 39.5)
    assert "drop 2 of 2" in s.end_epoch(6, 39.5)
    s.end_epoch(7, 39.9)
    assert s.end_epoch(8, 39.9) is None and s.drops == 2  # no third drop
    assert s.lr(9, 5) == pytest.approx(1e-4)
    restored = Schedule(ScheduleConfig(name="plateau", patience=1, max_drops=2), 0.01, 10, 90)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(9, 0) == s.lr(9, 0) and restored.best == 39.0


def test_step_cosine_and_warmup():
    step = Schedule(ScheduleConfig(name="step", step_size=30), 0.01, 100, 90)
    assert [step.lr(e, 0) for e in (0, 29, 30, 60, 89)] == pytest.approx([0.01, 0.01, 0.001, 1e-4, 1e-4])
    cos = Schedule(ScheduleConfig(name="cosine", min_lr=0.001), 0.1, 10, 10)
    assert cos.lr(0, 0) == pytest.approx(0.1)
    assert cos.lr(5, 0) == pytest.approx(0.001 + 0.099 * 0.5)
    assert cos.lr(9, 10) == pytest.approx(0.001)
    warm = Schedule(ScheduleConfig(name="constant", warmup_epochs=2), 0.1, 10, 5)
    assert [warm.lr(0, i) for i in (0, 9)] == pytest.approx([0.1 / 20, 0.1 / 2])
    assert warm.lr(1, 9) == pytest.approx(0.1) and warm.lr(2, 0) == pytest.approx(0.1)
    assert math.isclose(Schedule(ScheduleConfig(name="constant"), 0.3, 5, 5).lr(4, 4), 0.3)


def test_discrete_rate_changes_are_announced():
    step = Schedule(ScheduleConfig(name="step", step_size=2), 0.01, 5, 6)
    assert [step.change_at(e) for e in (0, 1, 3)] == [None, None, None]
    assert step.change_at(2) == "epoch 3: learning rate 0.01 → 0.001 (step schedule)"
    assert Schedule(ScheduleConfig(name="cosine", warmup_epochs=1), 0.1, 4, 10).change_at(1) is None
    assert Schedule(ScheduleConfig(), 0.01, 5, 90).describe() == (
        "learning rate 0.01: ÷10 after 3 epochs without a better validation error, at most 3 times"
    )
    assert Schedule(ScheduleConfig(name="cosine", warmup_epochs=1), 0.02, 5, 15).describe() == (
        "learning rate 0.02: cosine down to 0 by epoch 15, after a linear warm-up from 0 over 1 epochs"
    )


def test_the_plateau_rule_waits_while_validation_sits_at_the_class_prior():
    # 10 balanced classes: always answering one of them is 90 % wrong. Stuck there (the paper's
    # init on small data), the rule used to read a flat error as a plateau and cut the rate.
    waiting = Schedule(ScheduleConfig(name="plateau", patience=1), 0.01, 10, 90, prior_error=90.0)
    assert [waiting.end_epoch(e, err) for e, err in enumerate([90.0, 90.0, 89.5, 90.0, 90.0])] == [None] * 5
    assert waiting.drops == 0 and waiting.lr(5, 0) == 0.01
    assert waiting.end_epoch(5, 85.0) is None  # left the prior (by more than a point): the rule starts
    waiting.end_epoch(6, 85.5)
    assert "drop 1 of 3" in waiting.end_epoch(7, 86.0)  # and drops as before
    restored = Schedule(ScheduleConfig(name="plateau", patience=1), 0.01, 10, 90, prior_error=90.0)
    restored.load_state_dict(waiting.state_dict())
    assert restored.learning and restored.drops == 1
    # switched off, or with no prior known, it is the rule as it was
    eager = Schedule(
        ScheduleConfig(name="plateau", patience=1, wait_for_learning=False), 0.01, 10, 90, prior_error=90.0
    )
    eager.end_epoch(0, 90.0)
    eager.end_epoch(1, 90.0)
    assert "drop 1 of 3" in eager.end_epoch(2, 90.0)
