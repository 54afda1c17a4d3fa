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
