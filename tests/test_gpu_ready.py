"""The CUDA paths, made right by construction and checked here on the CPU: what a GPU run would
do differently is driven through the same code with CPU stand-ins."""

import os

import pytest
import torch

from alexnet import build_model, fit, load_model, resolve, resume_config
from alexnet.checkpoint import load_checkpoint, save_checkpoint
from alexnet.cli import main
from alexnet.runtime import CUBLAS_DETERMINISTIC, configure_kernels, cuda_native_bf16


def test_bf16_counts_only_in_hardware():
    # is_bf16_supported() says True on a V100 or T4 (emulated); cuDNN there has no bf16 convolutions
    assert not cuda_native_bf16(None, (7, 0)) and not cuda_native_bf16(None, (7, 5))
    assert cuda_native_bf16(None, (8, 0)) and cuda_native_bf16(None, (9, 0))


def test_deterministic_mode_sets_what_cuda_needs(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        configure_kernels(torch.device("cuda"), deterministic=True)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        configure_kernels(torch.device("cuda"), deterministic=False)
        assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]
        torch.backends.cuda.matmul.allow_tf32 = False


def test_the_identity_adaptive_pool_is_skipped_at_224():
    # torchvision's AdaptiveAvgPool2d(6) has no deterministic CUDA backward; on 6×6 maps it is the
    # identity, so the net does not run it there (and still pools other sizes)
    import torchvision

    model, reference = build_model("torchvision").eval(), torchvision.models.alexnet().eval()
    model.load_state_dict(reference.state_dict())
    calls = []
    model.avgpool.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)) and calls == []
        model(torch.randn(1, 3, 256, 256))
    assert calls == [1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_ready") / "run"
    sets = {"data.source": "cifar10-sample", "train.out": str(out), "train.epochs": "1",
            "data.limit_train": "256", "data.limit_val": "64", "train.batch_size": "32",
            "train.precision": "fp32",
            "data.ten_crop": "false", "model.widths": "16,32,32,32,32"}  # fmt: skip
    fit(resolve("cifar10", sets=sets), progress=False)
    return out


def test_a_bf16_or_fp32_run_resumes_in_fp16(run, tmp_path, monkeypatch):
    # its checkpoint holds no gradient scale ({}): a fresh scaler starts instead of
    # "The source state dict is empty"; fp16 on the CPU stands in for a GPU's
    import shutil

    from alexnet.train import loop

    out = tmp_path / "run"
    shutil.copytree(run, out)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["scaler"] == {}
    monkeypatch.setattr(loop, "resolve_precision", lambda name, device: ("fp16", "a GPU's, on the CPU"))
    result = fit(resume_config(out, {"train.epochs": "2"}), resume=True, progress=False)
    assert (
        len(result.history) == 2 and load_checkpoint(out / "checkpoints" / "last.pt")["scaler"]["scale"] > 0
    )


def test_a_run_trained_in_fp16_loads_on_the_cpu(run, tmp_path, capsys):
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    state["config"]["train"]["precision"] = "fp16"  # as a GPU run records it
    path = tmp_path / "fp16.pt"
    save_checkpoint(path, {k: v for k, v in state.items() if k not in ("format", "format_version")})
    loaded = load_model(path, device="cpu")
    assert loaded.precision in ("fp32", "bf16") and next(loaded.model.parameters()).dtype == torch.float32
    assert main(["filters", str(path), "--out", str(tmp_path / "conv1.png")]) == 0
    assert (
        main(["export", str(path), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 0
    )


class CrossDeviceCopies(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts every copy between devices (host to device and back) that the code under it makes."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aten = torch.ops.aten
        moved = func is aten._to_copy.default and kwargs.get("device", args[0].device) != args[0].device
        copied = func is aten.copy_.default and args[0].device != args[1].device
        if moved or copied:
            self.count += 1
        return func(*args, **kwargs)


class HostDataOnDevice(torch.overrides.TorchFunctionMode):
    """Counts tensors made on a device from host data (``torch.tensor(x, device=...)``): a copy that
    bypasses the dispatcher, so the mode above cannot see it."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            func in (torch.tensor, torch.as_tensor)
            and torch.device(kwargs.get("device") or "cpu").type != "cpu"
        ):
            self.count += 1
        return func(*args, **kwargs)


def copies(fn) -> int:
    with CrossDeviceCopies() as moved, HostDataOnDevice() as made:
        fn()
    return moved.count + made.count


META = torch.device("meta")  # the stand-in accelerator: shapes and dispatch without arithmetic


def transforms():
    from alexnet.data.transforms import (
        IMAGENET_EIGVALS,
        IMAGENET_EIGVECS,
        EvalTransform,
        Normalization,
        ResizedCropTransform,
        TrainTransform,
    )

    mean_image = Normalization(mean_image=torch.rand(40, 40, 3) * 255)
    channel = Normalization(mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    pca = {"eigvals": torch.tensor(IMAGENET_EIGVALS), "eigvecs": torch.tensor(IMAGENET_EIGVECS)}
    return {
        "paper (mean image, PCA lighting)": (TrainTransform(32, mean_image, path="gather", **pca), 1),
        "channel mean/std, no lighting": (TrainTransform(32, channel, path="gather"), 1),
        "cutout and PCA lighting": (TrainTransform(32, channel, cutout=12, path="gather", **pca), 1),
        "torchvision (resized crops, PCA)": (ResizedCropTransform(32, mean_image, **pca), 1),
        "ten crops": (EvalTransform(32, mean_image, ten_crop=True), 0),
        "centre crop, mean/std": (EvalTransform(32, channel), 0),
    }


@pytest.mark.parametrize("name", list(transforms()))
def test_a_transform_makes_at_most_one_copy_per_batch(name):
    # the constants cross once; then a training transform sends its random draws as one tensor
    transform, per_call = transforms()[name]
    images = torch.empty(8, 40, 40, 3, dtype=torch.uint8, device=META)
    g = torch.Generator().manual_seed(0)
    first = copies(lambda: transform(images, g))
    assert [copies(lambda: transform(images, g)) for _ in range(3)] == [per_call] * 3
    assert first >= per_call


def test_the_training_step_makes_a_constant_number_of_copies(tmp_path):
    # per step: the batch's images and labels (the loader) and the transform's draws; the running
    # sums stay on the device, read once at the end of the epoch
    from alexnet.config import OptimConfig, ScheduleConfig
    from alexnet.data import StoreLoader, open_data
    from alexnet.train import Schedule, make_optimizer, train_one_epoch

    split = open_data("cifar10-sample").split("train").evenly_spaced(64)
    model = build_model("cifar10", widths=(8, 8, 8, 8, 8), input_size=32).to(META)
    optimizer = make_optimizer(model, OptimConfig(momentum=0.9))
    transform, _ = transforms()["paper (mean image, PCA lighting)"]

    def epoch(batches):
        loader = StoreLoader(split, 64 // batches, seed=0, drop_last=True, device=META)
        schedule = Schedule(ScheduleConfig(name="constant"), 0.01, len(loader), 1)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        return copies(lambda: train_one_epoch(model, loader, transform, optimizer, schedule, scaler,
                                              torch.Generator().manual_seed(0), 0, device=META))  # fmt: skip

    epoch(2)  # the transform's constants cross once, here
    two, four, eight = epoch(2), epoch(4), epoch(8)
    assert (four - two) / 2 == (eight - four) / 4 == 3  # 3 copies a step, whatever the number of steps
    assert two == 2 * 3 + 1  # and besides them only the epoch's running sums, made once
