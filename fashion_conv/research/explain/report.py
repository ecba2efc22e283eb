"""The explain report: for one or more trained backbones, write report.md, PNG figures and CSVs into a folder."""

from __future__ import annotations

import csv
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import nn

from fashion_conv.utils.atomic import atomic_path, atomic_write_text
from fashion_conv.models.backbones import count_parameters
from fashion_conv.data.csvio import CLASS_NAMES
from fashion_conv.research.explain import figures
from fashion_conv.research.explain.attributions import attribution_maps, completeness_gap, completeness_rows
from fashion_conv.research.explain.equivariance import equivariance_errors
from fashion_conv.research.explain.filters import first_layer_filters
from fashion_conv.research.explain.layers import block_outputs, feature_maps, layer_labels, spatial_layers
from fashion_conv.research.explain.mistakes import accuracy, confident_errors, confusion_pairs, predict_probs, worst_per_class
from fashion_conv.research.explain.tables import agreement_table, confusions_text, equivariance_table, ig_delta_table, models_table


@dataclass
class Explained:
    """One model to explain: its label in the report, the backbone (eval mode) and where it came from."""

    label: str
    model: nn.Module
    source: str
    probs: torch.Tensor | None = None  # (N, K) on the test images, filled in by the report


def one_per_class(labels: torch.Tensor) -> torch.Tensor:
    """Indices of the first image of each class present, in file order (10,): the fixed images every figure shows."""
    return torch.stack([torch.nonzero(labels == c)[0, 0] for c in torch.unique(labels).tolist()])


def save_figure(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def csv_text(rows: list[dict]) -> str:
    """Rows with the same keys -> CSV text: a header, floats to 6 significant digits, ``None`` as an empty cell."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def write_csv_rows(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, csv_text(rows))


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def write_report(models: list[Explained], images: torch.Tensor, labels: torch.Tensor, out: Path, command: str = "",
                 equivariance_images: int = 1000, errors_per_class: int = 3, steps: int = 256) -> Path:  # fmt: skip
    """Explain ``models`` on test ``images`` (N, 1, 28, 28) in [0, 1] with ``labels`` (N,); returns report.md's path."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    shown = one_per_class(labels)
    x, y = images[shown], labels[shown]
    md = ["# What the layers learned", ""]
    if command:
        md += ["Made by:", "", "```", command, "```", ""]
    md += _models_section(models, images, labels, out)
    md += _filters_section(models, out)
    md += _feature_maps_section(models, x, y, out)
    md += _attributions_section(models, x, y, out, steps)
    md += _equivariance_section(models, images[:equivariance_images], out)
    md += _errors_section(models, images, labels, out, errors_per_class, steps)
    threads = torch.get_num_threads()
    md += [f"Written in {time.perf_counter() - start:.0f} s on CPU ({threads} thread{'s' if threads > 1 else ''}).", ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    return out / "report.md"


def _models_section(models: list[Explained], images: torch.Tensor, labels: torch.Tensor, out: Path) -> list[str]:
    rows = []
    for m in models:
        m.probs = predict_probs(m.model, images)
        rows.append({"model": m.label, "class": type(m.model).__name__, "params": count_parameters(m.model),
                     "test_acc": accuracy(m.probs, labels), "images": len(labels), "source": m.source})  # fmt: skip
    write_csv_rows(out / "models.csv", rows)
    return ["## Models", "", *models_table(rows), "", f"Accuracy on the {len(labels):,} test images, plain forward pass (a run's own test accuracy may use flip TTA).", ""]


def _filters_section(models: list[Explained], out: Path) -> list[str]:
    md = ["## 1. First-layer filters", "",
          ("Conv kernels are small local detectors (edges, blobs); the MLP's first layer learns whole-image templates "
           "(its 32 rows with the largest norm, each as a 28x28 picture). Red is positive, blue negative."), ""]  # fmt: skip
    for m in models:
        filters, kind = first_layer_filters(m.model)
        name = f"filters_{slug(m.label)}.png"
        save_figure(figures.filters_figure(filters, f"{m.label}: first layer, {kind}"), out / name)
        md += [f"**{m.label}** ({kind}, {len(filters)} shown)", "", f"![{m.label} filters]({name})", ""]
    return md


def _feature_maps_section(models: list[Explained], x: torch.Tensor, y: torch.Tensor, out: Path) -> list[str]:
    md = ["## 2. Feature maps", "",
          ("One test image per class (rows); for each conv block (after its ReLU) and each pool, the 4 channels most "
           "active on these images. The maps shrink and turn from edges into coarser, more abstract parts."), ""]  # fmt: skip
    for m in models:
        layers = spatial_layers(m.model, x[:1])
        if not layers:
            md += [f"**{m.label}**: no spatial layers (it flattens the image first), so no feature maps.", ""]
            continue
        labels = layer_labels(layers)
        maps = feature_maps(m.model, x, [layer.name for layer in block_outputs(layers)])
        name = f"feature_maps_{slug(m.label)}.png"
        save_figure(figures.feature_maps_figure(x, y, {labels[k]: v for k, v in maps.items()}), out / name)
        md += [f"**{m.label}**", "", f"![{m.label} feature maps]({name})", ""]
    return md


def _attributions_section(models: list[Explained], x: torch.Tensor, y: torch.Tensor, out: Path, steps: int) -> list[str]:
    maps, rows = {}, []
    for m in models:
        found = attribution_maps(m.model, x, y, steps)
        delta, gap = found.pop("ig delta"), completeness_gap(m.model, x, y)
        maps[m.label] = found
        checks = completeness_rows(found["integrated gradients"], gap, delta)
        rows += [{"model": m.label, "class": CLASS_NAMES[int(c)], **check} for c, check in zip(y, checks)]
    save_figure(figures.attribution_figure(x, y, maps), out / "attributions.png")
    write_csv_rows(out / "ig_delta.csv", rows)
    md = ["## 3. Attributions: where each model looks", "",
          (f"For the true class of each image: Integrated Gradients (black baseline, {steps} Gauss-Legendre steps), "
           "Occlusion (4x4 black patch, stride 2) and, for conv models, Layer Grad-CAM on the last conv layer, "
           "upsampled. Red raises the class's logit, blue lowers it."), "", "![attributions](attributions.png)", "",
          "Integrated Gradients' completeness check (Captum's convergence delta: map sum minus f(x)_t - f(0)_t):", "",
          *ig_delta_table(rows)]  # fmt: skip
    return md + ["", "Per image: [ig_delta.csv](ig_delta.csv).", ""]


def _equivariance_section(models: list[Explained], images: torch.Tensor, out: Path) -> list[str]:
    by_model = {m.label: equivariance_errors(m.model, images) for m in models}
    rows = [{"model": label, **r} for label, found in by_model.items() for r in found]
    write_csv_rows(out / "equivariance.csv", rows)
    save_figure(figures.equivariance_figure(by_model), out / "equivariance.png")
    md = ["## 4. Translation: equivariance layer by layer", "",
          (f"{len(images):,} test images, each shifted 1-4 pixels right and down (zero fill). For a layer with "
           "cumulative stride S the error is ||f(Tx) - T'f(x)|| / ||T'f(x)||, with T' the shift by s/S in the layer's "
           "grid (the better of floor and ceil when S does not divide s), away from the borders: positions the shift "
           "filled in, and units whose receptive field reaches the image's edge, are left out. For the logits the "
           "shifted image is compared with the original: invariance. Mean ± std over images."), "",
          *equivariance_table(rows), "", "![equivariance](equivariance.png)", "",
          "Predictions unchanged by the shift (logits' argmax):", "", *agreement_table(rows)]  # fmt: skip
    return md + ["", "All rows: [equivariance.csv](equivariance.csv).", ""]


def _errors_section(models: list[Explained], images: torch.Tensor, labels: torch.Tensor, out: Path, per_class: int, steps: int) -> list[str]:
    md = ["## 5. The most confident mistakes, per class", "",
          (f"For each true class, the {per_class} misclassified test images with the highest wrong-class probability "
           "([errors.csv](errors.csv)); the figures show the worst one per class with the attributions for the class "
           "the model chose: what convinced it."), ""]  # fmt: skip
    all_rows = []
    for m in models:
        found = confident_errors(m.probs, labels, per_class)
        all_rows += [{"model": m.label, **r, "true_name": CLASS_NAMES[r["true"]], "predicted_name": CLASS_NAMES[r["predicted"]]} for r in found]
        worst = worst_per_class(found)
        if not worst:
            md += [f"**{m.label}**: no mistakes on these images.", ""]
            continue
        idx = torch.tensor([r["index"] for r in worst])
        maps = attribution_maps(m.model, images[idx], torch.tensor([r["predicted"] for r in worst]), steps)
        maps.pop("ig delta")
        titles = [f"{CLASS_NAMES[r['true']]}\n→ {CLASS_NAMES[r['predicted']]}\n{r['confidence']:.2f}" for r in worst]
        name = f"errors_{slug(m.label)}.png"
        save_figure(figures.attribution_figure(images[idx], labels[idx], {m.label: maps}, titles), out / name)
        md += [f"**{m.label}**: most frequent confusions: {confusions_text(confusion_pairs(m.probs, labels))}.", "", f"![{m.label} mistakes]({name})", ""]
    if all_rows:
        write_csv_rows(out / "errors.csv", all_rows)
    return md
