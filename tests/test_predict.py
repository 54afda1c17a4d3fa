"""load_model and predict: a trained model back in Python, and its predictions on image files."""

import json
import shutil

import numpy as np
import pytest
import torch

from alexnet import AlexNetError, load_model
from alexnet.cli import main
from alexnet.data import open_store, prepare


@pytest.fixture
def trained(small_run):
    return small_run


def test_predict_gives_the_probabilities_of_the_evaluation_forward_pass(trained):
    loaded = load_model(trained / "run", device="cpu")
    assert loaded.checkpoint.name == "best.pt" and loaded.image_size == 32 and len(loaded.classes) == 10
    files = sorted((trained / "src" / "test").rglob("*.jpg"))
    predictions, skipped = loaded.predict(files, topk=3)
    assert skipped == [] and [p.path for p in predictions] == [str(f) for f in files]
    # the same images from the store (decoded by prepare), through the checkpoint's own transform
    test = open_store(trained / "store").split("test")
    with torch.no_grad():
        x = loaded.transform()(torch.from_numpy(np.array(test.images)))
        probs = loaded.model(x).softmax(1)
    for p, row in zip(predictions, probs, strict=True):
        values, indices = row.topk(3)
        assert [c for c, _ in p.top] == [loaded.classes[i] for i in indices.tolist()]
        assert [q for _, q in p.top] == pytest.approx(values.tolist(), abs=1e-6)
    tens, _ = loaded.predict(files[:2], topk=10, ten_crop=True)
    assert sum(q for _, q in tens[0].top) == pytest.approx(1.0, abs=1e-5)


def test_predict_command_skips_broken_files_and_writes_json(trained, tmp_path, capsys):
    folder = tmp_path / "photos"
    shutil.copytree(trained / "src" / "test" / "cat", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "p.json"
    assert main(["predict", str(trained / "run"), str(folder), "--topk", "2", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 5 and all(line.count(" %") == 2 for line in lines)
    assert f"skipped {folder / 'broken.jpg'}: not an image Pillow can identify" in captured.err
    assert "1 of 6 file(s) skipped" in captured.err
    saved = json.loads(out.read_text())
    assert len(saved["predictions"]) == 5 and saved["skipped"][0]["path"].endswith("broken.jpg")
    assert main(["predict", str(trained / "run"), str(tmp_path / "nowhere.jpg")]) == 2
    assert "nowhere.jpg does not exist" in capsys.readouterr().err
    with pytest.raises(AlexNetError, match="holds no checkpoint"):
        load_model(tmp_path)


def _closed_network(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download fails at once


def test_torchvision_weights_by_name_from_the_torch_home_cache(tmp_path, monkeypatch):
    import torchvision
    from conftest import IMAGENET_SAMPLE, require
    from PIL import Image

    from alexnet import build_model

    _closed_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(
        AlexNetError, match=r"put alexnet-owt-7be5be79\.pth \(from https://.*\) at .*torch/hub/checkpoints"
    ):
        build_model("torchvision", weights="DEFAULT")
    assert not list((tmp_path / "torch").rglob("*.pth"))
    # the file a user downloaded once, in the cache torchvision itself uses
    reference = torchvision.models.alexnet().eval()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cache / "alexnet-owt-7be5be79.pth")
    model = build_model("torchvision", weights="DEFAULT").eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
    # predict with torchvision's class names and preprocessing: the same probabilities as
    # torchvision's own weights.transforms() pipeline on the same photograph
    photo = next(iter(sorted(require(IMAGENET_SAMPLE).rglob("*.JPEG"))))
    png = tmp_path / "photo.png"  # a PNG: JPEG draft decoding in prepare would change the pixels
    Image.open(photo).convert("RGB").save(png)
    for source in ("DEFAULT", cache / "alexnet-owt-7be5be79.pth"):
        loaded = load_model(source, device="cpu")
        predictions, _ = loaded.predict([png], topk=5)
        preprocess = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
        with torch.no_grad():
            probs = reference(preprocess(Image.open(png))[None]).softmax(1)[0]
        values, indices = probs.topk(5)
        names = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
        assert [c for c, _ in predictions[0].top] == [names[i] for i in indices.tolist()]
        assert [p for _, p in predictions[0].top] == pytest.approx(values.tolist(), abs=2e-3)


@pytest.mark.slow  # ~20 s: prepares the 1,000-photo ImageNet sample (weights by name: the test above)
def test_evaluate_takes_torchvision_weights_by_name(tmp_path, monkeypatch, capsys):
    import torchvision
    from conftest import IMAGENET_SAMPLE, require
    from torchvision.transforms.v2 import functional as TF

    from alexnet.evaluate import evaluate_checkpoint

    _closed_network(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    reference = torchvision.models.alexnet().eval()
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / "alexnet-owt-7be5be79.pth")
    store = tmp_path / "store"
    prepare(require(IMAGENET_SAMPLE), store, workers=2, progress=False)  # 1,000 photos, torchvision's names
    result = evaluate_checkpoint("DEFAULT", store, device="cpu")
    # the same numbers from torchvision's own functions on the stored 256×256 images
    val = open_store(store).split("val")
    x = torch.from_numpy(np.array(val.images)).permute(0, 3, 1, 2)
    x = TF.normalize(
        TF.center_crop(x, [224, 224]).float() / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    )
    with torch.no_grad():
        top1 = torch.cat([reference(b).argmax(1) for b in x.split(100)])
    expected = 100.0 * float((top1 != torch.from_numpy(val.labels)).double().mean())
    assert result["count"] == 1000 and result["split"] == "val"
    assert result["top1_error"] == pytest.approx(expected, abs=0.1 + 1e-9)  # at most one near-tie flip
