"""The ``alexnet`` command: parses arguments, calls one library function, turns our errors into exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ._version import __version__
from .config import keys_table, preset_names
from .errors import AlexNetError, Interrupted


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import MODEL_DESCRIPTIONS

    for name, text in MODEL_DESCRIPTIONS.items():
        print(f"{name:<12} {text}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from .models import build_model, summarize

    switches = {"num_classes": args.num_classes} if args.num_classes else {}
    model = build_model(args.model, **switches)
    print(summarize(model, args.input_size).format())
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .data import prepare

    summary = prepare(
        args.src, args.out, size=args.size, workers=args.workers, force=args.force, progress=not args.quiet,
        image_format=args.format, quality=args.quality,
    )  # fmt: skip
    print(summary.line())
    return 0


def _parse_sets(items: list[str]) -> dict:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AlexNetError(f"--set takes key=value (e.g. --set optim.lr=0.02), got {item!r}")
        values[key.strip()] = value
    return values


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import keys_table, preset
    from .loading import resolve_run
    from .train import fit, resume_config

    if args.list_keys:
        print("\n".join(keys_table(preset(args.preset or "paper"))))
        return 0
    sets = _parse_sets(args.set)
    flags = {
        "model.weights": args.weights,
        "data.source": args.data,
        "train.epochs": args.epochs,
        "train.batch_size": args.batch_size,
        "optim.lr": args.lr,
        "train.out": args.out,
        "train.device": args.device,
        "train.precision": args.precision,
        "train.channels_last": args.channels_last,
        "train.compile": args.compile or None,
        "train.seed": args.seed,
        "train.two_devices": args.two_devices,
    }
    sets.update({k: v for k, v in flags.items() if v is not None})
    if args.resume and args.out is None:
        raise AlexNetError("--resume continues the run in --out RUN_DIR; give --out")
    if args.resume and args.preset is None and args.config is None:
        config = resume_config(args.out, sets)  # continue the run as it was
    else:
        if args.preset is None and args.config is None and not args.print_config:
            print("alexnet: no --preset given: training with the paper recipe (the 2012 network at 227×227, "
                  "§5's SGD, 90 epochs); --preset NAME picks another (alexnet train --help lists them)",
                  file=sys.stderr)  # fmt: skip
        config = resolve_run(args.preset or "paper", yaml_file=args.config, sets=sets)
    if args.print_config:
        import yaml

        from .config import to_dict

        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    result = fit(config, resume=args.resume)
    line = f"run {result.run_dir}: best validation top-1 error {result.best_val_top1_error:.2f} %"
    if result.best_epoch is not None:
        line += f" (epoch {result.best_epoch}, checkpoints/best.pt)"
    if result.final:
        final = result.final
        line += (
            f"; final model on {final['split']}: top-1 {final['top1_error']:.2f} % "
            f"top-5 {final['top5_error']:.2f} %"
        )
    if result.best:
        line += f"; best.pt on {result.final['split']}: top-1 {result.best['top1_error']:.2f} %"
    print(line)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate_checkpoint
    from .fileio import check_writable_target, write_atomic

    if args.json:
        check_writable_target(args.json)  # before the evaluation, not after it

    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        ten_crop=args.ten_crop,
        device=args.device,
        batch_size=args.batch_size,
    )
    view = "ten-crop" if args.ten_crop else "centre crop"
    print(
        f"{result['checkpoint']} (epoch {result['epoch']}) on {result['split']} "
        f"({result['count']} images, {view}): "
        f"top-1 error {result['top1_error']:.2f} %, top-5 error {result['top5_error']:.2f} %, "
        f"loss {result['loss']:.4f}"
    )
    width = max(len(c) for c in result["classes"])
    counts = [sum(row) for row in result["confusion"]]
    print(f"  {'class':<{width}}  images  accuracy")
    for name, n, accuracy in zip(result["classes"], counts, result["per_class"], strict=True):
        shown = "      —" if accuracy is None else f"{accuracy:7.2f} %"
        print(f"  {name:<{width}}  {n:6d}  {shown}")
    if args.json:
        keys = (
            "top1_error",
            "top5_error",
            "loss",
            "per_class",
            "confusion",
            "count",
            "split",
            "ten_crop",
            "classes",
            "checkpoint",
            "epoch",
        )
        saved = {k: result[k] for k in keys}
        saved["per_class"] = [
            {"class": name, "images": n, "accuracy": accuracy}
            for name, n, accuracy in zip(result["classes"], counts, result["per_class"], strict=True)
        ]
        write_atomic(args.json, json.dumps(saved, indent=1))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from .data import open_data
    from .data.decode import image_files
    from .fileio import check_writable_target, write_atomic
    from .loading import load_model

    if args.json:
        check_writable_target(args.json)
    if bool(args.images) == bool(args.data):
        raise AlexNetError(
            "give image files or folders, or --data SRC (its images), not both and not neither"
        )
    loaded = load_model(args.checkpoint, device=args.device)
    results, skipped = [], []
    if args.data:
        store = open_data(args.data)
        split = store.split(args.split or ("test" if "test" in store.splits else next(iter(store.splits))))
        print(f"{loaded.checkpoint} (epoch {loaded.epoch}), {args.data} {split.name}", file=sys.stderr)
        results = loaded.predict_split(split, store.classes, limit=args.limit, topk=args.topk,
                                       ten_crop=args.ten_crop, batch_size=args.batch_size)  # fmt: skip
        files = results
    else:
        files = image_files(args.images)
        print(f"{loaded.checkpoint} (epoch {loaded.epoch}), {len(files)} image(s)", file=sys.stderr)
        with tqdm(total=len(files), unit="img", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
            for start in range(0, len(files), args.batch_size):
                chunk = files[start : start + args.batch_size]
                predictions, bad = loaded.predict(chunk, topk=args.topk, ten_crop=args.ten_crop)
                results += predictions
                skipped += bad
                bar.update(len(chunk))
    for p in results:
        truth = f" [{p.truth}]" if p.truth else ""
        print(f"{p.path}{truth}: " + ", ".join(f"{name} {100 * prob:.1f} %" for name, prob in p.top))
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if skipped:
        print(f"{len(skipped)} of {len(files)} file(s) skipped", file=sys.stderr)
    if args.json:
        rows = [
            {"path": p.path, "truth": p.truth, "top": [{"class": c, "probability": q} for c, q in p.top]}
            for p in results
        ]
        skipped_rows = [{"path": path, "reason": reason} for path, reason in skipped]
        write_atomic(args.json, json.dumps({"predictions": rows, "skipped": skipped_rows}, indent=1))
    if not results:
        raise AlexNetError(f"none of the {len(files)} file(s) could be decoded")
    if args.figure:
        from .analysis.reports import prediction_figure

        prediction_figure(loaded, results, args.figure, store.split(split.name) if args.data else None)
        print(f"figure: {args.figure}", file=sys.stderr)
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .analysis.reports import split_features
    from .data import open_data
    from .loading import load_model

    loaded = load_model(args.checkpoint, device=args.device)
    store = open_data(args.data)
    with tqdm(unit="img", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        features = split_features(loaded, store, args.split, args.layer, args.out, progress=bar.update)
    n, d = features.values.shape
    size = n * d * 4 / 1e6
    print(f"{features.path}: {args.layer} of {n:,} {args.split} images, {d:,} floats each ({size:,.1f} MB)")
    return 0


def _cmd_neighbors(args: argparse.Namespace) -> int:
    import json

    from .analysis.reports import neighbours
    from .loading import load_model

    loaded = load_model(args.checkpoint, device=args.device)
    report = neighbours(loaded, args.data, args.query, k=args.k, layer=args.layer, figure=args.figure)
    for row in report["queries"][: args.show]:
        found = ", ".join(
            f"{c} ({d:.1f})" for c, d in zip(row["neighbour_labels"], row["distances"], strict=True)
        )
        label = f" [{row['label']}]" if row["label"] else ""
        print(f"{row['query']}{label}: {found}")
    if report["same_class_fraction"] is not None:
        print(f"{100 * report['same_class_fraction']:.1f} % of the {report['k']} nearest {report['base']} "
              f"share their query's class ({len(report['queries'])} queries, {report['layer']})")  # fmt: skip
    if args.json:
        from .fileio import write_atomic

        write_atomic(args.json, json.dumps(report))
    return 0


def _cmd_filters(args: argparse.Namespace) -> int:
    from .analysis.reports import filters
    from .loading import load_model

    loaded = load_model(args.checkpoint, device="cpu")
    numbers = filters(loaded, args.out)
    print(f"{args.out}: {numbers['kernels']} conv1 kernels {'×'.join(map(str, numbers['kernel_size']))}, "
          f"{numbers['towers']} tower(s)")  # fmt: skip
    for i, score in enumerate(numbers["tower_colour_scores"], 1):
        print(f"  tower {i}: mean colour score {score:.3f} (0: grey kernels, 1: no luminance)")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .analysis.reports import plot_runs

    numbers = plot_runs(args.runs, args.out)
    print(f"{args.out}: curves of {', '.join(numbers['runs'])}")
    if "confusion" in numbers:
        print(f"{numbers['confusion']['png']}: confusion matrix of {args.runs[0]}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .analysis.export import export
    from .data import open_data
    from .loading import load_model

    loaded = load_model(args.checkpoint, device="cpu")
    check = None
    if args.data:
        store = open_data(args.data)
        split = store.split("test" if "test" in store.splits else next(iter(store.splits)))
        check = torch.from_numpy(np.array(split.images[: args.check_images]))
    report = export(loaded, args.format, args.out, check)
    line = f"{args.out}: {args.format} export of {loaded.checkpoint} (epoch {loaded.epoch})"
    if "max_abs_logit_difference" in report:
        images = f"images of {args.data}" if args.data else "random images"
        diff = report["max_abs_logit_difference"]
        line += f"; max |logit difference| against PyTorch on {report['checked_images']} {images}: {diff:.2e}"
    print(line)
    return 0


def field_help(key: str) -> str:
    """A config field's choices or range and its use, as config.py declares them."""
    line = next(line for line in keys_table() if line.startswith(key + " "))
    return line.split("  ", 1)[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet (NIPS 2012): models, data, training."
    )
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model names build_model accepts")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("summary", help="per-layer output shapes, parameters and multiply-adds of a model")
    p.add_argument("model", help="a model name (see `alexnet models`)")
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="side of the probe input in pixels (default: the size the model is built for)",
    )
    p.add_argument("--num-classes", type=int, default=None, help="classes of the last layer")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("prepare", help="decode, resize and crop a data set once into a memory-mappable store")
    p.add_argument(
        "src",
        help="an ImageFolder root (train/, val/ or test/ inside) or cifar10, cifar100, mnist, fashion-mnist",
    )
    p.add_argument("out", help="the store folder to write")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="short side and crop in pixels (default 256, or the images' own size if smaller)",
    )
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--force", action="store_true", help="rebuild a store that already exists at OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                   help="raw uint8 pixels (default), or each image JPEG-encoded once")  # fmt: skip
    p.add_argument("--quality", type=int, default=90, help="JPEG quality for --format jpeg (default 90)")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("train", help="train a model with a named recipe")
    p.add_argument(
        "--preset",
        default=None,
        help=f"the recipe: {', '.join(preset_names())} (paper unless --resume or --config)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="W",
        help="start from weights, with a new last layer for the data's classes: DEFAULT (torchvision's "
        "ImageNet AlexNet), a torchvision weights name, a .pth, a run directory or checkpoint, a "
        ".safetensors export; none: from scratch (model.weights)",
    )
    p.add_argument("--list-keys", action="store_true", help="every config key with its value, rule and use")
    p.add_argument(
        "--data", default=None, help="a prepared store, an ImageFolder root or a torchvision set name"
    )
    p.add_argument("--epochs", default=None, help="epochs to train in all (a resume may raise it)")
    p.add_argument("--batch-size", default=None, help="global batch size, split over torchrun's processes")
    p.add_argument("--lr", default=None, help="base learning rate (optim.lr)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, e.g. --set optim.name=paper_sgd (repeatable)",
    )
    p.add_argument("--config", default=None, help="a YAML file of config fields (applied before --set)")
    p.add_argument("--out", default=None, help="run directory (default runs/<preset>-<date>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--device", default=None, help=field_help("train.device"))
    p.add_argument("--precision", default=None, help=field_help("train.precision"))
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default on)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("--seed", default=None, help="seed of the weights, the order and the augmentation")
    p.add_argument(
        "--two-devices", default=None, metavar="A,B", help="the paper's two-tower split, e.g. cuda:0,cuda:1"
    )
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 error, per-class accuracy and confusion of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument(
        "--data", required=True, help="a prepared store, an ImageFolder root or a torchvision set name"
    )
    p.add_argument("--split", default=None, help="split to evaluate (default test, else val)")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of ten crops (§4.1)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="top-k classes of image files with a trained model")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files and folders of them")
    p.add_argument(
        "--data", default=None, help="instead of files: the images of a data set (with their labels)"
    )
    p.add_argument("--split", default=None, help="with --data: the split (default test, else the first)")
    p.add_argument("--limit", type=int, default=None, help="with --data: this many images, evenly spaced")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of ten crops (§4.1)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the predictions as JSON")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--figure", default=None, metavar="OUT.png", help="Fig. 4 (left): images with top-5 bars")
    p.set_defaults(func=_cmd_predict)

    data_help = "a prepared store, an ImageFolder root or a torchvision set name (the model's classes)"
    p = sub.add_parser("features", help="a layer's activations (fc7: §6.1) for a whole split, memory-mapped")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--split", default="train", help="split to extract (default train)")
    p.add_argument("--layer", default="fc7", help="conv1..conv5, fc6, fc7 (after ReLU) or fc8 (logits)")
    p.add_argument(
        "--out", default=None, help="the .npy to write (default RUN/features/SPLIT-LAYER-epochE.npy)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_features)

    p = sub.add_parser("neighbors", help="Fig. 4 (right): the training images nearest each query in fc7")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--query", required=True, nargs="+", help="a split name (e.g. test) or image files")
    p.add_argument("--k", type=int, default=6, help="neighbours per query (default 6)")
    p.add_argument("--layer", default="fc7", help="the feature layer (default fc7)")
    p.add_argument("--figure", default=None, metavar="OUT.png", help="queries and their neighbours")
    p.add_argument("--json", default=None, metavar="OUT", help="write every query's neighbours as JSON")
    p.add_argument("--show", type=int, default=10, help="queries to print (default 10)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.set_defaults(func=_cmd_neighbors)

    p = sub.add_parser("filters", help="Fig. 3: the conv1 kernels per tower and their colour scores")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument("--out", required=True, metavar="OUT.png", help="the grid to write (numbers in OUT.json)")
    p.set_defaults(func=_cmd_filters)

    p = sub.add_parser("plot", help="loss, errors and learning rate of runs against epochs; confusion matrix")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of alexnet train")
    p.add_argument("--out", default="curves.png", metavar="OUT.png", help="curves (default curves.png)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("export", help="ONNX, TorchScript or safetensors, checked against PyTorch")
    p.add_argument("checkpoint", help="a checkpoint file, or a run directory (its best.pt, else last.pt)")
    p.add_argument(
        "--format",
        required=True,
        choices=("onnx", "torchscript", "safetensors"),
        help="onnx (checked with onnxruntime), torchscript, or safetensors (weights + how to build and feed "
        "the model; build_model and --weights read it back)",
    )
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--data", default=None, help="real images to check the export on (its test split)")
    p.add_argument("--check-images", type=int, default=16, help="how many (default 16)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("experiment", help="a study of the paper's claims: variants × seeds → report.md")
    p.add_argument("name", nargs="?", help="the experiment (--list names them)")
    p.add_argument("--list", action="store_true", help="name the experiments, one line each")
    p.add_argument("--data", help="a store, an ImageFolder root or a torchvision set name")
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: the experiment's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the experiment's)")
    p.add_argument("--out", default=None, help="where runs, results.json and report.md go "
                   "(default runs/experiment-NAME); run again to resume")  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run"
    )
    p.add_argument("--param", choices=("epochs", "batch_size", "lr"), help="sweep: what to vary")
    p.add_argument("--values", help="sweep: comma-separated values, e.g. 0.001,0.01,0.1")
    p.add_argument("--scale-lr", action="store_true", help="sweep of batch_size: lr = 0.01 × batch / 64")
    p.add_argument(
        "--models", help="compare: torchvision model names (default alexnet,googlenet,vgg11,resnet18)"
    )
    p.add_argument("--input-size", type=int, help="compare: input side in pixels (default 224)")
    p.add_argument("--per-class", type=int, help="transfer: training images per target class (default 100)")
    p.add_argument("--source-epochs", type=int, help="transfer: epochs of the source model (default 15)")
    p.add_argument(
        "--launcher",
        default="sequential",
        help="how the runs are dispatched: sequential (one after another here, the default), local "
        "(--jobs processes), ray (tasks on a Ray cluster) or slurm (a job array, via submitit)",
    )
    p.add_argument("--jobs", type=int, default=1, help="local: runs at a time (the CPU threads split)")
    p.add_argument("--ray-address", help="ray: the cluster to join (default: a Ray instance here)")
    p.add_argument("--partition", help="slurm: the partition to submit to")
    p.add_argument("--time-min", type=int, default=120, help="slurm: each run's time limit, minutes")
    p.add_argument("--gpus-per-run", type=int, default=0, help="ray and slurm: GPUs per run (default 0)")
    p.add_argument("--cpus-per-run", type=int, help="ray and slurm: CPUs per run (default: a node's)")
    p.set_defaults(func=_cmd_experiment)
    return parser


def _cmd_experiment(args: argparse.Namespace) -> int:
    import shlex

    from .experiments import describe, experiment, run_experiment
    from .experiments.launchers import Launch

    if args.list:
        print("\n".join(describe()))
        return 0
    if args.name is None:
        raise AlexNetError("name an experiment (alexnet experiment --list shows them)")
    options = {"param": args.param, "values": args.values, "scale_lr": args.scale_lr, "models": args.models,
               "input_size": args.input_size, "per_class": args.per_class,
               "source_epochs": args.source_epochs}  # fmt: skip
    study = experiment(args.name, **options)  # an unknown name fails here, before --data is asked for
    if args.data is None:
        raise AlexNetError(
            f"experiment {args.name} needs --data (a store, an ImageFolder root or a set name)"
        )
    out = args.out or f"runs/experiment-{args.name}"
    command = "alexnet " + " ".join(shlex.quote(a) for a in args.argv)
    how = Launch(args.launcher, jobs=args.jobs, address=args.ray_address, partition=args.partition,
                 time_min=args.time_min, gpus_per_run=args.gpus_per_run,
                 cpus_per_run=args.cpus_per_run)  # fmt: skip
    results = run_experiment(study, args.data, out, seeds=args.seeds, epochs=args.epochs,
                             sets=_parse_sets(args.set), command=command, how=how)  # fmt: skip
    print(f"{out}/report.md: {len(results['runs'])} runs of {len(results['variants'])} variants")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as typed, for reports
    try:
        return args.func(args)
    except Interrupted as exc:  # a checkpoint was saved: say where, exit as the signal would
        print(f"alexnet: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except AlexNetError as exc:
        print(f"alexnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
