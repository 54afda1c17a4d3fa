"""Exporting a trained model: ONNX (dynamic batch axis, checked with onnxruntime), TorchScript, or
safetensors (the weights plus a JSON of the config, class names and preprocessing, which
``build_model(name, weights=FILE)`` reads back).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..errors import AlexNetError
from ..fileio import reporting_write_errors
from .predict import LoadedModel

FORMATS = ("onnx", "torchscript", "safetensors")
META_KEY = "alexnet"  # safetensors metadata entry holding the JSON
MEAN_IMAGE_KEY = "_alexnet.mean_image"  # the per-pixel mean image travels as a tensor beside the weights


def _require(module: str, extra: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise AlexNetError(
            f"this needs {module}: pip install 'alexnet[{extra}]' (or pip install {module})"
        ) from None


def metadata(loaded: LoadedModel) -> dict:
    norm = loaded._state["normalization"]
    return {
        "config": to_dict(loaded.config),
        "arch": loaded._state["arch"],
        "classes": loaded.classes,
        "image_size": loaded.image_size,
        "crop": int(loaded._state["crop"]),
        "resize": loaded._state.get("resize"),
        "normalization": {k: v for k, v in norm.items() if k != "mean_image"},
    }


def export(loaded: LoadedModel, fmt: str, out: str | Path, check_images: torch.Tensor | None = None) -> dict:
    """Write ``out`` in ``fmt``; for ONNX and TorchScript, compare its logits with PyTorch's on
    ``check_images`` (uint8 [B, S, S, C]) and return the largest absolute difference."""
    if fmt not in FORMATS:
        raise AlexNetError(f"unknown export format {fmt!r}; choose {', '.join(FORMATS)}")
    out = Path(out)
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
    with reporting_write_errors(out):
        if fmt == "safetensors":
            st = _require("safetensors.torch", "export")
            tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
            if loaded._state["normalization"]["kind"] == "mean_image":
                tensors[MEAN_IMAGE_KEY] = loaded._state["normalization"]["mean_image"].float().contiguous()
            st.save_file(tensors, str(out), metadata={META_KEY: json.dumps(metadata(loaded))})
            return report
        if fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer notes on shape checks, fixed for this input size
                traced = torch.jit.trace(model, x[:1])
            traced.save(str(out))
            with warnings.catch_warnings():
                warnings.simplefilter(
                    "ignore", FutureWarning
                )  # jit.load is deprecated; the format is not gone
                got = torch.jit.load(str(out))(x).detach().numpy()
        else:
            _require("onnx", "export")
            ort = _require("onnxruntime", "export")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x[:1],), str(out), input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                                  dynamo=False)  # fmt: skip
            session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = session.run(None, {"images": x.numpy()})[0]
    report["max_abs_logit_difference"] = float(np.abs(got - expected).max())
    return report


def read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict, dict]:
    """(state_dict without our extra tensors, our metadata) of an exported safetensors file;
    ``tensors=False`` reads the metadata alone."""
    st = _require("safetensors", "export")
    with st.safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        keys = [k for k in f.keys() if not k.startswith("_alexnet.")] if tensors else []  # noqa: SIM118
        state = {k: f.get_tensor(k) for k in keys}
    return state, meta
