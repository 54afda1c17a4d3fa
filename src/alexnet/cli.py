"""The ``alexnet`` command: parses arguments, calls one library function, turns our errors into exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import AlexNetError


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
        args.src, args.out, size=args.size, workers=args.workers, force=args.force, progress=not args.quiet
    )
    print(summary.line())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alexnet", description="AlexNet (NIPS 2012): models, data, training."
    )
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
    p.set_defaults(func=_cmd_prepare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AlexNetError as exc:
        print(f"alexnet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
