"""The explain report's Markdown tables, made from the rows its CSVs hold (pure: no files, no models)."""

from __future__ import annotations

from fashion_conv.data.csvio import CLASS_NAMES
from fashion_conv.research.explain.equivariance import LOGITS


def models_table(rows: list[dict]) -> list[str]:
    """Rows {model, class, params, test_acc, source} (models.csv) -> the Models table."""
    md = ["| model | class | parameters | test accuracy (no TTA) | source |", "|---|---|---|---|---|"]
    return md + [f"| {r['model']} | {r['class']} | {r['params']:,} | {r['test_acc']:.2%} | `{r['source']}` |" for r in rows]


def ig_delta_table(rows: list[dict]) -> list[str]:
    """Rows {model, delta, relative_delta} (ig_delta.csv) -> per model, the largest |delta| and |delta| / |logit gap|."""
    md = ["| model | max abs delta | max delta / logit gap |", "|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        md.append(f"| {model} | {max(abs(r['delta']) for r in mine):.2e} | {max(r['relative_delta'] for r in mine):.2e} |")
    return md


def _shifts(rows: list[dict]) -> list[int]:
    return sorted({r["shift"] for r in rows})


def equivariance_table(rows: list[dict]) -> list[str]:
    """Rows of ``equivariance_errors`` with their model (equivariance.csv) -> a line per model and layer, a column per
    shift: "mean ± std"; the logits' stride (0) shows as "-"."""
    shifts = _shifts(rows)
    md = ["| model | layer | stride | receptive field | " + " | ".join(f"shift {s}" for s in shifts) + " |", "|---|---|---|---|" + "---|" * len(shifts)]
    for model in dict.fromkeys(r["model"] for r in rows):
        found = [r for r in rows if r["model"] == model]
        for label in dict.fromkeys(r["label"] for r in found):
            mine = sorted((r for r in found if r["label"] == label), key=lambda r: r["shift"])
            cells = " | ".join(f"{r['mean']:.3f} ± {r['std']:.3f}" for r in mine)
            md.append(f"| {model} | {label} | {mine[0]['stride'] or '-'} | {mine[0]['receptive_field']} | {cells} |")
    return md


def agreement_table(rows: list[dict]) -> list[str]:
    """Rows as for ``equivariance_table`` -> per model and shift, the share of predictions the shift left unchanged."""
    shifts = _shifts(rows)
    md = ["| model | " + " | ".join(f"shift {s}" for s in shifts) + " |", "|---|" + "---|" * len(shifts)]
    for model in dict.fromkeys(r["model"] for r in rows):
        agree = {r["shift"]: r["agreement"] for r in rows if r["model"] == model and r["label"] == LOGITS}
        md.append(f"| {model} | " + " | ".join(f"{agree[s]:.1%}" for s in shifts) + " |")
    return md


def confusions_text(pairs: list[tuple[int, int, int]]) -> str:
    """(true, predicted, count) pairs -> "Shirt → T-shirt/top (144), ..." with Fashion-MNIST's class names."""
    return ", ".join(f"{CLASS_NAMES[t]} → {CLASS_NAMES[p]} ({n})" for t, p, n in pairs)
