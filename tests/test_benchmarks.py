"""What the benchmark scripts count and time, checked where it can be exact (no timings asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnet import build_model
from alexnet.config import preset
from alexnet.models.summary import summarize
from alexnet.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture
def train_step(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_step

    return train_step


@pytest.mark.parametrize("name", ["paper", "cifar10", "cifar10-long"])
def test_the_ceilings_flop_count_is_three_passes_of_the_models_multiply_adds(train_step, name):
    # forward, input gradient and weight gradient each repeat the forward's multiply-adds, except
    # conv1's input gradient, which training never computes; the paper net's grouped convolutions
    # (conv2, conv4, conv5) once each, not once per group as torch's own formula counts them; each
    # net as its preset builds it (the cifar10 one in two groups)
    size = {"paper": 227, "cifar10": 28, "cifar10-long": 28}[name]
    summary = summarize(train_step.preset_model(name, size), size)
    conv1 = next(row.macs for row in summary.rows if row.name == "conv1")
    expected = 2 * (3 * summary.total_macs - conv1)
    assert train_step.step_flops(name, size, torch.device("cpu")) == expected
    if name == "paper":
        assert expected == 4_135_610_496  # 724.4 M multiply-adds per image (`alexnet summary paper`)
    elif name == "cifar10":
        # by hand at 28: conv1 784·64·75, conv2 169·128·800 (two groups), conv3 and conv4 36·256·1152,
        # conv5 36·128·1152, fc6 and fc7 512·512, fc8 512·10
        assert summary.total_macs == 48_140_288
    else:  # the 89 % recipe's wider net: conv1 784·96·75, conv2 169·192·1200, conv3 36·384·1728,
        # conv4 36·384·1728 and conv5 36·256·1728 (two groups), fc6 1024·512, fc7 512·512, fc8 512·10
        assert summary.total_macs == 109_074_944


def test_the_cpu_ceiling_is_the_fastest_of_its_probes(train_step):
    # a matmul and two of the paper net's convolutions, each timed in the step's precision; the
    # ceiling is the best rate of the three (some CPUs' sgemm is slower than their convolutions)
    peak, source = train_step.arithmetic_peak(torch.device("cpu"), "fp32", repeats=1)
    head, _, rates = source.partition("; GFLOP/s by probe: ")
    shown = dict(r.rsplit(" ", 1) for r in rates.split(", "))
    assert head == "fp32" and list(shown) == ["matmul 4096²", "conv2 5×5 g2", "conv3 3×3"]
    assert f"{peak / 1e9:.0f}" == max(shown.values(), key=int)


def test_the_kernel_bound_times_each_convolution_and_matmul_of_the_paper_net_at_its_shapes(train_step):
    # `train_step.py --kernels`: the paper net's eight layers found by their modules, each timed
    # forward + backward alone at the shape it sees in the net (a wrong shape would fail to run)
    times = train_step.kernel_times("paper", 227, 2, torch.device("cpu"), "fp32")
    assert list(times) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert all(t > 0 for t in times.values())


def test_the_kernel_bound_alternates_whole_steps_with_all_kernels_in_a_row(train_step):
    # the same statistic on both sides: best whole step against the best run of every kernel back to
    # back, in alternating rounds after two warm-up rounds
    calls = []
    kernels = {"conv1": lambda: calls.append("conv1"), "fc8": lambda: calls.append("fc8")}
    x, y = torch.zeros(4, 1), torch.zeros(4)
    step_rate, kernel_rate = train_step.paired_rates(
        lambda *_: calls.append("step"), x, y, kernels, rounds=3, device=torch.device("cpu")
    )
    assert calls == ["step", "conv1", "fc8"] * 5
    assert step_rate > 0 and kernel_rate > 0


def test_the_breakdown_gives_each_op_to_the_category_that_owns_it(train_step):
    # ops inside LRN and the optimizer are theirs even when they are GEMMs or copies; the rest go by
    # the op itself (innermost first), then by the autograd node above it
    lrn_gemm = ["aten::addmm", "aten::_LRN_mix", "_LRN"]
    assert train_step.category(lrn_gemm) == "LRN"
    assert (
        train_step.category(["aten::mm", "_LRNBackward", "autograd::engine::evaluate_function: _LRNBackward"])
        == "LRN"
    )
    assert train_step.category(["aten::copy_", "aten::clone", "Optimizer.step#SGD.step"]) == "optimizer"
    assert (
        train_step.category(["aten::convolution_backward", "ConvolutionBackward0"])
        == "convolutions and matmuls"
    )
    assert train_step.category(["aten::copy_", "aten::_to_copy", "aten::to", "aten::linear"]) == "casts"
    assert train_step.category(["aten::threshold_backward", "ReluBackward0"]) == "ReLU"
    assert train_step.category(["aten::fill_", "MaxPool2DWithIndicesBackward0"]) == "pooling"
    assert train_step.category(["aten::bernoulli_", "aten::dropout"]) == "dropout"
    assert train_step.category(["aten::add_", "AccumulateGrad"]) == "other"


@pytest.mark.parametrize("lrn", [True, False])
def test_the_breakdown_of_a_real_step_finds_its_convolutions_pools_and_lrn(train_step, lrn):
    # `train_step.py --breakdown` on the cifar10 net: every category is reported; the LRN's share
    # exists exactly when the net has LRN
    model = build_model("cifar10", **{**preset("cifar10").model.switches(), "input_size": 28, "lrn": lrn})
    opt = make_optimizer(model, preset("cifar10").optim)
    step = train_step.make_step(model, torch.device("cpu"), "fp32", channels_last=True, optimizer=opt)
    parts = train_step.breakdown(step, torch.randn(4, 3, 28, 28), torch.randint(0, 10, (4,)), steps=1)
    assert list(parts) == list(train_step.CATEGORIES)
    for name in ("convolutions and matmuls", "pooling", "ReLU", "optimizer", "dropout", "loss"):
        assert parts[name] > 0, name
    assert (parts["LRN"] > 0) == lrn


SKIPPED_ON_A_CPU = ("nvJPEG under memory churn", "DDP with NCCL", "host syncs in a step")


def gpu_check_dry_run(out, checks: tuple[str, ...]) -> dict:
    # the whole --dry-run also runs the CUDA test files and train_step.py, which the suite runs anyway
    cmd = [sys.executable, str(BENCH / "gpu_check.py"), "--dry-run", "--out", str(out)]
    cmd += ["--only", ",".join(checks)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())["checks"]
    assert {n: c["status"] for n, c in result.items()} == {
        n: "skipped" if n in SKIPPED_ON_A_CPU else "ok" for n in checks
    }
    assert "needs two GPUs" in result["DDP with NCCL"]["why"]
    return result


def test_the_gpu_check_dry_run_checks_fp16_lrn_and_says_why_it_skips_the_rest(tmp_path):
    checks = gpu_check_dry_run(tmp_path, ("environment", "fp16 LRN", *SKIPPED_ON_A_CPU))
    assert checks["fp16 LRN"]["result"]["max_relative_error"] < 2e-3


@pytest.mark.slow  # two one-epoch trainings of the paper net at 224 px (about 15 s)
def test_the_gpu_checks_training_runs_dry_on_the_cpu(tmp_path):
    checks = gpu_check_dry_run(tmp_path, ("end to end from a JPEG store", "two towers", "DDP with NCCL"))
    assert checks["two towers"]["result"]["cpu,cpu"]["train_img_per_s"] > 0
    assert "| end to end from a JPEG store | ok |" in (tmp_path / "gpu_check.md").read_text()


def test_the_bf16_weight_copys_update_is_the_paper_rule_and_writes_the_copy(monkeypatch):
    # benchmarks/optimizer.py --bf16 times this pass against autocast's route: it must do the same work
    monkeypatch.syspath_prepend(str(BENCH))
    import optimizer

    torch.manual_seed(0)
    w, g = torch.randn(300, 7), torch.randn(300, 7).to(torch.bfloat16)
    masters, velocities = [w.clone()], [torch.zeros_like(w)]
    copies = [torch.empty(300, 7, dtype=torch.bfloat16)]
    ref, v = w.clone(), torch.zeros_like(w)
    for lr in (0.01, 0.001):
        rates = (torch.tensor(lr), torch.tensor(0.9), torch.tensor(5e-4))
        optimizer.paper_update(masters, [g], velocities, copies, *rates)
        v.mul_(0.9).add_(ref, alpha=-5e-4 * lr).add_(g.float(), alpha=-lr)
        ref.add_(v)
        torch.testing.assert_close(masters[0], ref, rtol=2e-7, atol=2e-7)
        assert torch.equal(copies[0], masters[0].to(torch.bfloat16))


@pytest.mark.slow  # the paper net's 61 M parameters stepped five ways, a compile, 256 MB probes (~20 s)
def test_the_optimizer_benchmark_times_the_paper_rule_and_the_bf16_weight_copy():
    cmd = [sys.executable, str(BENCH / "optimizer.py"), "--rounds", "1", "--bf16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "paper: 60,965,224 parameters, paper_sgd" in lines[0]
    timed = ("written out (four passes)", "ours (PaperSGD)", "torch.optim.SGD fused (the kernel alone)")
    for name in timed:
        assert any(line.startswith(f"  {name} ") and line.endswith("% of the bandwidth") for line in lines), (
            name
        )
    assert any(line.startswith("ours: ") and "× the written-out rule; " in line for line in lines)
    for name in ("autocast's casts + ours", "one compiled pass writing the bf16 copy"):
        assert any(line.startswith(f"  {name} ") and line.endswith(" ms") for line in lines), name
    assert lines[-1].startswith("a bf16 weight copy kept by the optimizer would save ")


def test_the_parity_check_compares_naive_and_ours_with_dropout_off(train_step):
    # our dropout kernel draws other masks than torch's, so the benchmark's "loss after 3 steps"
    # compares the two steps with every dropout at rate 0, at lr 0.001: then only rounding separates
    # them (fp32)
    made = train_step.variants("cifar10", 28, torch.device("cpu"), False, "fp32")
    naive, ours = made[next(iter(made))](dropout=False), list(made.values())[-1](dropout=False)
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 28, 28), torch.randint(0, 10, (8,))
    losses = [[float(step(x, y)) for _ in range(3)] for step in (naive, ours)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert losses[0][2] < losses[0][1] < losses[0][0]  # at lr 0.001 (the preset's 0.04 comes after
    # its warm-up) the steps really learn this batch
    with_dropout = [float(made[next(iter(made))]()(x, y)) for _ in range(2)]
    assert with_dropout[0] == with_dropout[1] != losses[0][0]  # the timed models keep their dropout


def test_the_cpu_ceiling_is_probed_again_after_the_models(train_step, monkeypatch, capsys):
    # a machine that speeds up during the run: the ceiling lines use the best of the two probes, so
    # no step or kernel bound is reported above "the peak" for a probe taken in a slow minute
    probes = iter([1e12, 2e12])
    monkeypatch.setattr(train_step, "arithmetic_peak", lambda *a, **k: (next(probes), "stand-in"))
    argv = ["train_step.py", "--models", "cifar10", "--batch", "8", "--steps", "1", "--precision", "fp32"]
    monkeypatch.setattr("sys.argv", argv)
    train_step.main()
    out = capsys.readouterr().out
    assert "peak here 1000 GFLOP/s (stand-in)" in out
    assert "peak probed again after the models: 2000 GFLOP/s (stand-in); the ceiling below uses 2000" in out
    ceiling = 2e12 / train_step.step_flops("cifar10", 28, torch.device("cpu"))
    assert f"ceiling {ceiling:.1f} img/s" in out


def test_the_step_benchmark_finds_the_convolutions_with_the_matmul_weight_gradient(train_step, monkeypatch):
    # the matmul's worth is timed only where the step takes it: conv3–conv5 of the cifar10 nets (6×6
    # maps) in bf16 on a CPU with AMX; the paper net's 13×13 maps and fp32 keep oneDNN's kernels
    from alexnet.models import conv

    cpu = torch.device("cpu")
    monkeypatch.setattr(conv, "_amx", lambda: True)
    assert train_step.matmul_convs("cifar10", 28, cpu, "bf16") == ["conv3", "conv4", "conv5"]
    assert train_step.matmul_convs("paper", 227, cpu, "bf16") == []
    assert train_step.matmul_convs("cifar10", 28, cpu, "fp32") == []
    seen = []
    off = train_step.without_matmul_weight_grads(lambda x, y: seen.append(conv.MAX_PIXELS))
    off(None, None)
    assert seen == [0] and conv.MAX_PIXELS == 36  # off for the step, back on after it
    taken = []  # the kernel bound runs each convolution as the step does
    monkeypatch.setattr(conv, "conv_with_matmul_weight_grad", lambda m, x: taken.append(m) or m(x))
    runs = train_step.kernel_runs("cifar10", 28, 2, cpu, "bf16")
    for run in runs.values():
        run()
    assert [m.out_channels for m in taken] == [
        build_model("cifar10").features[i].out_channels for i in (8, 10, 12)
    ]


def test_the_layers_benchmark_times_each_stride_one_convolution_both_ways(monkeypatch):
    # `layers.py`: every stride-1 convolution (the paper's conv1 has stride 4), oneDNN's weight
    # gradient against the matmul's, and which one the model takes
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import layers
    from train_step import preset_model

    from alexnet.models import conv

    monkeypatch.setattr(conv, "_amx", lambda: True)
    model = preset_model("cifar10", 28).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 28, 28).contiguous(memory_format=torch.channels_last)
    lines = layers.conv_lines(model, x, "bf16", rounds=1)
    assert [line.split()[0] for line in lines] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [line.endswith("the model: the matmul") for line in lines] == [False, False, True, True, True]
    assert "3×3/2 on 2×256×6×6 bf16" in lines[3]  # conv4: two groups on conv3's 256 maps
    paper = preset_model("paper", 227).to(memory_format=torch.channels_last)
    lines = layers.conv_lines(paper, torch.randn(1, 3, 227, 227), "bf16", rounds=1)
    assert [line.split()[0] for line in lines] == ["conv2", "conv3", "conv4", "conv5"]
    assert all(line.endswith("the model: oneDNN's") for line in lines)
