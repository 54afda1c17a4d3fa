"""Exporting a trained model: ONNX (dynamic batch axis, checked with onnxruntime), TorchScript, or
safetensors (the weights plus a JSON of the config, class names and preprocessing, which
``build_model(name, weights=FILE)`` reads back).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import AlexNetError
from ..fileio import check_writable_target, write_atomic
from ..loading import LoadedModel
from ..recipe import saved_normalization
from ..weights import require, safetensors_bytes

FORMATS = ("onnx", "torchscript", "safetensors")


def metadata(loaded: LoadedModel) -> dict:
    """What a safetensors export records beside the weights: how to build the model (``build``,
    read back by ``build_model``), its config, classes and preprocessing (the mean image, when
    there is one, travels as a tensor)."""
    p, model = loaded.preprocessing, loaded.model
    norm = saved_normalization(p.normalization)
    build = {"name": loaded.config.model.name, "num_classes": len(loaded.classes), "in_channels": p.channels,
             "input_size": p.resize or p.crop, **loaded.config.model.switches()}  # fmt: skip
    return {
        "build": {k: list(v) if isinstance(v, tuple) else v for k, v in build.items()},
        "config": to_dict(loaded.config),
        "arch": {
            "name": getattr(model, "arch", loaded.config.model.name),
            "num_classes": len(loaded.classes),
            "in_channels": p.channels,
        },
        "classes": loaded.classes,
        "image_size": p.image_size,
        "crop": p.crop,
        "resize": p.resize,
        "normalization": {k: v for k, v in norm.items() if k != "mean_image"},
    }


def export(loaded: LoadedModel, fmt: str, out: str | Path, check_images: torch.Tensor | None = None) -> dict:
    """Write ``out`` in ``fmt``; for ONNX and TorchScript, compare its logits with PyTorch's on
    ``check_images`` (uint8 [B, S, S, C]) and return the largest absolute difference.

    The file is made in memory, checked, then written atomically: a full disk or a killed process
    leaves the previous file (or none), never a partial one, and is one line naming the file.
    """
    if fmt not in FORMATS:
        raise AlexNetError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    out = check_writable_target(out)
    model = loaded.model.float().cpu().eval().to(memory_format=torch.contiguous_format)
    transform = loaded.transform()
    if check_images is None:
        side, generator = loaded.image_size, torch.Generator().manual_seed(0)
        check_images = torch.randint(
            0, 256, (4, side, side, loaded.channels), dtype=torch.uint8, generator=generator
        )
    x = transform(check_images).contiguous()
    with torch.no_grad():
        expected = model(x).numpy()
    report = {"format": fmt, "path": str(out), "checked_images": len(x)}
    if fmt == "safetensors":
        mean = loaded.preprocessing.normalization.mean_image
        extra = {"mean_image": mean} if mean is not None else {}
        write_atomic(out, safetensors_bytes(model.state_dict(), extra, metadata(loaded)))
        return report
    buffer = io.BytesIO()
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes on shape checks, fixed for this input size
            traced = torch.jit.trace(model, x[:1])
        torch.jit.save(traced, buffer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit.load is deprecated; the format is not gone
            got = torch.jit.load(io.BytesIO(buffer.getvalue()))(x).detach().numpy()
    else:
        require("onnx", "export")
        ort = require("onnxruntime", "export")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x[:1],), buffer, input_names=["images"], output_names=["logits"],
                              dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              dynamo=False)  # fmt: skip
        session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x.numpy()})[0]
    write_atomic(out, buffer.getvalue())
    report["max_abs_logit_difference"] = float(np.abs(got - expected).max())
    return report
