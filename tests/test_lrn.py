import pytest
import torch
from conftest import count_calls, grads

from alexnet import AlexNetError
from alexnet.models import LocalResponseNorm


@pytest.mark.parametrize("size", [5, 4, 1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_equals_torch_lrn_forward_and_backward_fp32(size, channels_last):
    # Post-ReLU activations at AlexNet's scale (conv1 outputs reach tens).
    x = (torch.randn(4, 96, 13, 13) * 20).relu()
    g = torch.randn_like(x)
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    ref = torch.nn.LocalResponseNorm(size, 1e-4, 0.75, 2.0)
    ours = LocalResponseNorm(size, 1e-4, 0.75, 2.0)
    out_r, g_r = grads(ref, x, g)
    out_o, g_o = grads(ours, x, g)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_o, g_r, rtol=1e-5, atol=1e-6)
    # The layout passes through: a channels_last net stays channels_last after LRN, both ways, so
    # the next convolution does not pay for a transposition.
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out_o.is_contiguous(memory_format=fmt) and g_o.is_contiguous(memory_format=fmt)


def test_strong_normalisation_regime_matches_torch():
    # α large enough that the denominator dominates, β not 0.75: the generic pow path.
    x = torch.randn(2, 16, 5, 5) * 3
    g = torch.randn_like(x)
    ref, ours = torch.nn.LocalResponseNorm(3, 0.5, 0.6, 1.0), LocalResponseNorm(3, 0.5, 0.6, 1.0)
    out_r, g_r = grads(ref, x, g)
    out_o, g_o = grads(ours, x, g)
    torch.testing.assert_close(out_o, out_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_o, g_r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [5, 2])
def test_gradcheck_float64(size):
    x = torch.randn(2, 7, 3, 3, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(size, alpha=0.1, beta=0.75, k=2.0)
    assert torch.autograd.gradcheck(lrn, (x,))
    lrn2 = LocalResponseNorm(size, alpha=0.1, beta=0.6, k=1.0, groups=1)
    assert torch.autograd.gradcheck(lrn2, (x,))


def test_3d_input_like_torch():
    x = torch.randn(2, 6, 10).abs()
    torch.testing.assert_close(LocalResponseNorm(3)(x), torch.nn.LocalResponseNorm(3)(x))


def test_groups_normalise_each_half_on_its_own():
    x = torch.randn(2, 96, 5, 5).abs() * 10
    grouped = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)(x)
    halves = [torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(h) for h in x.chunk(2, 1)]
    torch.testing.assert_close(grouped, torch.cat(halves, 1))
    x64 = torch.randn(1, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(LocalResponseNorm(5, 0.1, 0.75, 2.0, groups=2), (x64,))


def test_bad_arguments():
    with pytest.raises(AlexNetError, match="size and groups must be ≥ 1"):
        LocalResponseNorm(0)
    with pytest.raises(AlexNetError, match="10 channels do not split into 4 groups"):
        LocalResponseNorm(5, groups=4)(torch.randn(1, 10, 2, 2))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_agrees_with_torch_in_fp32(channels_last):
    # Under bf16 autocast the window sum is a bf16 GEMM (fp32 accumulation); forward and backward
    # must stay within bf16's rounding (8 bits of mantissa) of torch's LRN computed in fp32.
    x = (torch.randn(4, 96, 13, 13) * 20).relu()
    g = torch.randn_like(x)
    if channels_last:
        x, g = x.to(memory_format=torch.channels_last), g.to(memory_format=torch.channels_last)
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    out_o, g_o = grads(LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2), x.bfloat16(), g.bfloat16())
    halves = [grads(ref, h, gh) for h, gh in zip(x.chunk(2, 1), g.chunk(2, 1), strict=True)]
    out_r, g_r = torch.cat([h[0] for h in halves], 1), torch.cat([h[1] for h in halves], 1)
    assert out_o.dtype == g_o.dtype == torch.bfloat16
    torch.testing.assert_close(out_o.float(), out_r, rtol=2e-2, atol=1e-2)
    torch.testing.assert_close(g_o.float(), g_r, rtol=2e-2, atol=2e-2)


def test_fp16_input_does_not_overflow():
    # Activations of 300 square to 90,000, beyond fp16's 65,504: the result must still be torch's
    # LRN to fp16 rounding, not zeros or NaN.
    x = torch.full((2, 8, 3, 3), 300.0)
    x[:, ::2] = 30.0
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    out = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.half())
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fp16_autocast_keeps_the_window_sums_in_fp32(layout):
    # Under autocast(float16) the band GEMM would be cast back to fp16: a² = 90,000 overflows, and
    # inf × 0 in the band product is NaN, in the forward and in the backward.
    x = torch.full((2, 8, 4, 4), 300.0).to(memory_format=layout)
    x[:, ::2] = -30.0
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        out = LocalResponseNorm(5, 1e-4, 0.75, 2.0, channels=8)(x.half())
    out.float().sum().backward()
    reference = x.detach().clone().requires_grad_(True)
    expected = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(reference)
    expected.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    torch.testing.assert_close(out.float(), expected, rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(x.grad, reference.grad, rtol=2e-3, atol=1e-4)


def test_the_band_is_a_buffer_built_once_and_forward_keeps_no_state():
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2, channels=96)
    assert dict(lrn.named_buffers())["band"].shape == (48, 48) and "band" not in lrn.state_dict()
    before = {k: v for k, v in vars(lrn).items() if not k.startswith("_")}
    buffers = [b.data_ptr() for b in lrn.buffers()]
    lrn(torch.randn(2, 96, 5, 5)).sum()
    lrn(torch.randn(2, 96, 5, 5, dtype=torch.bfloat16))
    assert {k: v for k, v in vars(lrn).items() if not k.startswith("_")} == before
    assert [b.data_ptr() for b in lrn.buffers()] == buffers  # nothing created or replaced in forward
    torch.testing.assert_close(  # and without channels, each call builds its own: the same result
        lrn(x := torch.randn(2, 96, 5, 5)), LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)(x)
    )


# --- the one-pass CPU kernel (native.py, lrn_kernel.c) ---------------------------------------


def _reference(x, g, size, alpha, beta, k, groups):
    """torch's LRN in float64, group by group: the exact result both our forms are held to."""
    x64 = x.detach().double().requires_grad_()
    ref = torch.nn.LocalResponseNorm(size, alpha, beta, k)
    out = torch.cat([ref(c) for c in x64.chunk(groups, 1)], 1)
    (gx,) = torch.autograd.grad(out, x64, g.double())
    return out, gx


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the kernel's forward and backward calls (the kernel itself runs unchanged)."""
    from alexnet.models import native

    assert native.lrn() is not None, native.status()  # CI's machines have a C compiler
    return count_calls(monkeypatch, native.NativeLRN)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("size", "beta", "groups"), [(5, 0.75, 1), (5, 0.75, 2), (4, 0.75, 1), (1, 0.75, 2), (3, 0.6, 1)]
)
def test_the_one_pass_kernel_is_torchs_lrn_to_rounding(native_calls, dtype, size, beta, groups):
    # Post-ReLU activations at conv1's scale, channels_last as the training step lays them out, and
    # α large enough (for β = 0.6: the generic pow path) that the denominator matters.
    alpha, k = (1e-4, 2.0) if beta == 0.75 else (0.5, 1.0)
    x = (torch.randn(3, 96, 7, 9) * 20).relu().to(memory_format=torch.channels_last)
    x, g = x.to(dtype), torch.randn_like(x).to(dtype)
    out_r, g_r = _reference(x, g, size, alpha, beta, k, groups)  # exact, from the same inputs
    out, gx = grads(LocalResponseNorm(size, alpha, beta, k, groups=groups), x, g)
    assert native_calls == {"forward": 1, "backward": 1}
    assert out.dtype == gx.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert gx.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.float32:
        torch.testing.assert_close(out.double(), out_r, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx.double(), g_r, rtol=1e-5, atol=1e-6)
    else:
        # Computed in fp32 and rounded once: the output is within one bf16 rounding (2⁻⁸ relative)
        # of the exact value; the gradient, from bf16 inputs and gradients, within a few.
        torch.testing.assert_close(out.double(), out_r, rtol=2**-8, atol=1e-6)
        torch.testing.assert_close(gx.double(), g_r, rtol=2**-6, atol=2**-6 * g_r.abs().max().item())


def test_the_one_pass_kernel_keeps_only_its_input_for_the_backward(native_calls, monkeypatch):
    # The backward recomputes s from x: autograd holds x alone (the GEMM form also keeps s^(−β) and
    # b/s, two more activation-sized tensors per LRN layer). Where the kernel cannot run in the
    # backward (no thread or scratch memory), the GEMM form recomputes them and the gradient stands.
    from alexnet.models import native

    x = (torch.randn(2, 96, 6, 5) * 20).relu().to(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn_like(x)
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0, groups=2)
    out = lrn(x)
    assert len(out.grad_fn.saved_tensors) == 1 and out.grad_fn.saved_tensors[0] is x
    with native.gemm_form():
        assert len(lrn(x).grad_fn.saved_tensors) == 3
    _, g_r = _reference(x, g, 5, 1e-4, 0.75, 2.0, 2)
    monkeypatch.setattr(native.NativeLRN, "backward", lambda *args: None)
    (gx,) = torch.autograd.grad(out, x, g)
    assert native_calls == {"forward": 1, "backward": 0}
    torch.testing.assert_close(gx.double(), g_r, rtol=1e-5, atol=1e-6)


def test_the_one_pass_kernel_in_bf16_is_closer_to_exact_than_the_gemm_form(native_calls):
    # The GEMM form rounds a², the window sums and s^(−β) to bf16 on the way; the kernel rounds once.
    from alexnet.models import native

    x = (torch.randn(4, 96, 13, 13) * 20).relu().bfloat16().to(memory_format=torch.channels_last)
    exact, _ = _reference(x, torch.zeros_like(x), 5, 1e-4, 0.75, 2.0, 1)
    lrn = LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    one_pass = (lrn(x).double() - exact).abs().max()
    with native.gemm_form():
        gemm = (lrn(x).double() - exact).abs().max()
    assert native_calls["forward"] == 1 and one_pass < gemm / 2


def test_the_one_pass_kernel_keeps_nans_where_torch_has_them(native_calls):
    x = (torch.randn(6, 40, 1, 1).abs() * 10).to(memory_format=torch.channels_last)
    x[2, 7] = float("nan")
    out = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    ref = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.double())
    assert native_calls["forward"] == 1
    assert torch.equal(out.isnan(), ref.isnan()) and out.isnan().sum() == 5  # row 2, channels 5–9
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6, equal_nan=True)
    bf = LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.bfloat16())
    assert torch.equal(bf.isnan(), ref.isnan())


def _fresh_kernel(monkeypatch, tmp_path):
    from alexnet.models import native

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_loaded", {})
    return native


def test_without_a_compiler_or_switched_off_lrn_takes_the_gemm_form(monkeypatch, tmp_path):
    x = (torch.randn(2, 96, 5, 5) * 20).relu().to(memory_format=torch.channels_last)
    expected = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no cc, gcc or clang
    native = _fresh_kernel(monkeypatch, tmp_path)
    assert native.lrn() is None
    assert native.status() == "no C compiler (cc, gcc, clang; or $CC) found: LRN runs as GEMMs"
    torch.testing.assert_close(LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x), expected, rtol=1e-5, atol=1e-6)
    native = _fresh_kernel(monkeypatch, tmp_path)
    monkeypatch.setenv("ALEXNET_NATIVE_LRN", "0")
    assert native.lrn() is None and native.status().startswith("off (ALEXNET_NATIVE_LRN=0)")
    assert not (tmp_path / "cache").exists()  # nothing built


def test_a_compiler_that_fails_leaves_the_gemm_form_and_says_why(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "cc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'lrn_kernel.c:1: error: no such instruction' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    native = _fresh_kernel(monkeypatch, tmp_path)
    assert native.lrn() is None
    assert native.status() == (
        "LRN's CPU kernel did not build (cc -O3 -fno-math-errno -funsafe-math-optimizations "
        "-ffinite-math-only -fno-trapping-math: lrn_kernel.c:1: error: no such instruction): "
        "LRN runs as GEMMs"
    )
    assert list((tmp_path / "cache" / "kernels").iterdir()) == []  # no half-built file left behind


def test_the_kernel_is_built_once_into_the_cache_and_a_damaged_file_is_rebuilt(monkeypatch, tmp_path):
    native = _fresh_kernel(monkeypatch, tmp_path)
    first = native.lrn()
    assert first is not None and first.path.parent == tmp_path / "cache" / "kernels"
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]
    built = first.path.stat().st_mtime_ns
    native = _fresh_kernel(monkeypatch, tmp_path)  # a new process: loads, does not compile again
    assert native.lrn().path == first.path and first.path.stat().st_mtime_ns == built
    first.path.unlink()  # (a new file: this process still maps the old one)
    first.path.write_bytes(b"not a shared library")
    native = _fresh_kernel(monkeypatch, tmp_path)
    x = torch.randn(2, 16, 3, 3).abs().to(memory_format=torch.channels_last)
    torch.testing.assert_close(
        LocalResponseNorm(5)(x), torch.nn.LocalResponseNorm(5)(x), rtol=1e-5, atol=1e-6
    )
    assert native.lrn() is not None and native.lrn().path == first.path  # rebuilt in place


def test_two_processes_building_at_once_each_get_a_whole_kernel(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "ALEXNET_CACHE": str(tmp_path)}
    code = (
        "import torch; from alexnet.models import native, LocalResponseNorm\n"
        "x = torch.randn(4, 32, 3, 3).abs().to(memory_format=torch.channels_last)\n"
        "ok = torch.allclose(LocalResponseNorm(5)(x), torch.nn.LocalResponseNorm(5)(x), 1e-5, 1e-6)\n"
        "print(native.lrn() is not None and ok)"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE) for _ in range(2)
    ]
    assert [p.communicate(timeout=300)[0].decode().strip() for p in procs] == ["True", "True"]
    built = list((tmp_path / "kernels").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # one whole file, no temporary folders left
