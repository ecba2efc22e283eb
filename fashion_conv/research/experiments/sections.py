"""One report section per experiment: tables, figures and sentences, all computed from the results.

Each function takes the results (one row per run), writes its figures into ``out`` and returns
(markdown, headline): the headline is the section's main measured sentence, for the summary at the top.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd
from torch import nn

from fashion_conv.models.backbones import build_backbone, count_parameters
from fashion_conv.research.experiments import plots
from fashion_conv.research.experiments.plans import NOTEBOOK, Preset, kernel_variant
from fashion_conv.research.experiments.stats import gap, md_table, mean_std, pct, values

NAMES = [v.label for v in NOTEBOOK]  # mlp, cnn, cnn5


def _std(vals: list[float]) -> float:
    return statistics.stdev(vals) if len(vals) > 1 else float("nan")


def _first(results: pd.DataFrame, label: str, column: str):
    return results.loc[results["variant"] == label, column].iloc[0]


def _summary_rows(results: pd.DataFrame, labels: list[str]) -> list[list]:
    rows = []
    for label in labels:
        if not (results["variant"] == label).any():
            continue
        rows.append([
            label, f"{int(_first(results, label, 'params')):,}", mean_std(values(results, label)),
            mean_std(values(results, label, "val_acc")), mean_std(values(results, label, "epoch_seconds"), scale=1, digits=1),
            len(values(results, label)),
        ])  # fmt: skip
    return rows


SUMMARY_HEADERS = ["model", "parameters", "test acc (%)", "val acc (%)", "s/epoch (train)", "seeds"]


def compare(results: pd.DataFrame, curves: pd.DataFrame, out: Path) -> tuple[str, str]:
    plots.curves(curves, NAMES, out / "compare_curves.png", "mlp vs cnn vs cnn5: every run, per epoch")
    best = max(NAMES, key=lambda n: statistics.fmean(values(results, n)))
    lines = [gap(a, values(results, a), "mlp", values(results, "mlp")) for a in ("cnn", "cnn5")]
    lines.append(gap("cnn", values(results, "cnn"), "cnn5", values(results, "cnn5")))
    text = [
        "## 1. mlp vs cnn vs cnn5, same conditions",
        "",
        md_table(SUMMARY_HEADERS, _summary_rows(results, NAMES)),
        "",
        *[f"- {line}" for line in lines],
        "",
        "![training curves](compare_curves.png)",
        "",
    ]
    return "\n".join(text), f"Highest mean test accuracy: {best}. " + lines[0]


def architecture(backbone: str, kwargs: dict | None = None) -> dict[str, str]:
    """Layer facts read off the built module: conv layers, kernels, channels, FC head, parameter split."""
    net = build_backbone(backbone, **(kwargs or {}))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    conv_params = sum(count_parameters(m) for m in convs)
    return {
        "conv layers": str(len(convs)),
        "kernels": ", ".join(f"{m.kernel_size[0]}x{m.kernel_size[1]}" for m in convs) or "-",
        "channels": ", ".join(str(m.out_channels) for m in convs) or "-",
        "FC head": "→".join([str(linears[0].in_features)] + [str(m.out_features) for m in linears]),
        "conv params": f"{conv_params:,}",
        "FC params": f"{count_parameters(net) - conv_params:,}",
    }


def kernel(results: pd.DataFrame, curves: pd.DataFrame, out: Path, preset: Preset) -> tuple[str, str]:
    ablation = [kernel_variant(k) for k in preset.kernel_sizes]
    labels = [v.label for v in ablation]
    series = {"convnet (only the kernel changes)": (
        list(preset.kernel_sizes), [statistics.fmean(values(results, label)) for label in labels], [_std(values(results, label)) for label in labels]
    )}  # fmt: skip
    params = [f"{int(_first(results, label, 'params')):,} params" for label in labels]
    references = {
        f"{n} (notebook)": statistics.fmean(values(results, n)) for n in ("cnn", "cnn5") if values(results, n)
    }
    plots.lines(series, out / "kernel.png", "kernel size (k x k)", "Controlled kernel-size ablation",
                notes={next(iter(series)): params}, references=references)  # fmt: skip
    plots.curves(curves, labels, out / "kernel_curves.png", "convnet, kernel size only: every run, per epoch")
    archs = {v.label: architecture(v.backbone, v.backbone_kwargs) for v in ablation + [NOTEBOOK[1], NOTEBOOK[2]]}
    columns = list(next(iter(archs.values())))

    def table(names: list[str]) -> str:
        rows = [[n, *archs[n].values(), *_summary_rows(results, [n])[0][1:5]] for n in names]
        return md_table(["model", *columns, "parameters", "test acc (%)", "val acc (%)", "s/epoch (train)"], rows)

    base = labels[0]
    controlled = [gap(label, values(results, label), base, values(results, base)) for label in labels[1:]]
    cnn, cnn5 = archs["cnn"], archs["cnn5"]
    differs = [f"{key} ({cnn[key]} vs {cnn5[key]})" for key in columns if cnn[key] != cnn5[key]]
    notebook = gap("cnn5", values(results, "cnn5"), "cnn", values(results, "cnn"))
    same_as_cnn = archs[base] == cnn if base == "convnet k=3" else False
    if same_as_cnn and values(results, base) and values(results, "cnn"):
        a, b = values(results, base), values(results, "cnn")
        controlled.append(
            f"convnet k=3 is cnn built by another name and trained with the same seeds: its test accuracies "
            f"({', '.join(pct(v) for v in a)} %) {'equal' if a == b else 'differ from'} cnn's ({', '.join(pct(v) for v in b)} %)"
            + (
                ", so the runs are reproducible."
                if a == b
                else "; the difference is run-to-run noise of this machine's kernels."
            )
        )
    text = [
        "## 2. Kernel size: a controlled ablation beside the notebook's comparison",
        "",
        "`convnet` keeps cnn's layout (two conv blocks of 32 and 64 channels, 'same' padding, 2x2 max-pool, FC 128) "
        "and changes only the kernel size, so the feature maps and the FC head are identical and only the conv "
        "weights grow with k."
        + (" With k=3 it is cnn itself (same layers, same parameter count)." if same_as_cnn else ""),
        "",
        table(labels),
        "",
        *[f"- {line}" for line in controlled],
        "",
        "![kernel ablation](kernel.png)",
        "",
        'The notebook\'s "3x3 vs 5x5, all else fixed" compared these two models:',
        "",
        table(["cnn", "cnn5"]),
        "",
        f"- {notebook}",
        (
            f"- cnn and cnn5 differ in {len(differs)} ways, not one: {'; '.join(differs)}. Their gap is the sum of all "
            "of these changes, so it says nothing about the kernel size on its own; the controlled ablation above does."
        ),
        "",
        "Curves of the ablation runs: [kernel_curves.png](kernel_curves.png).",
        "",
    ]
    headline = controlled[0] if controlled else notebook
    return "\n".join(text), f"Kernel size alone ({labels[1] if len(labels) > 1 else base} vs {base}): {headline}"


def translation(results: pd.DataFrame, out: Path, max_shift: int) -> tuple[str, str]:
    shifts = list(range(max_shift + 1))
    means = {n: [statistics.fmean(values(results, n, f"shift_{k}")) for k in shifts] for n in NAMES}
    series = {n: (shifts, means[n], [_std(values(results, n, f"shift_{k}")) for k in shifts]) for n in NAMES}
    plots.lines(
        series, out / "translation.png", "shift k (pixels, on both axes)", "Test accuracy on shifted test images"
    )
    rows = [[n, *(f"{100 * m:.2f}" for m in means[n])] for n in NAMES]
    text = [
        "## 3. Translation probe",
        "",
        (
            "The trained models of section 1 (best checkpoint by validation accuracy), tested on the same test images "
            "moved k pixels along both axes, zero fill; the accuracy at k is the mean over the four diagonal directions."
        ),
        "",
        md_table(["model", *(f"k={k}" for k in shifts)], rows),
        "",
    ]
    headline = ""
    for k in sorted({min(2, max_shift), max_shift} - {0}):
        drops = {
            n: [a - b for a, b in zip(values(results, n, "shift_0"), values(results, n, f"shift_{k}"))] for n in NAMES
        }
        kept = ", ".join(f"{n} {100 * means[n][k] / means[n][0]:.1f} %" for n in NAMES)
        text.append(f"- At k={k}, share of the unshifted accuracy kept: {kept}.")
        for n in ("cnn", "cnn5"):
            line = gap(
                f"{n}'s drop", drops[n], "mlp's drop", drops["mlp"], what=f"Accuracy lost at k={k}", unit="points"
            )
            text.append(f"- {line}")
            headline = headline or line
    text += ["", "![translation probe](translation.png)", ""]
    return "\n".join(text), headline or "No shift beyond 0 measured."


def permutation(results: pd.DataFrame, curves: pd.DataFrame, out: Path, seed: int) -> tuple[str, str]:
    permuted = {n: f"{n} permuted" for n in NAMES}
    original_vals = {n: values(results, n) for n in NAMES}
    permuted_vals = {n: values(results, permuted[n]) for n in NAMES}
    plots.bars(
        NAMES,
        {name: ([statistics.fmean(v[n]) for n in NAMES], [_std(v[n]) for n in NAMES]) for name, v in
         (("original pixels", original_vals), ("permuted pixels", permuted_vals))},
        out / "permutation.png",
        "Trained and tested on permuted pixels",
    )  # fmt: skip
    plots.curves(
        curves, list(permuted.values()), out / "permutation_curves.png", "Permuted pixels: every run, per epoch"
    )
    rows = [
        [n, mean_std(original_vals[n]), mean_std(permuted_vals[n]),
         f"{100 * (statistics.fmean(permuted_vals[n]) - statistics.fmean(original_vals[n])):+.2f}"]
        for n in NAMES
    ]  # fmt: skip
    lines = [gap(f"{n} permuted", permuted_vals[n], n, original_vals[n]) for n in NAMES]
    edges = []
    for n in ("cnn", "cnn5"):
        edges.append(gap(n, original_vals[n], "mlp", original_vals["mlp"], what="Original pixels"))
        edges.append(gap(permuted[n], permuted_vals[n], "mlp permuted", permuted_vals["mlp"], what="Permuted pixels"))
    text = [
        "## 4. Permutation probe",
        "",
        (
            f"Every model trained, validated and tested on images whose 784 pixels are shuffled by one fixed permutation "
            f"(seed {seed}, the same for train, validation and test). The values of the pixels are kept; which pixels "
            "are neighbours is not. A fully connected layer has no notion of neighbours, so for it this is a relabelling "
            "of its inputs."
        ),
        "",
        md_table(["model", "original (%)", "permuted (%)", "change (points)"], rows),
        "",
        *[f"- {line}" for line in lines],
        "",
        "The CNNs' edge over the MLP, before and after the shuffle:",
        "",
        *[f"- {line}" for line in edges],
        "",
        "![permutation probe](permutation.png)",
        "",
        "Curves of the permuted runs: [permutation_curves.png](permutation_curves.png).",
        "",
    ]
    return "\n".join(text), edges[1]


def efficiency(results: pd.DataFrame, out: Path, preset: Preset, batch_size: int, epochs: int) -> tuple[str, str]:
    labels = _full_size_labels(results)
    if "cnn" in labels and "convnet k=3" in labels:
        labels.remove("convnet k=3")  # the same network as cnn: one point
    base = results[~results["permuted"] & results["variant"].isin(labels)]
    points = base.groupby("variant").agg(params=("params", "first"), backbone=("backbone", "first"), mean=("test_acc", "mean"),
                                         std=("test_acc", "std"), seconds=("epoch_seconds", "mean")).reset_index()  # fmt: skip
    points["family"] = points["backbone"].map(lambda b: "fully connected" if b == "mlp" else "convolutional")
    points = points.rename(columns={"variant": "label"}).sort_values("params")
    plots.scatter(points, out / "params.png", "Parameter efficiency: test accuracy against parameters")
    param_rows = [
        [p.label, p.family, f"{int(p.params):,}", mean_std(values(results, p.label)), f"{p.seconds:.1f}"]
        for p in points.itertuples()
    ]
    full_n = int(_first(results, "mlp", "train_images"))
    sizes = list(preset.train_sizes) + [full_n]
    label_at = {n: {size: f"{n} n={size}" for size in preset.train_sizes} | {full_n: n} for n in NAMES}
    series = {n: (sizes, [statistics.fmean(values(results, label_at[n][s])) for s in sizes],
                  [_std(values(results, label_at[n][s])) for s in sizes]) for n in NAMES}  # fmt: skip
    plots.lines(
        series,
        out / "samples.png",
        "training images (log scale)",
        "Sample efficiency: test accuracy against training-set size",
        logx=True,
    )
    sample_rows = [[n, *(mean_std(values(results, label_at[n][s])) for s in sizes)] for n in NAMES]
    sample_lines = []
    for size in (sizes[0], sizes[-1]):
        for n in ("cnn", "cnn5"):
            line = gap(
                label_at[n][size],
                values(results, label_at[n][size]),
                label_at["mlp"][size],
                values(results, label_at["mlp"][size]),
            )
            sample_lines.append(f"- {size:,} training images. {line}")
    steps = ", ".join(f"{s:,} images: {epochs * -(-s // batch_size):,} steps" for s in sizes)
    text = [
        "## 5. Parameter and sample efficiency",
        "",
        (
            "Parameter efficiency: every model trained on the full training set of this report (original pixels), "
            "with MLP and convnet widths added."
        ),
        "",
        md_table(["model", "family", "parameters", "test acc (%)", "s/epoch (train)"], param_rows),
        "",
        "![accuracy against parameters](params.png)",
        "",
        (
            "Sample efficiency: the notebook's models trained on the first N images of the same shuffled training split "
            "(validation and test sets unchanged)."
        ),
        "",
        md_table(["model", *(f"n={s:,}" for s in sizes)], sample_rows),
        "",
        *sample_lines,
        (
            f"- Every size trains for the same {epochs} epochs, so smaller sets also get fewer optimizer steps ({steps}): "
            "the curve measures data and training budget together."
        ),
        "",
        "![accuracy against training-set size](samples.png)",
        "",
    ]
    return "\n".join(text), sample_lines[0][2:]


def _full_size_labels(results: pd.DataFrame) -> list[str]:
    """Variants trained on the report's full training set (not the sample-efficiency subsets)."""
    full_n = results.loc[~results["permuted"], "train_images"].max()
    return list(results.loc[results["train_images"] == full_n, "variant"].unique())
