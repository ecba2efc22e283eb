"""``python -m fashion_conv.export``: a trained backbone as one file that loads with torch alone, no fashion_conv.

    python -m fashion_conv.export --weights lightning_logs/cnn/version_0/model.pth --backbone cnn -o model.ts.pt
    net = torch.jit.load("model.ts.pt")   # (B, 1, 28, 28) float in [0, 1] -> logits (B, 10)

TorchScript by default; ``--to program`` writes a ``torch.export`` program (``.pt2``, loads with
``torch.export.load(path).module()``), the format PyTorch recommends now that ``torch.jit`` is deprecated.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from fashion_conv.utils.atomic import atomic_path
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.models.weights import add_model_arguments, load_model


INPUT_HELP = (
    "The exported model takes a float32 tensor (B, 1, 28, 28) with pixels in [0, 1] (byte value / 255; a light "
    "object on black, as in Fashion-MNIST, any batch size B) and returns logits (B, 10), classes in the order of "
    "fashion_conv.CLASS_NAMES (0 T-shirt/top ... 9 Ankle boot); softmax gives probabilities. No flip TTA: average "
    "the logits of x and x.flip(-1) for it. python -m fashion_conv.predict turns photos into such tensors."
)


def _example_input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def export_torchscript(backbone: nn.Module, path: str | Path) -> Path:
    """Trace ``backbone`` (eval mode, CPU) and save it as TorchScript, atomically; any batch size works."""
    backbone = backbone.cpu().eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        traced = torch.jit.trace(backbone, _example_input())
        with atomic_path(path) as tmp:
            torch.jit.save(traced, str(tmp))
    return Path(path)


def export_program(backbone: nn.Module, path: str | Path) -> Path:
    """Save ``backbone`` as a ``torch.export`` program with a free batch dimension, atomically."""
    backbone = backbone.cpu().eval()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(backbone, (_example_input(),), dynamic_shapes=({0: batch},))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: torch.export wants a .pt2 name otherwise
        torch.export.save(program, f)
    return Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_conv.export", description=__doc__.splitlines()[0].split(": ", 1)[1], epilog=INPUT_HELP
    )
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", required=True, help="file to write, e.g. model.ts.pt (or model.pt2 with --to program)")
    parser.add_argument("--to", choices=("torchscript", "program"), default="torchscript", help="format (default torchscript)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model = load_model(args.checkpoint, args.weights, args.backbone)
        export = export_torchscript if args.to == "torchscript" else export_program
        path = export(model, args.output)
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {args.output}: cannot write it ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
