"""python -m fashion_conv.research.robust: corruptions, attacks, calibration and the report's numbers, on cases worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from fashion_conv.research.robust import cli
from fashion_conv.research.robust.attacks import adversarial_images, attack_accuracy
from fashion_conv.research.robust.calibration import (
    brier, calibration_metrics, ece, ece_from_bins, fit_temperature, nll, reliability_bins,
)  # fmt: skip
from fashion_conv.research.robust.corruptions import FAMILIES, conditions, corrupt, severities
from fashion_conv.research.robust.report import family_scores, run_name
from fashion_conv.research.robust.scores import (
    FlipTTA, accuracy, corruption_error, predict_logits, relative_corruption_error, robustness_verdict, separated, wilson,
)  # fmt: skip
from fashion_conv.utils.errors import FashionConvError

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval

# ---------------------------------------------------------------- corruptions


def images(n: int = 6) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(7))


def test_severity_0_returns_the_images_and_their_accuracy():
    x = images()
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    labels = torch.arange(6)
    for family in FAMILIES:
        out = corrupt(x, family, 0, seed=3)
        assert torch.equal(out, x)
        assert accuracy(predict_logits(model, out), labels) == accuracy(predict_logits(model, x), labels)


RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur", "rotate", "shear",
          "translate", "elastic", "fog"}  # fmt: skip


@pytest.mark.parametrize("family,severity", conditions())
def test_same_seed_same_images_other_seed_other_images(family, severity):
    x = images()
    state = torch.get_rng_state()
    a, b = corrupt(x, family, severity, seed=0), corrupt(x, family, severity, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left as it was
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)  # every severity changes the images
    if family in RANDOM:
        assert not torch.equal(a, corrupt(x, family, severity, seed=1))  # random families depend on the seed


def test_impulse_noise_pinned():
    """A grey image (all 0.5): severity 3 sets 9 % of pixels to 0 or 1. The count and positions are pinned for seed 0."""
    x = torch.full((2, 1, 28, 28), 0.5)
    out = corrupt(x, "impulse_noise", 3, seed=0)
    changed = out != 0.5
    assert set(out.unique().tolist()) == {0.0, 0.5, 1.0}
    assert int(changed.sum()) == 144  # each pixel with probability 0.09: about 0.09 * 1568 = 141
    assert int((out == 1).sum()) == 88
    assert changed.flatten().nonzero().flatten()[:5].tolist() == [21, 37, 45, 78, 110]


def test_fixed_families_exact():
    x = images(2)
    assert torch.equal(corrupt(x, "flip_lr", 1), x.flip(-1))
    assert torch.equal(corrupt(x, "flip_ud", 1), x.flip(-2))
    assert torch.equal(corrupt(x, "inverse", 1), 1 - x)
    assert torch.equal(corrupt(x, "turn_left", 1)[0, 0, 0, 0], x[0, 0, 0, 27])  # top-left comes from top-right
    assert torch.equal(corrupt(corrupt(x, "turn_left", 1), "turn_right", 1), x)
    assert torch.equal(corrupt(x, "brightness", 2), (x + 0.2).clamp(0, 1))
    assert severities("inverse") == [1] and severities("fog") == [1, 2, 3, 4, 5]


def test_quantize_keeps_the_top_bits():
    x = torch.tensor([[[[0.0, 100 / 255, 200 / 255, 1.0]]]])
    # 1 bit kept: 0, 0, 128, 128 (as uint8), i.e. 0 and 128/255
    assert torch.allclose(corrupt(x, "quantize", 5), torch.tensor([[[[0.0, 0.0, 128 / 255, 128 / 255]]]]), atol=1e-7)


def test_unknown_family_or_severity():
    with pytest.raises(FashionConvError, match="unknown corruption family"):
        corrupt(images(), "snowstorm", 1)
    with pytest.raises(FashionConvError, match="severity must be 0..1"):
        corrupt(images(), "inverse", 2)


# ---------------------------------------------------------------- attacks


def tiny_trained_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model trained to tell bright-left from bright-right images (classes 0 and 1 of 10)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    x = torch.rand(64, 1, 28, 28, generator=g) * 0.5
    x[labels == 0, :, :, :14] += 0.4
    x[labels == 1, :, :, 14:] += 0.4
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        opt.step()
    return model.eval(), x, labels


def test_eps_0_leaves_images_and_accuracy_unchanged():
    model, x, y = tiny_trained_model()
    clean = accuracy(predict_logits(model, x), y)
    assert clean == 1.0
    for attack in ("fgsm", "pgd"):
        assert torch.equal(adversarial_images(model, x, y, attack, 0.0), x)
        assert attack_accuracy(model, x, y, attack, 0.0) == clean


def test_pgd_at_most_fgsm_and_within_eps():
    model, x, y = tiny_trained_model()
    for eps in (0.05, 0.1, 0.2):
        fgsm, pgd = attack_accuracy(model, x, y, "fgsm", eps), attack_accuracy(model, x, y, "pgd", eps, steps=40)
        assert pgd <= fgsm
        adv = adversarial_images(model, x, y, "pgd", eps, steps=40)
        assert (adv - x).abs().max() <= eps * (1 + 1e-6)  # float32 rounding of x + delta
        assert adv.min() >= 0 and adv.max() <= 1
    assert attack_accuracy(model, x, y, "pgd", 0.3) == 0.0
    assert torch.equal(adversarial_images(model, x, y, "pgd", 0.1, seed=4), adversarial_images(model, x, y, "pgd", 0.1, seed=4))


def test_flip_tta_module_averages_the_mirror():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    x = images(3)
    assert torch.allclose(FlipTTA(model)(x), (model(x) + model(x.flip(-1))) / 2)


# ---------------------------------------------------------------- calibration


def probs_with_top(top: list[float], pred: list[int], classes: int = 10, dtype=torch.float32) -> torch.Tensor:
    """Rows whose largest probability ``top`` is on class ``pred``; the rest spread evenly."""
    p = torch.tensor(top, dtype=dtype).unsqueeze(1).expand(-1, classes).clone()
    p = (1 - p) / (classes - 1)
    p[torch.arange(len(top)), torch.tensor(pred)] = torch.tensor(top, dtype=dtype)
    return p


def test_ece_zero_when_confidence_equals_accuracy_in_every_bin():
    # bin of 0.75: 3 of 4 right; bin of 0.5: 1 of 2 right (binary fractions, so every sum is exact)
    probs = probs_with_top([0.75] * 4 + [0.5] * 2, [0] * 6)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    assert ece(probs, labels) == 0.0
    assert ece_from_bins(reliability_bins(probs, labels)) == 0.0


def test_ece_brier_nll_of_a_miscalibrated_predictor_by_hand():
    # 4 at 0.75, all right (gap 0.25); 2 at 0.5, both wrong (gap 0.5): ECE = 4/6 * 0.25 + 2/6 * 0.5 = 1/3
    probs = probs_with_top([0.75] * 4 + [0.5] * 2, [0] * 6)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    assert ece(probs, labels) == pytest.approx(1 / 3, abs=4e-8)  # float32: a few units of 2**-24
    bins = reliability_bins(probs, labels)
    assert [(b["bin"], b["n"], b["confidence"], b["accuracy"]) for b in bins] == [(7, 2, 0.5, 0.0), (11, 4, 0.75, 1.0)]
    assert ece_from_bins(bins) == pytest.approx(1 / 3, abs=1e-12)
    # Brier, right at 0.75: 0.25^2 + 9 (0.25/9)^2; wrong at 0.5 (label gets 0.5/9): 0.5^2 + (1 - 0.5/9)^2 + 8 (0.5/9)^2
    right, wrong = 0.0625 + 9 * (0.25 / 9) ** 2, 0.25 + (1 - 0.5 / 9) ** 2 + 8 * (0.5 / 9) ** 2
    probs = probs_with_top([0.75] * 4 + [0.5] * 2, [0] * 6, dtype=torch.float64)
    assert brier(probs, labels) == pytest.approx((4 * right + 2 * wrong) / 6, rel=1e-12)
    assert nll(probs.log(), labels) == pytest.approx(-(4 * math.log(0.75) + 2 * math.log(0.5 / 9)) / 6, rel=1e-12)


def test_confidence_of_exactly_one_has_its_own_bin_as_in_torchmetrics():
    probs = torch.zeros(3, 10)
    probs[:, 0] = 1.0
    labels = torch.tensor([0, 0, 1])
    bins = reliability_bins(probs, labels)
    assert [(b["bin"], b["lo"], b["hi"], b["n"]) for b in bins] == [(15, 1.0, 1.0, 3)]
    assert ece(probs, labels) == pytest.approx(1 / 3, abs=4e-8) == ece_from_bins(bins)


@pytest.mark.parametrize("scale", [0.2, 1.0, 5.0])
def test_temperature_scaling_never_raises_nll_where_fitted(scale):
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (500,), generator=g)
    logits = torch.randn(500, 10, generator=g)
    logits[torch.arange(500), labels] += 2.0  # informative logits
    logits *= scale  # 5: overconfident, 0.2: underconfident
    t = fit_temperature(logits, labels)
    assert nll(logits / t, labels) <= nll(logits, labels)
    if scale == 5.0:
        assert t > 1
    if scale == 0.2:
        assert t < 1
    after = calibration_metrics(logits, labels, t)
    assert after["accuracy"] == calibration_metrics(logits, labels)["accuracy"]  # T never changes the argmax


def test_temperature_of_a_two_point_case_by_hand():
    """Two classes, logits (a, 0) with label 0 right in a share q of images: the NLL is least where sigmoid(a / T) = q."""
    a, q = 4.0, 0.8
    logits = torch.tensor([[a, 0.0]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(a / math.log(q / (1 - q)), rel=1e-6)


# ---------------------------------------------------------------- the report's numbers


def test_wilson_interval_by_hand():
    # 0 of 50: upper = z^2 / (n + z^2)
    low, high = wilson(0, 50)
    assert low == 0.0 and high == pytest.approx(Z95**2 / (50 + Z95**2), rel=1e-9)
    # 8 of 10: (p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    p, n, z = 0.8, 10, Z95
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(8, 10) == pytest.approx(((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)), rel=1e-9)


def test_corruption_errors_by_hand():
    assert corruption_error([0.2, 0.4], [0.4, 0.6]) == pytest.approx(0.6)
    # added errors: model 0.1 + 0.3 over baseline 0.2 + 0.4
    assert relative_corruption_error([0.2, 0.4], 0.1, [0.4, 0.6], 0.2) == pytest.approx(0.4 / 0.6)
    assert math.isnan(corruption_error([0.1], [0.0])) and math.isnan(relative_corruption_error([0.3], 0.1, [0.2], 0.2))


def test_separated_and_verdicts():
    assert separated([3, 4], [1, 2]) == 1 and separated([1, 2], [3, 4]) == -1 and separated([1, 3], [2, 4]) == 0
    assert separated([5], [1, 2]) == 1 and separated([5], [1]) == 0 and separated([], [1, 2]) == 0
    # loses less than every baseline seed: more robust, whatever the accuracy
    assert robustness_verdict([0.8, 0.81], [0.7, 0.71], [0.05, 0.06], [0.1, 0.11]) == "more robust"
    assert robustness_verdict([0.8, 0.81], [0.7, 0.71], [0.12, 0.13], [0.1, 0.11]) == "less robust"
    # higher accuracy, losses overlap: only more accurate
    assert robustness_verdict([0.8, 0.81], [0.7, 0.71], [0.1, 0.12], [0.09, 0.11]) == "only more accurate"
    assert robustness_verdict([0.6, 0.61], [0.7, 0.71], [0.1, 0.12], [0.09, 0.11]) == "only less accurate"
    assert robustness_verdict([0.7, 0.72], [0.71, 0.73], [0.1, 0.12], [0.09, 0.11]) == "no measured difference"


def test_family_scores_by_hand():
    rows = []
    for group, model, clean, errs in (("mlp", "m1", 0.9, [0.8, 0.6]), ("mlp", "m2", 0.8, [0.6, 0.4]), ("cnn", "c1", 0.95, [0.9, 0.75])):
        rows.append({"group": group, "model": model, "family": "clean", "severity": 0, "accuracy": clean})
        rows += [{"group": group, "model": model, "family": "blur", "severity": s + 1, "accuracy": a} for s, a in enumerate(errs)]
    s = family_scores(pd.DataFrame(rows), "cnn", "mlp", "blur")
    # cnn errors 0.1, 0.25 (clean 0.05); mlp mean errors 0.3, 0.5 (clean 0.15)
    assert s["accuracy"] == [pytest.approx(0.825)] and s["lost"] == [pytest.approx(0.125)]
    assert s["ce"] == [pytest.approx(0.35 / 0.8)] and s["rel_ce"] == [pytest.approx((0.05 + 0.2) / (0.15 + 0.35))]


def test_run_name():
    assert run_name("/x/lightning_logs/cnn/version_3/checkpoints/best.ckpt") == "cnn/version_3"
    assert run_name("weights/mlp.pth") == "mlp.pth"


# ---------------------------------------------------------------- command line


def one_error_line(capsys, argv) -> str:
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_bad_checkpoint_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    assert "bad.ckpt" in one_error_line(capsys, ["--checkpoint", str(bad), "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_unknown_backbone_one_error_line(tmp_path, capsys):
    weights = tmp_path / "model.pth"
    torch.save(nn.Linear(2, 2).state_dict(), weights)
    line = one_error_line(capsys, ["--weights", str(weights), "--backbone", "resnet999", "--out", str(tmp_path / "r")])
    assert "resnet999" in line
    assert "--out" in one_error_line(capsys, ["--weights", str(weights), "--backbone", "mlp"])


def test_report_end_to_end(tmp_path, run_dir, weights, make_tiny_data, capsys):
    """A real checkpoint and a model.pth through the command: the three parts, CSVs with a row per measurement."""
    data = make_tiny_data(tmp_path / "data")
    out = tmp_path / "report"
    argv = ["--checkpoint", str(run_dir / "last.ckpt"), "--weights", str(weights["cnn5"]), "--backbone", "cnn5",
            "--label", "mlp", "--label", "cnn5", "--out", str(out), "--data-dir", str(data), "--val-size", "40",
            "--corrupt-images", "8", "--attack-images", "8", "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    text = (out / "report.md").read_text()
    for heading in ("## 1. Corruptions", "## 2. Adversarial attacks", "## 3. Calibration", "## Time"):
        assert heading in text
    corr = pd.read_csv(out / "corruptions.csv")
    assert len(corr) == 2 * (1 + len(conditions()))
    adv = pd.read_csv(out / "adversarial.csv")
    assert len(adv) == 2 * 2 * 7 and set(adv.n) == {8}
    assert "eps = 0 gives the clean accuracy of the same images for 2 of 2 models" in text
    cal = pd.read_csv(out / "calibration.csv")
    assert set(cal.data) == {"validation", "test", "corrupted test"}
    for png in ("samples", "families", "severity", "attacks", "reliability"):
        assert (out / f"{png}.png").stat().st_size > 1000
    # again, from the cache: the same tables, nothing measured
    first = {name: (out / f"{name}.csv").read_text() for name in ("corruptions", "adversarial", "calibration", "reliability")}
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("measurements from") == 2
    assert first == {name: (out / f"{name}.csv").read_text() for name in first}


def test_calibration_and_attack_sentences_by_hand():
    from fashion_conv.research.robust.evaluate import Data
    from fashion_conv.research.robust.report import attack_section, calibration_section

    cal = pd.DataFrame([{"group": g, "model": f"{g}{k}", "data": d, "scaled": s, "temperature": 1.0, "accuracy": 0.9,
                         "ece": e + (0.0 if s == "before" else -0.005) + 0.001 * k, "nll": 0.3, "brier": 0.1}
                        for g, e in (("a", 0.03), ("b", 0.01)) for k in (0, 1) for d in ("test", "corrupted test")
                        for s in ("before", "after")])  # fmt: skip
    models = pd.DataFrame([{"group": g, "model": f"{g}{k}", "temperature": t} for g, t in (("a", 1.5), ("b", 1.1)) for k in (0, 1)])
    lines, summary = calibration_section(cal, models, ["a", "b"])
    # b's seeds 1.00 and 1.10 %, a's 3.00 and 3.10 %: b lowest, every seed below every seed of a
    assert summary[0] == "Lowest ECE on test before temperature scaling: b (1.05 ± 0.07 %); every seed below every seed of the next, a (3.05 ± 0.07 %)."
    assert "| a | 1.500 ± 0.000 |" in "\n".join(lines)
    adv = pd.DataFrame([{"group": "a", "model": "a0", "attack": at, "eps": e, "accuracy": acc, "correct": round(acc * 10), "n": 10,
                         "wilson_low": 0.0, "wilson_high": 1.0}
                        for at, accs in (("fgsm", (0.9, 0.5, 0.2)), ("pgd", (0.9, 0.6, 0.0))) for e, acc in zip((0.0, 0.1, 0.3), accs)])  # fmt: skip
    models = pd.DataFrame([{"group": "a", "model": "a0", "attack_clean_accuracy": 0.9}])
    _, checks = attack_section(adv, models, ["a"], Data((None, None), (None, None), 10, 10))
    assert checks[0].startswith("eps = 0 gives the clean accuracy of the same images for 1 of 1 models")
    assert checks[1] == "PGD ≤ FGSM at every eps for every model: no, at a eps 0.1."
    assert checks[2].startswith("PGD accuracy at eps 0.3: at most 0.0 %")


def test_fashion_conv_robust_runs_this_command(tmp_path, capsys):
    from fashion_conv import cli as console

    assert console.main(["robust", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "r")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'none.ckpt'}: no such file\n"


def test_pgd_sentences_by_hand():
    from fashion_conv.research.robust.report import pgd_sentences

    pgd = pd.DataFrame([{"group": g, "eps": e, "accuracy": acc} for g, e, acc in
                        (("m", 0.05, 0.30), ("m", 0.05, 0.36), ("c", 0.05, 0.08), ("c", 0.05, 0.17),
                         ("m", 0.1, 0.05), ("m", 0.1, 0.09), ("c", 0.1, 0.0), ("c", 0.1, 0.06))])  # fmt: skip
    assert pgd_sentences(pgd, "m", ["m", "c"], [0.05, 0.1]) == [
        "PGD, c against m, where every seed is beyond every seed: eps 0.05: 12.50 ± 6.36 % vs 33.00 ± 4.24 % (below)."]


def test_severity_means_by_hand():
    from fashion_conv.research.robust.report import severity_means

    corr = pd.DataFrame([{"group": "g", "model": m, "family": f, "severity": s, "accuracy": a} for m, f, s, a in
                         (("a", "clean", 0, 0.9), ("a", "blur", 1, 0.8), ("a", "noise", 1, 0.6), ("a", "flip", 1, 0.1),
                          ("b", "clean", 0, 0.8), ("b", "blur", 1, 0.7), ("b", "noise", 1, 0.4), ("b", "flip", 1, 0.3))])  # fmt: skip
    assert severity_means(corr, "g", ["blur", "noise"], 1) == [pytest.approx(0.7), pytest.approx(0.55)]  # flip left out
    assert severity_means(corr, "g", ["blur", "noise"], 0) == [0.9, 0.8]
