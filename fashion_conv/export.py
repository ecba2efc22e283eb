"""``python -m fashion_conv.export``: a trained backbone as one file that runs without fashion_conv, checked before it is kept.

    python -m fashion_conv.export --checkpoint lightning_logs/cnn/version_0/checkpoints/best.ckpt -o model.pt2
    python -m fashion_conv.export --weights lightning_logs/cnn/version_0/model.pth --backbone cnn --to onnx -o model.onnx

``program`` (default): a ``torch.export`` program, the format PyTorch recommends (``torch.export.load(path).module()``).
``onnx``: ONNX written by ``torch.onnx.export(dynamo=True)``, for onnxruntime and other runtimes. Both take any batch
size. Before a file is kept, it and the PyTorch model classify the test set (``--check-on``): the logits must agree
within 1e-4 and every predicted class must be the same; otherwise nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fashion_conv.models.weights import add_model_arguments, load_model
from fashion_conv.predict import read_input
from fashion_conv.utils import quiet
from fashion_conv.utils.atomic import atomic_path
from fashion_conv.utils.errors import FashionConvError

LOGIT_TOLERANCE = 1e-4  # largest |exported - PyTorch| logit accepted; float32 reordering gives ~1e-6 here
TEST_CSV = Path("data/processed/fashion-mnist-test.csv")
INPUT_HELP = (
    "The exported model takes a float32 tensor (B, 1, 28, 28) named 'images' with pixels in [0, 1] (byte value / 255; "
    "a light object on black, as in Fashion-MNIST, any batch size B) and returns logits (B, 10) named 'logits', classes "
    "in the order of fashion_conv.CLASS_NAMES (0 T-shirt/top ... 9 Ankle boot); softmax gives probabilities. No flip "
    "TTA: average the logits of x and x.flip(-1) for it. python -m fashion_conv.predict turns photos into such tensors."
)


def _example_input(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def _batch_dim() -> tuple:
    return ({0: torch.export.Dim("batch", min=1)},)  # forward(x): dimension 0 of its one argument is free


def write_program(backbone: nn.Module, path: Path) -> None:
    program = torch.export.export(backbone, (_example_input(),), dynamic_shapes=_batch_dim())
    with open(path, "wb") as f:  # a file object: torch.export wants a .pt2 name otherwise
        torch.export.save(program, f)


def load_program(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    with open(path, "rb") as f:
        return torch.export.load(f).module()


def write_onnx(backbone: nn.Module, path: Path) -> None:
    onnx_program = torch.onnx.export(
        backbone,
        (_example_input(),),
        dynamo=True,
        dynamic_shapes=_batch_dim(),
        input_names=["images"],
        output_names=["logits"],
        verbose=False,  # no progress lines on the console
    )
    onnx_program.save(str(path))


def load_onnx(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    from fashion_conv.models.runtime import OnnxBackbone

    return OnnxBackbone(path)


FORMATS = {"program": (write_program, load_program), "onnx": (write_onnx, load_onnx)}


@torch.inference_mode()
def compare(reference: Callable, exported: Callable, x: torch.Tensor, labels=None, batch_size: int = 1000) -> dict:
    """How far the exported model's logits are from the reference's on images ``x`` (N, 1, 28, 28), and their classes."""
    want = torch.cat([reference(chunk) for chunk in x.split(batch_size)])
    got = torch.cat([exported(chunk) for chunk in x.split(batch_size)])
    report = {
        "images": len(x),
        "max_abs_diff": float((got - want).abs().max()),
        "same_class": int((got.argmax(1) == want.argmax(1)).sum()),
    }
    if labels is not None:
        report["accuracy"] = float((got.argmax(1) == torch.as_tensor(labels).long()).float().mean())
    return report


def export(backbone: nn.Module, path: str | Path, to: str, x: torch.Tensor, labels=None) -> dict:
    """Write ``backbone`` (eval, CPU) in format ``to``, reload it and compare it on ``x``; keep it only if it agrees.

    The file is written beside ``path`` and renamed into place after the check, so a failed check leaves nothing.
    """
    write, load = FORMATS[to]
    backbone = backbone.cpu().eval()
    with atomic_path(path) as tmp:
        write(backbone, tmp)
        report = compare(backbone, load(tmp), x, labels)
        if report["max_abs_diff"] > LOGIT_TOLERANCE or report["same_class"] != report["images"]:
            raise FashionConvError(
                f"{path}: not written: the {to} export differs from the PyTorch model ({describe(report)})"
            )
    return report


def describe(report: dict) -> str:
    text = (
        f"{report['images']:,} images, max |logit difference| {report['max_abs_diff']:.1e} (limit {LOGIT_TOLERANCE:.0e}), "
        f"same class for {report['same_class']:,} of {report['images']:,}"
    )
    return text + (f", accuracy {report['accuracy']:.4f}" if "accuracy" in report else "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fashion_conv.export", description=__doc__.splitlines()[0].split(": ", 1)[1], epilog=INPUT_HELP
    )
    add_model_arguments(parser)
    parser.add_argument("--to", choices=tuple(FORMATS), default="program", help="format: program (.pt2, default) or onnx")
    parser.add_argument("-o", "--output", help="file to write (default model.pt2, or model.onnx with --to onnx)")
    parser.add_argument(
        "--check-on", default=str(TEST_CSV), metavar="CSV", help=f"images the export is checked on (default {TEST_CSV})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output or ("model.onnx" if args.to == "onnx" else "model.pt2"))
    quiet.exporting()
    try:
        model = load_model(args.checkpoint, args.weights, args.backbone)
        x, labels, _ = read_input(Path(args.check_on), invert="no")
        report = export(model, output, args.to, x, labels)
    except FashionConvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # --to onnx without the [serve] extra
        needs = exc.name or "onnx and onnxscript"
        print(f"error: --to {args.to} needs {needs}: pip install 'fashion_conv[serve]'", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {output}: cannot write it ({exc.strerror or type(exc).__name__})", file=sys.stderr)
        return 1
    print(f"checked on {args.check_on}: {describe(report)}")
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {args.to})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
