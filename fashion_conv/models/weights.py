"""Read ``model.pth`` files and Lightning checkpoints safely, and evaluate with flip TTA; torch only (no Lightning).

Every file loads with ``torch.load(weights_only=True)``: tensors and plain containers, never pickled code. A
checkpoint builds only a registered backbone, or a class path that the caller names itself (a flag or an
argument), never one taken from the file: importing a module runs its code. Its ``backbone_kwargs`` are
checked (names, types, size) before anything is allocated.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
from torch import nn

from fashion_conv.models.backbones import build_backbone, list_backbones
from fashion_conv.utils.errors import FashionConvError


def read_weights_file(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU, with errors a person can act on."""
    path = Path(path)
    if not path.exists():
        raise FashionConvError(f"{path}: no such file")
    if path.is_dir():
        raise FashionConvError(f"{path}: is a folder, expected a .ckpt or .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise FashionConvError(f"{path}: not readable (permission denied)") from None
    except Exception as exc:  # torch reports bad files with many exception types
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        if blocked:
            raise FashionConvError(
                f"{path}: refused: loading it would run Python code ({blocked.group(1)}), so it is not plain weights; "
                "fashion_conv loads tensors only (torch.load weights_only=True)"
            ) from None
        raise FashionConvError(f"{path}: not a PyTorch weights file, or a damaged one ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise FashionConvError(f"{path}: holds a {type(state).__name__}, expected a state dict or a Lightning checkpoint")
    return state


def into_backbone(state: dict, name: str, kwargs: dict, path: str | Path) -> nn.Module:
    """Build backbone ``name`` and load ``state`` into it, in eval mode; a mismatch is one clear error."""
    try:
        model = build_backbone(name, **kwargs)
    except (ValueError, TypeError) as exc:
        raise FashionConvError(f"{path}: cannot build backbone {name!r}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError:
        missing = len(set(model.state_dict()) - set(state))
        unexpected = len(set(state) - set(model.state_dict()))
        detail = f"{missing} tensors missing, {unexpected} unexpected" if missing or unexpected else "tensor shapes differ"
        raise FashionConvError(
            f"{path}: weights do not fit backbone {name!r} ({detail}); was it trained with another backbone or options?"
        ) from None
    return model.eval()


def load_backbone(path: str | Path, name: str, **kwargs) -> nn.Module:
    """Rebuild backbone ``name`` (the caller's choice) from a ``model.pth`` state dict, in eval mode, on CPU."""
    return into_backbone(read_weights_file(path), name, kwargs, path)


def checkpoint_backbone(ckpt: dict, path: str | Path, trusted: str | None = None) -> tuple[str, dict]:
    """The backbone name and kwargs that a FashionClassifier checkpoint names, checked before anything is built.

    ``trusted`` is a class path the caller named (``--backbone``, an argument): only then may a backbone that
    is not registered be imported. The kwargs must be a dict of plain values; their sizes are checked when
    the backbone is built (``build_backbone`` builds registered ones on the meta device first).
    """
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(ckpt.get("state_dict"), dict) or not isinstance(hparams, dict) or not isinstance(hparams.get("backbone"), str):
        hint = f"; a model.pth goes with --weights {path} --backbone NAME" if ckpt and "state_dict" not in ckpt else ""
        raise FashionConvError(f"{path}: not a FashionClassifier checkpoint (no backbone in its hyper_parameters){hint}")
    if "_instantiator" in hparams and not str(hparams["_instantiator"]).startswith("lightning.pytorch.cli."):
        raise FashionConvError(f"{path}: refused: its hyper_parameters name code to run ({hparams['_instantiator']!r})")
    name, kwargs = hparams["backbone"], hparams.get("backbone_kwargs") or {}
    if trusted is not None and trusted != name:
        raise FashionConvError(f"{path}: holds a {name!r} backbone, but --backbone says {trusted!r}")
    if name not in list_backbones() and trusted != name:
        raise FashionConvError(
            f"{path}: its backbone is the class {name!r}; importing it runs that module's code, "
            f"so confirm with --backbone {name} (or backbone={name!r} in load_from_checkpoint)"
        )
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise FashionConvError(f"{path}: backbone_kwargs must be a dict of names to values, got {type(kwargs).__name__}")
    return name, kwargs


def load_model(checkpoint: str | Path | None = None, weights: str | Path | None = None, backbone: str | None = None) -> nn.Module:
    """The trained backbone in eval mode, from a Lightning checkpoint or from ``model.pth`` plus its backbone name.

    ``backbone`` with a checkpoint is a check (the checkpoint names its own backbone), and the consent to
    import a class path that the checkpoint names, since importing a module runs its code.
    """
    if (checkpoint is None) == (weights is None):
        raise FashionConvError("give a model: --checkpoint X.ckpt, or --weights model.pth with --backbone NAME")
    if weights is not None:
        if not backbone:
            raise FashionConvError(f"--weights {weights} needs --backbone NAME (one of {', '.join(list_backbones())})")
        state = read_weights_file(weights)
        if "state_dict" in state and "hyper_parameters" in state:
            raise FashionConvError(f"{weights}: is a Lightning checkpoint; pass it as --checkpoint {weights}")
        return into_backbone(state, backbone, {}, weights)
    ckpt = read_weights_file(checkpoint)
    name, kwargs = checkpoint_backbone(ckpt, checkpoint, trusted=backbone)
    prefix = "backbone."
    backbone_state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return into_backbone(backbone_state, name, kwargs, checkpoint)


def checkpoint_tta(checkpoint: str | Path | None) -> bool:
    """Whether a checkpoint was evaluated with flip test-time augmentation (``--model.tta_hflip``)."""
    if checkpoint is None:
        return False
    hparams = read_weights_file(checkpoint).get("hyper_parameters") or {}
    return bool(hparams.get("tta_hflip"))


def flip_tta(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits (B, classes) averaged over each image (B, 1, 28, 28) and its left-right mirror image."""
    return (model(x) + model(x.flip(-1))) / 2


def add_model_arguments(parser: argparse.ArgumentParser):
    """--checkpoint, or --weights with --backbone; shared by ``predict``, ``export`` and ``serve``. Returns the
    group of the two, where ``serve`` adds its third choice."""
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", metavar="CKPT", help="a Lightning checkpoint (.ckpt) of FashionClassifier")
    model.add_argument("--weights", metavar="PTH", help="a model.pth state dict (needs --backbone)")
    names = ", ".join(list_backbones())
    parser.add_argument("--backbone", help=f"backbone of --weights ({names}, or a class path); with --checkpoint, a check")
    return model
