"""Optimisers and learning-rate schedules (§5).

torch.optim.SGD keeps the learning rate outside the velocity (v ← μv + g + λw; w ← w − ε v). The
paper keeps it inside: v ← μv − λεw − ε∂L/∂w; w ← w + v. The two agree while ε is constant and
differ after a drop, when the paper's velocity still carries steps taken at the old rate.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim.sgd import sgd

from ..config import OptimConfig, ScheduleConfig
from ..errors import AlexNetError
from ..recipe import head


class PaperSGD(torch.optim.Optimizer):
    """§5's update rule: the learning rate multiplies each gradient as it enters the velocity.

    Computed by torch's SGD kernels (``torch.optim.sgd.sgd``, the functional form of
    torch.optim.SGD), which update b ← μb + (1 − τ)(g + λw); w ← w − γb for a dampening τ and a rate
    γ. With τ = 1 + ε and γ = −1 this is exactly §5's rule, v ← μv − ε(g + λw); w ← w + v, so the
    fused kernel (one pass reading w, g, v and writing w, v) does the work of the four passes the
    rule takes written out: 27.9 ms against 59.6 ms for the paper net's 61 M parameters in fp32 on
    two AVX2 cores (benchmarks/optimizer.py, benchmarks/RESULTS.md). The velocity starts at zero, so
    the kernels' first-step rule (b ← g) never applies; the state keeps it as ``velocity``, the name
    checkpoints written before hold it by.
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4):
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if "velocity" not in self.state[p]:
                    self.state[p]["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            lr, mu = group["lr"], group["momentum"]
            # 1 − τ is computed in double: −ε to within 2⁻⁵³/ε relative, under fp32's rounding for
            # any ε above 1e-8. With μ = 0 the kernels keep no velocity (b is the step): γ = ε.
            rate, dampening = (-1.0, 1.0 + lr) if mu else (lr, 0.0)
            sgd(
                params,
                [p.grad for p in params],
                [self.state[p]["velocity"] for p in params],
                fused=_has_fused_kernel(params),
                weight_decay=group["weight_decay"],
                momentum=mu,
                lr=rate,
                dampening=dampening,
                nesterov=False,
                maximize=False,
            )
        return loss


def _has_fused_kernel(params: list[Tensor]) -> bool:
    """torch's fused SGD kernel exists for floating-point tensors on the CPU and CUDA; elsewhere
    (MPS in older torch, XLA) the functional form's foreach or per-tensor loop computes the same."""
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """The trainable parameters in groups: with ``bias_decay=False`` biases apart without weight
    decay; with ``backbone_lr_scale`` ≠ 1 the last layer apart from the rest, which runs at that
    fraction of the rate. Each group's ``lr_scale`` multiplies the schedule's rate; frozen
    parameters (requires_grad off) are in none."""
    last = {id(p) for p in head(model).parameters()}
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_bias = not cfg.bias_decay and name.endswith("bias")
        is_backbone = cfg.backbone_lr_scale != 1 and id(p) not in last
        groups.setdefault((is_backbone, is_bias), []).append(p)
    return [
        {"params": params, "weight_decay": 0.0 if is_bias else cfg.weight_decay,
         "lr_scale": cfg.backbone_lr_scale if is_backbone else 1.0}
        for (is_backbone, is_bias), params in sorted(groups.items())
    ]  # fmt: skip


def _fused(factory, groups, **options) -> torch.optim.Optimizer:
    """torch's fused kernel where this torch has it for these parameters: one pass over each
    tensor instead of one per term, and no temporary for the weight decay (the paper net's
    61 M-parameter SGD step: 65 ms fused against 240 ms on 2 CPU cores), else the plain one."""
    if not _has_fused_kernel([p for g in groups for p in g["params"]]):
        return factory(groups, **options)  # torch checks the devices only at the first step
    try:
        return factory(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # an older torch, or a dtype it has no kernel for
        return factory(groups, **options)


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg)
    if not groups:
        raise AlexNetError("every parameter is frozen (train.freeze): nothing to train")
    if cfg.name == "paper_sgd":
        return PaperSGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return _fused(torch.optim.SGD, groups, lr=cfg.lr, momentum=cfg.momentum,
                      weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)  # fmt: skip
    if cfg.name == "adam":  # the Paddle tutorial's choice: torch's defaults (betas 0.9/0.999, eps 1e-8)
        return _fused(torch.optim.Adam, groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise AlexNetError(f"unknown optimiser {cfg.name!r}; choose sgd, paper_sgd or adam")


PRIOR_MARGIN = 1.0  # percentage points below the class prior's error that count as having left it


class Schedule:
    """The learning rate at every step, and the plateau rule's state (drops so far, best error).

    Not torch.optim.lr_scheduler: the rate here is a function of (epoch, step in epoch) and the
    plateau state, so a run resumed mid-epoch recomputes it exactly, and warm-up composes with
    every rule. ReduceLROnPlateau (with min_lr for "at most three drops") scales the optimiser's
    stored rate in place, which a warm-up ramp set per step would overwrite.

    - ``plateau`` (§5): ÷10 when the validation error has not improved for ``patience`` epochs,
      at most ``max_drops`` times.
    - ``step``: ÷10 every ``step_size`` epochs. ``cosine``: half a cosine from the base rate to
      ``min_lr`` over the run. ``constant``.
    - ``warmup_epochs``: a linear ramp from 0 over that many epochs, before any of these.
    """

    def __init__(
        self,
        cfg: ScheduleConfig,
        base_lr: float,
        steps_per_epoch: int,
        epochs: int,
        prior_error: float | None = None,
    ) -> None:
        self.cfg, self.base_lr = cfg, base_lr
        self.steps_per_epoch, self.epochs = max(1, steps_per_epoch), epochs
        self.drops = 0
        self.best = math.inf
        self.bad_epochs = 0
        # The validation error of always answering the most common class (percent), and its margin:
        # the plateau rule waits until validation has been clearly below it once (schedule.wait_for_learning)
        self.prior_error, self.learning = prior_error, prior_error is None or not cfg.wait_for_learning

    def lr(self, epoch: int, step_in_epoch: int) -> float:
        cfg = self.cfg
        t = epoch + step_in_epoch / self.steps_per_epoch  # epochs done, fractional
        if cfg.name == "plateau":
            rate = self.base_lr * cfg.factor**self.drops
        elif cfg.name == "step":
            rate = self.base_lr * cfg.factor ** (epoch // cfg.step_size)
        elif cfg.name == "cosine":
            span = max(self.epochs - cfg.warmup_epochs, 1e-9)
            progress = min(max(t - cfg.warmup_epochs, 0.0) / span, 1.0)
            rate = cfg.min_lr + (self.base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            rate = self.base_lr
        if cfg.warmup_epochs > 0 and t < cfg.warmup_epochs:
            rate *= (step_in_epoch + 1 + epoch * self.steps_per_epoch) / (
                cfg.warmup_epochs * self.steps_per_epoch
            )
        return rate

    def describe(self) -> str:
        """One line for the log at the start of training."""
        cfg = self.cfg
        rule = {
            "plateau": f"÷{1 / cfg.factor:g} after {cfg.patience + 1} epochs without a better validation "
            f"error, at most {cfg.max_drops} times"
            + (
                f", once validation is below the class prior's {self.prior_error:.2f} % error"
                if cfg.wait_for_learning and self.prior_error is not None
                else ""
            ),
            "step": f"÷{1 / cfg.factor:g} every {cfg.step_size} epochs",
            "cosine": f"cosine down to {cfg.min_lr:g} by epoch {self.epochs}",
            "constant": "constant",
        }[cfg.name]
        warmup = (
            f", after a linear warm-up from 0 over {cfg.warmup_epochs:g} epochs" if cfg.warmup_epochs else ""
        )
        return f"learning rate {self.base_lr:g}: {rule}{warmup}"

    def change_at(self, epoch: int) -> str | None:
        """A line for the log when a step schedule drops the rate at the start of ``epoch``.

        Cosine and warm-up change the rate every step (it is in every metrics row); plateau drops are
        reported by ``end_epoch``.
        """
        if epoch == 0 or self.cfg.name != "step":
            return None
        before, now = self.lr(epoch - 1, self.steps_per_epoch - 1), self.lr(epoch, 0)
        if math.isclose(before, now, rel_tol=1e-6):
            return None
        return f"epoch {epoch + 1}: learning rate {before:.4g} → {now:.4g} (step schedule)"

    def end_epoch(self, epoch: int, val_error: float) -> str | None:
        """Feed the epoch's validation error; returns a message when the plateau rule drops the rate."""
        if self.cfg.name != "plateau" or not math.isfinite(val_error):
            return None
        if not self.learning:  # §5's drops came after learning had begun, never during the first plateau
            if val_error > self.prior_error - PRIOR_MARGIN:
                return None
            self.learning = True
        if val_error < self.best:
            self.best, self.bad_epochs = val_error, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.patience and self.drops < self.cfg.max_drops:
            self.drops += 1
            self.bad_epochs = 0
            new = self.base_lr * self.cfg.factor**self.drops
            return (
                f"epoch {epoch + 1}: validation error {val_error:.2f} % has not improved on "
                f"{self.best:.2f} % "
                f"for {self.cfg.patience + 1} epochs; learning rate ÷{1 / self.cfg.factor:g} to {new:g} "
                f"(drop {self.drops} of {self.cfg.max_drops})"
            )
        return None

    def state_dict(self) -> dict:
        return {
            "drops": self.drops,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "learning": self.learning,
        }

    def load_state_dict(self, state: dict) -> None:
        self.drops, self.best, self.bad_epochs = (
            int(state["drops"]),
            float(state["best"]),
            int(state["bad_epochs"]),
        )
        self.learning = bool(state.get("learning", True))  # checkpoints from before the rule waited
