"""Write the robustness report: CSVs of every measurement, PNG figures, and report.md whose sentences are computed."""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from fashion_conv.research.experiments.stats import md_table, mean_std
from fashion_conv.research.robust import figures
from fashion_conv.research.robust.calibration import N_BINS
from fashion_conv.research.robust.corruptions import FAMILIES
from fashion_conv.research.robust.evaluate import Data, Measured
from fashion_conv.research.robust.scores import corruption_error, relative_corruption_error, robustness_verdict, separated, wilson
from fashion_conv.utils.atomic import atomic_write_text


def tables(models: list[Measured]) -> dict[str, pd.DataFrame]:
    """One long table per part, a row per model and measurement (``model``: its file)."""
    def rows(attr):
        return pd.DataFrame([{"group": m.group, "model": m.source, **r} for m in models for r in getattr(m, attr)])

    adv = rows("adversarial")
    adv[["wilson_low", "wilson_high"]] = [wilson(c, n) for c, n in zip(adv.correct, adv.n)]
    times = pd.DataFrame([{"group": m.group, "model": m.source, "temperature": m.temperature, "clean_accuracy": m.clean_accuracy,
                           "attack_clean_accuracy": m.attack_clean_accuracy,
                           **{f"seconds_{k}": v for k, v in m.seconds.items()}} for m in models])  # fmt: skip
    return {"corruptions": rows("corruption"), "adversarial": adv, "calibration": rows("calibration"),
            "reliability": rows("reliability"), "models": times}  # fmt: skip


def per_seed(corr: pd.DataFrame, group: str, family: str) -> list[float]:
    """Each seed's accuracy on ``family``, mean over its severities (``clean``: severity 0)."""
    rows = corr[(corr.group == group) & (corr.family == family)]
    return list(rows.groupby("model", sort=False).accuracy.mean())


def severity_means(corr: pd.DataFrame, group: str, families: list[str], severity: int) -> list[float]:
    """Each seed's accuracy at ``severity``, mean over ``families`` (severity 0: its clean accuracy)."""
    rows = corr[(corr.group == group) & (corr.severity == severity) & ((severity == 0) | corr.family.isin(families))]
    return list(rows.groupby("model", sort=False).accuracy.mean())


def family_scores(corr: pd.DataFrame, group: str, baseline: str, family: str) -> dict[str, list[float]]:
    """Per seed of ``group``: accuracy, accuracy lost (vs clean, same images), CE and relative CE vs ``baseline``'s mean."""
    def errors(g):  # model -> (clean error, [error per severity])
        sub = corr[corr.group == g]
        return {m: (1 - rows[rows.severity == 0].accuracy.iloc[0], list(1 - rows[rows.family == family].sort_values("severity").accuracy))
                for m, rows in sub.groupby("model", sort=False)}  # fmt: skip

    base = list(errors(baseline).values())
    base_clean = statistics.fmean(c for c, _ in base)
    base_errs = [statistics.fmean(e[s] for _, e in base) for s in range(len(base[0][1]))]
    out = {"accuracy": [], "lost": [], "ce": [], "rel_ce": []}
    for clean, errs in errors(group).values():
        out["accuracy"].append(1 - statistics.fmean(errs))
        out["lost"].append(statistics.fmean(errs) - clean)
        out["ce"].append(corruption_error(errs, base_errs))
        out["rel_ce"].append(relative_corruption_error(errs, clean, base_errs, base_clean))
    return out


def corruption_section(corr: pd.DataFrame, groups: list[str], baseline: str | None, data: Data) -> tuple[list[str], list[str]]:
    """The corruption section's lines, and summary sentences."""
    families = list(FAMILIES)
    lines = ["## 1. Corruptions", "",
             f"The first {data.n_corrupt:,} images of the official test set, under {len(families)} families "
             f"({sum(len(f.levels) for f in FAMILIES.values())} conditions), made with seed {data.seed} "
             "(`fashion_conv.research.robust.corrupt`: the same images every run). Parameters per severity: "
             "`docs/robustness.md` and the table at the end of this section.", "",
             "![corrupted samples](samples.png)", "",
             "### Accuracy (%), mean over each family's severities; mean ± std over seeds", ""]  # fmt: skip
    headers = ["family", *groups]
    rows = [["clean (same images)", *[mean_std(per_seed(corr, g, "clean")) for g in groups]]]
    rows += [[f, *[mean_std(per_seed(corr, g, f)) for g in groups]] for f in families]
    means = {g: [statistics.fmean(v) for v in zip(*[per_seed(corr, g, f) for f in families])] for g in groups}
    rows.append(["**mean over families**", *[mean_std(means[g]) for g in groups]])
    lines += [md_table(headers, rows), "", "![accuracy per family](families.png)", ""]
    graded = [f for f, fam in FAMILIES.items() if len(fam.levels) > 1]
    sev = [[s, *[mean_std(severity_means(corr, g, graded, s)) for g in groups]] for s in range(6)]
    lines += [f"### Accuracy (%) per severity, mean over the {len(graded)} graded families (0: clean, same images)", "",
              md_table(["severity", *groups], sev), "", "![accuracy per severity](severity.png)", ""]
    summary = []
    if baseline:
        lines += [f"### Corruption error relative to {baseline} (ImageNet-C's CE and relative CE)", "",
                  f"CE_f = Σ_s err(model, f, s) / Σ_s err({baseline}, f, s); relative CE_f = Σ_s (err(f, s) − err(clean)) / "
                  f"Σ_s (err_{baseline}(f, s) − err_{baseline}(clean)), with {baseline}'s errors averaged over its seeds. "
                  "CE < 1: fewer errors than the baseline; relative CE < 1: the corruption adds fewer errors than it adds "
                  "to the baseline (robust beyond accuracy). mCE: the mean over families. Verdict: each seed's accuracy lost "
                  f"to the family (clean minus corrupted, same images) against each {baseline} seed's; a difference is named "
                  "only when every seed of one is beyond every seed of the other.", ""]  # fmt: skip
        others = [g for g in groups if g != baseline]
        headers = ["family", *[f"{g} CE" for g in others], *[f"{g} rel. CE" for g in others], *[f"{g} vs {baseline}" for g in others]]
        rows, counts, means_ce, means_rel = [], {g: {} for g in others}, {g: [] for g in others}, {g: [] for g in others}
        base_scores = {f: family_scores(corr, baseline, baseline, f) for f in families}
        for f in families:
            scores = {g: family_scores(corr, g, baseline, f) for g in others}
            verdicts = {g: robustness_verdict(scores[g]["accuracy"], base_scores[f]["accuracy"], scores[g]["lost"], base_scores[f]["lost"]) for g in others}
            for g in others:
                counts[g].setdefault(verdicts[g], []).append(f)
                means_ce[g].append(scores[g]["ce"])
                means_rel[g].append(scores[g]["rel_ce"])
            rows.append([f, *[mean_std(scores[g]["ce"], 1, 3) for g in others], *[mean_std(scores[g]["rel_ce"], 1, 3) for g in others],
                         *[verdicts[g] for g in others]])  # fmt: skip
        mce = {g: [statistics.fmean(v) for v in zip(*means_ce[g])] for g in others}
        rel = {g: [statistics.fmean(v) for v in zip(*means_rel[g])] for g in others}
        rows.append(["**mCE**", *[mean_std(mce[g], 1, 3) for g in others], *[mean_std(rel[g], 1, 3) for g in others], *[""] * len(others)])
        lines += [md_table(headers, rows), ""]
        for g in others:
            sep = {1: "every seed above every seed of", -1: "every seed below every seed of", 0: "seeds overlap with"}[separated(means[g], means[baseline])]
            summary.append(f"Mean accuracy over the {len(families)} families: {g} {mean_std(means[g])} % vs {baseline} "
                           f"{mean_std(means[baseline])} % ({sep} {baseline}).")  # fmt: skip
            parts = [f"{v} under {len(fs)} ({', '.join(fs)})" for v, fs in sorted(counts[g].items())]
            summary.append(f"{g} against {baseline}, per corruption family: " + "; ".join(parts) + f". mCE {mean_std(mce[g], 1, 3)}, "
                           f"relative mCE {mean_std(rel[g], 1, 3)}.")  # fmt: skip
    lines += ["### Parameters per severity", "", md_table(["family", "group", "parameter", "s1", "s2", "s3", "s4", "s5"],
              [[f, fam.group, fam.meaning, *["—" if v is None else str(v) for v in fam.levels], *[""] * (5 - len(fam.levels))] for f, fam in FAMILIES.items()]), ""]  # fmt: skip
    return lines, summary


def recipe_sentences(corr: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[str]:
    """For two groups of one backbone (another recipe): accuracy lost per family, compared seed by seed."""
    out = []
    for a, b in pairs:
        counts = {}
        for f in FAMILIES:
            sa, sb = family_scores(corr, a, b, f), family_scores(corr, b, b, f)
            counts.setdefault(robustness_verdict(sa["accuracy"], sb["accuracy"], sa["lost"], sb["lost"]), []).append(f)
        n_a, n_b = corr[corr.group == a].model.nunique(), corr[corr.group == b].model.nunique()
        note = f" ({a}: {n_a} run{'s' if n_a > 1 else ''}, {b}: {n_b}; a verdict needs the single run beyond every seed of the other)"
        out.append(f"{a} against {b}, per family{note}: " + "; ".join(f"{v} under {len(fs)} ({', '.join(fs)})" for v, fs in sorted(counts.items())) + ".")
    return out


def run_name(source: str) -> str:
    """``cnn/version_0`` for ``.../lightning_logs/cnn/version_0/checkpoints/best.ckpt``, else the file's name."""
    p = Path(source)
    return f"{p.parents[2].name}/{p.parents[1].name}" if p.parent.name == "checkpoints" and len(p.parents) > 3 else p.name


def time_section(models: pd.DataFrame) -> list[str]:
    parts = [c for c in models.columns if c.startswith("seconds_")]
    rows = [[r.group, run_name(r.model), *[f"{getattr(r, c):.0f}" for c in parts], f"{sum(getattr(r, c) for c in parts):.0f}"]
            for r in models.itertuples()]  # fmt: skip
    total = models[parts].to_numpy().sum()
    return ["## Time", "", "Seconds per model and part (wall clock, this machine; making the corrupted images and drawing the "
            "figures are shared and not counted here):", "",
            md_table(["model", "run", *[c.removeprefix("seconds_") for c in parts], "total"], rows), "",
            f"Sum over the {len(models)} models: {total / 60:.1f} min.", ""]  # fmt: skip


def attack_section(adv: pd.DataFrame, models: pd.DataFrame, groups: list[str], data: Data, baseline: str | None = None) -> tuple[list[str], list[str]]:
    epsilons = sorted(adv.eps.unique())
    lines = ["## 2. Adversarial attacks", "",
             f"FGSM and PGD (L∞, {40} steps of 2.5·eps/40, one random start in the eps-ball; Adversarial Robustness "
             f"Toolbox) on the first {data.n_adv:,} images of the official test set, each image attacked with its true "
             "label. Accuracy (%), mean ± std over seeds:", ""]  # fmt: skip
    for attack in ("fgsm", "pgd"):
        rows = [[g, *[mean_std(list(adv[(adv.group == g) & (adv.attack == attack) & (adv.eps == e)].accuracy)) for e in epsilons]] for g in groups]
        lines += [f"**{attack.upper()}**", "", md_table(["model", *[f"eps {e:g}" for e in epsilons]], rows), ""]
    pgd = adv[adv.attack == "pgd"]
    rows = [[g, run_name(m),
             *[f"{100 * r.accuracy:.1f} [{100 * r.wilson_low:.1f}, {100 * r.wilson_high:.1f}]" for r in rows.itertuples()]]
            for (g, m), rows in pgd.groupby(["group", "model"], sort=False)]  # fmt: skip
    lines += [f"PGD accuracy of each model (%), with its Wilson 95 % interval over the {data.n_adv:,} images:", "",
              md_table(["model", "run", *[f"eps {e:g}" for e in epsilons]], rows), "", "![accuracy under attack](attacks.png)", ""]
    # Sanity checks, computed.
    eps0_equal, worse, last = [], [], []
    for (g, m), rows in adv.groupby(["group", "model"], sort=False):
        clean = rows[rows.eps == 0].accuracy.tolist()
        n = rows.n.iloc[0]
        clean_acc = models[models.model == m].attack_clean_accuracy.iloc[0]  # no attack, same images
        eps0_equal.append(all(round(c * n) == round(clean_acc * n) for c in clean))
        f, p = rows[rows.attack == "fgsm"].set_index("eps").accuracy, rows[rows.attack == "pgd"].set_index("eps").accuracy
        worse += [(g, e) for e in epsilons if p[e] > f[e]]
        last.append(p[max(epsilons)])
    checks = [f"eps = 0 gives the clean accuracy of the same images for {sum(eps0_equal)} of {len(eps0_equal)} models (both attacks).",
              f"PGD ≤ FGSM at every eps for every model: {'yes' if not worse else 'no, at ' + ', '.join(f'{g} eps {e:g}' for g, e in worse)}.",
              f"PGD accuracy at eps {max(epsilons):g}: at most {100 * max(last):.1f} % over all models (no sign of gradient masking "
              "if it is near 0)."]  # fmt: skip
    lines += ["Sanity checks:", "", *[f"- {c}" for c in checks], ""]
    if baseline in groups:
        checks += pgd_sentences(pgd, baseline, groups, epsilons)
    return lines, checks


def pgd_sentences(pgd: pd.DataFrame, baseline: str, groups: list[str], epsilons: list[float]) -> list[str]:
    """Per group: the eps where its PGD accuracy is beyond the baseline's on every seed."""
    out = []
    for g in groups:
        if g == baseline:
            continue
        parts = []
        for e in epsilons:
            a, b = (list(pgd[(pgd.group == x) & (pgd.eps == e)].accuracy) for x in (g, baseline))
            side = separated(a, b)
            if side:
                parts.append(f"eps {e:g}: {mean_std(a)} % vs {mean_std(b)} % ({'above' if side > 0 else 'below'})")
        out.append(f"PGD, {g} against {baseline}, where every seed is beyond every seed: " + ("; ".join(parts) or "nowhere") + ".")
    return out


def calibration_section(cal: pd.DataFrame, models: pd.DataFrame, groups: list[str]) -> tuple[list[str], list[str]]:
    lines = ["## 3. Calibration", "",
             f"ECE (torchmetrics `CalibrationError`, {N_BINS} equal-width bins, L1), NLL (nats) and Brier score (sum over the 10 "
             "classes). Temperature T fitted by minimizing the NLL on the 5,000 validation images (the datamodule's split, "
             "split seed 0) only, never on test data; 'after' divides the logits by T. Corrupted test: every family and "
             "severity of section 1 pooled. Mean ± std over seeds:", ""]  # fmt: skip
    rows = [[g, mean_std(list(models[models.group == g].temperature), 1, 3)] for g in groups]
    lines += [md_table(["model", "fitted T"], rows), ""]
    headers = ["model", "data", "accuracy (%)", "ECE before (%)", "ECE after (%)", "NLL before", "NLL after", "Brier before", "Brier after"]
    rows, best = [], {}
    for data_name in ("test", "corrupted test"):
        for g in groups:
            sub = cal[(cal.group == g) & (cal.data == data_name)]
            b, a = sub[sub.scaled == "before"], sub[sub.scaled == "after"]
            rows.append([g, data_name, mean_std(list(b.accuracy)), mean_std(list(b.ece)), mean_std(list(a.ece)),
                         mean_std(list(b.nll), 1, 3), mean_std(list(a.nll), 1, 3), mean_std(list(b.brier), 1, 4), mean_std(list(a.brier), 1, 4)])  # fmt: skip
            for scaled, part in (("before", b), ("after", a)):
                best.setdefault((data_name, scaled), {})[g] = list(part.ece)
    lines += [md_table(headers, rows), "", "![reliability diagrams](reliability.png)", "",
              "Reliability diagrams: the first model of each group, on the clean and on the corrupted test images; a marker's "
              "area is its bin's share of the images (bins with few images are noisy). Every bin of every model is in reliability.csv.", ""]
    summary = []
    for (data_name, scaled), by_group in best.items():
        order = sorted(by_group, key=lambda g: statistics.fmean(by_group[g]))
        top, second = order[0], order[1] if len(order) > 1 else None
        verdict = ""
        if second:
            sep = separated(by_group[second], by_group[top])
            if sep > 0:
                who = "every seed" if len(by_group[top]) > 1 else "its single run"
                verdict = f"; {who} below every seed of the next, {second} ({mean_std(by_group[second])} %)"
            elif len(by_group[top]) < 2 and len(by_group[second]) < 2:
                verdict = f"; next {second} ({mean_std(by_group[second])} %), one run each, so the spread between seeds is not measured"
            else:
                verdict = f"; the seeds overlap with the next, {second} ({mean_std(by_group[second])} %), so not a measured difference"
        summary.append(f"Lowest ECE on {data_name} {scaled} temperature scaling: {top} ({mean_std(by_group[top])} %){verdict}.")
    lines += [*[f"- {s}" for s in summary], ""]
    return lines, summary


def write_report(models: list[Measured], data: Data, out: Path, command: str, header: list[str], baseline: str | None,
                 pairs: list[tuple[str, str]]) -> Path:  # fmt: skip
    """CSVs, figures and report.md in ``out``; returns the report's path."""
    out.mkdir(parents=True, exist_ok=True)
    t = tables(models)
    for name, df in t.items():
        atomic_write_text(out / f"{name}.csv", df.to_csv(index=False, float_format="%.6g"))
    groups = list(dict.fromkeys(m.group for m in models))
    figures.samples(data.test[0], out / "samples.png", data.seed)
    figures.family_bars(t["corruptions"], out / "families.png")
    figures.severity_lines(t["corruptions"], out / "severity.png")
    figures.attack_curves(t["adversarial"], out / "attacks.png")
    figures.reliability(t["reliability"], out / "reliability.png")
    corr_lines, corr_summary = corruption_section(t["corruptions"], groups, baseline if baseline in groups else None, data)
    recipe = recipe_sentences(t["corruptions"], pairs)
    adv_lines, checks = attack_section(t["adversarial"], t["models"], groups, data, baseline)
    cal_lines, cal_summary = calibration_section(t["calibration"], t["models"], groups)
    lines = ["# Robustness: corruptions, attacks and calibration, measured", "", f"Generated by `{command}`.", "", *header, "",
             "## Summary", "", *[f"- {s}" for s in corr_summary + recipe + checks + cal_summary], "",
             *corr_lines, *adv_lines, *cal_lines, *time_section(t["models"]),
             "## Files", "", "corruptions.csv (accuracy per model, family, severity), adversarial.csv (with Wilson intervals), "
             "calibration.csv, reliability.csv (every bin), models.csv (fitted T, clean accuracy, seconds per part).", ""]  # fmt: skip
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
