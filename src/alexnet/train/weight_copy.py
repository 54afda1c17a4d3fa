"""bf16 copies of the weights, written by §5's update instead of cast by autocast at every step.

Under bf16 autocast every forward casts each fp32 weight to bf16 (61 M values for the paper net)
and every backward casts each bf16 weight gradient back to fp32 for the optimizer: passes over the
weights that are not the model's. Here the model runs on bf16 copies of its trainable weights
(``torch.func.functional_call``), their bf16 gradients go straight into one compiled pass that
applies §5's rule to the fp32 weights and velocities and writes the new copies (paper step, bf16,
batch 128, 2-core Emerald Rapids: 1374 → 1185 ms in alternating rounds, benchmarks/RESULTS.md).
The fp32 weights stay the model's parameters, so checkpoints, evaluation and export see them; a
copy is ``w.to(bfloat16)``, the value autocast's cast would have made, so the forward is the one
autocast runs. The velocities
are PaperSGD's own state (key ``velocity``), so checkpoints resume either way.

Used by ``alexnet train`` for bf16 runs with the ``paper_sgd`` optimiser in one process
(``use_weight_copy``); ``ALEXNET_WEIGHT_COPY=0`` switches it off. torch.compile builds the pass
on the first step (about 10 s, then cached by inductor on disk); where it cannot, the same rule
runs eagerly (slower, the same arithmetic).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .optim import PaperSGD


def paper_update(weights, grads, velocities, copies, lr: Tensor, mu: Tensor, wd: Tensor) -> None:
    """§5's rule on fp32 weights from bf16 gradients, v ← μv − ε(g + λw); w ← w + v, writing the
    bf16 copy of w in the same pass (ε, μ, λ: 0-d tensors, so a new rate is not a new compile)."""
    for w, g, v, c in zip(weights, grads, velocities, copies, strict=True):
        v.mul_(mu).sub_(lr * (g.float() + wd * w))
        w.add_(v)
        c.copy_(w)


def use_weight_copy(optimizer: torch.optim.Optimizer, precision: str, *, distributed: bool,
                    compiled: bool, two_devices: bool) -> bool:  # fmt: skip
    """Whether a run keeps bf16 weight copies: bf16, §5's optimiser, one process, no compiled model
    (functional_call under DDP would bypass its gradient hooks; the two-device split places its own
    weights)."""
    if os.environ.get("ALEXNET_WEIGHT_COPY", "1") == "0":
        return False
    return (
        precision == "bf16"
        and isinstance(optimizer, PaperSGD)
        and not (distributed or compiled or two_devices)
        and all(p.dtype == torch.float32 for g in optimizer.param_groups for p in g["params"])
    )


class WeightCopy:
    """The model run on bf16 copies of its trainable weights, and the update that keeps them.

    Stands in for the model (``__call__``, ``train``) and the optimiser (``param_groups``,
    ``zero_grad``, ``step``) in the training loop.
    """

    def __init__(self, model: nn.Module, optimizer: PaperSGD) -> None:
        self.model, self.optimizer = model, optimizer
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        # Frozen weights are not copied: autocast casts them, as before.
        self.names = {n: p for n, p in model.named_parameters() if id(p) in trained}
        self.copies: dict[str, Tensor] = {}
        self._of = {id(p): n for n, p in self.names.items()}
        self._update = torch.compile(paper_update, fullgraph=True, dynamic=False)
        self.note = "bf16 weight copies written by the update (autocast's weight casts skipped)"
        self.refresh()

    def refresh(self) -> None:
        """The copies from the fp32 weights as they are now (at each epoch's start: after a
        checkpoint was loaded they would be stale)."""
        with torch.no_grad():
            self.copies = {n: p.detach().to(torch.bfloat16).requires_grad_() for n, p in self.names.items()}

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def train(self, mode: bool = True) -> WeightCopy:
        self.model.train(mode)
        return self

    def __call__(self, x: Tensor) -> Tensor:
        return functional_call(self.model, self.copies, (x,))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for c in self.copies.values():
            c.grad = None

    @torch.no_grad()
    def step(self) -> None:
        with torch.profiler.record_function("WeightCopy.step"):  # named in profiles (train_step.py)
            self._step()

    def _step(self) -> None:
        for group in self.optimizer.param_groups:
            params = [p for p in group["params"] if self.copies[self._of[id(p)]].grad is not None]
            if not params:
                continue
            state = self.optimizer.state
            for p in params:
                if "velocity" not in state[p]:
                    state[p]["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            copies = [self.copies[self._of[id(p)]] for p in params]
            args = (
                params, [c.grad for c in copies], [state[p]["velocity"] for p in params],
                [c.detach() for c in copies],
                *(torch.tensor(group[k], dtype=torch.float32) for k in ("lr", "momentum", "weight_decay")),
            )  # fmt: skip
            try:
                self._update(*args)
            except Exception as exc:  # no C++ compiler for inductor, an unsupported platform: eager
                if self._update is paper_update:
                    raise
                self._update = paper_update
                self.note = f"bf16 weight copies updated eagerly (torch.compile failed: {type(exc).__name__})"
                paper_update(*args)
