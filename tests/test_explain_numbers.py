"""Every number of the explain report, pinned on a case small enough to work out by hand.

Each table and CSV column of ``python -m fashion_conv.research.explain`` comes from one function tested here; each
test gives its hand computation. Float32 results of order 1 pass through a few roundings (a norm, a division, a
mean, a standard deviation), each off by at most eps/2: ``close`` allows 8 eps, relative or absolute.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fashion_conv.models.backbones import count_parameters
from fashion_conv.research.explain import (
    accuracy,
    completeness_gap,
    completeness_rows,
    confident_errors,
    confusion_pairs,
    equivariance_errors,
    first_layer_filters,
    integrated_gradients,
    layer_labels,
    most_active_channels,
    relative_error,
    spatial_layers,
    worst_per_class,
)  # fmt: skip
from fashion_conv.research.explain.report import csv_text, one_per_class
from fashion_conv.research.explain.tables import agreement_table, confusions_text, equivariance_table, ig_delta_table, models_table

EPS = torch.finfo(torch.float32).eps
R2 = math.sqrt(2)


def close(expected: float, eps: float = 8 * EPS):
    return pytest.approx(expected, rel=eps, abs=eps)


def dots(*images: list[tuple[int, int]], size: int = 8) -> torch.Tensor:
    """Black images (B, 1, size, size), each with a 1 at its given (row, column) pixels."""
    x = torch.zeros(len(images), 1, size, size)
    for i, pixels in enumerate(images):
        for r, c in pixels:
            x[i, 0, r, c] = 1.0
    return x


def summary(rows: list[dict]) -> list[tuple]:
    return [(r["label"], r["shift"], r["map_shift"], r["mean"], r["std"], r["n"], r["agreement"]) for r in rows]


# Equivariance. A 2x2 max-pool (stride 2, receptive field 2) of images with single lit pixels: the pooled map
# (4x4 for 8x8 images) has a 1 in the cell holding the pixel. When the shifted pixel lands in the cell T' predicts,
# the error is 0; else ||e_a - e_b|| / ||e_b|| = sqrt(2). Errors are listed right shifts first, then down shifts.
POOL_NET = nn.Sequential(nn.MaxPool2d(2), nn.Flatten())  # logits: the flattened pooled map, one-hot


def test_odd_shift_reports_the_floor_candidate_when_it_is_better():
    # A = pixel (0,0), B = (0,1); shift 1, candidates T' = 0 (floor) and 1 (ceil), circular.
    #   A right -> (0,1), cell (0,0): T'=0 exact, T'=1 sqrt2.  A down -> (1,0), cell (0,0): 0 | sqrt2.
    #   B right -> (0,2), cell (0,1): sqrt2 | 0.              B down -> (1,1), cell (0,0): 0 | sqrt2.
    #   T'=0: [0, sqrt2, 0, 0], mean sqrt2/4 = 0.354, sample std sqrt(((3 * 2/16) + 9 * 2/16) / 3) = sqrt2/2;
    #   T'=1: [sqrt2, 0, sqrt2, sqrt2], mean 3 sqrt2/4 = 1.061. Reported: T'=0.
    # Shift 2: T'=1, every pixel lands in the predicted cell: 0. Shift 3 (T' = 1 or 2): A -> cells (0,1), (1,0),
    #   exact for T'=1; B -> (0,2) exact for T'=2, (1,0) exact for T'=1: T'=1 gives [0, sqrt2, 0, 0] again.
    # Logits (compared unshifted): shift 1 moves only B's right copy to another cell: errors [0, sqrt2, 0, 0] and
    #   3 of 4 predictions kept; shifts 2 and 3 move every copy: errors sqrt2, std 0, no prediction kept.
    rows = equivariance_errors(POOL_NET, dots([(0, 0)], [(0, 1)]), shifts=(1, 2, 3), circular=True)
    assert summary(rows) == [
        ("pool1", 1, 0, close(R2 / 4), close(R2 / 2), 4, None), ("logits", 1, 0, close(R2 / 4), close(R2 / 2), 4, 0.75),
        ("pool1", 2, 1, 0.0, 0.0, 4, None), ("logits", 2, 0, close(R2), close(0.0), 4, 0.0),
        ("pool1", 3, 1, close(R2 / 4), close(R2 / 2), 4, None), ("logits", 3, 0, close(R2), close(0.0), 4, 0.0),
    ]  # fmt: skip
    assert [(r["stride"], r["receptive_field"]) for r in rows[:2]] == [(2, 2), (0, 8)]


def test_odd_shift_reports_the_ceil_candidate_when_it_is_better_and_the_floor_on_a_tie():
    # B = (0,1) as above: T'=0 [sqrt2, 0], T'=1 [0, sqrt2] (right, down). C = (1,1): right -> (1,2), cell (0,1);
    # down -> (2,1), cell (1,0): T'=0 [sqrt2, sqrt2], T'=1 [0, 0].
    # [B, C]: T'=0 [sqrt2, sqrt2, 0, sqrt2] mean 3 sqrt2/4; T'=1 [0, 0, sqrt2, 0] mean sqrt2/4: T'=1.
    # [B] alone: both means sqrt2/2, a tie, which goes to the floor; std of [sqrt2, 0] = 1.
    both = equivariance_errors(POOL_NET, dots([(0, 1)], [(1, 1)]), shifts=(1,), circular=True)
    assert summary(both)[0] == ("pool1", 1, 1, close(R2 / 4), close(R2 / 2), 4, None)
    alone = equivariance_errors(POOL_NET, dots([(0, 1)]), shifts=(1,), circular=True)
    assert summary(alone)[0] == ("pool1", 1, 0, close(R2 / 2), close(1.0), 2, None)


def test_zero_fill_leaves_out_border_units_for_both_candidates():
    # Zero fill, the pool alone (no logits). Margin ceil((2 - 1) / (2 * 2)) = 1 map position at both ends of the
    # axis the image moved along; T' also drops the T' columns it filled in: T'=0 keeps columns (or rows) 1-2, T'=1
    # keeps 2 (of 0-3).
    # B' = pixel (2,3), cell (1,1): right -> (2,4), cell (1,2): T'=0 sqrt2, T'=1 0; down -> (3,3), cell (1,1):
    #   T'=0 0; T'=1 compares row 2 only, where T'f(x) has its 1 and f(Tx) none: 1.
    # C' = pixels (2,2) and (2,7), cells (1,1) and (1,3): right -> (2,3) stays in cell (1,1), (2,8) leaves the image:
    #   T'=0 0 in columns 1-2 (1/sqrt2 if the border column 3 were compared); T'=1 column 2: 1. Down -> cells
    #   (1,1), (1,3) again: T'=0 0; T'=1 row 2: sqrt2 / sqrt2 = 1.
    # T'=0: [sqrt2, 0, 0, 0], mean sqrt2/4 (3 sqrt2/8 = 0.530 with the border); T'=1: [0, 1, 1, 1], mean 3/4.
    rows = equivariance_errors(nn.MaxPool2d(2), dots([(2, 3)], [(2, 2), (2, 7)]), shifts=(1,))
    assert summary(rows) == [("pool1", 1, 0, close(R2 / 4), close(R2 / 2), 4, None)]


@pytest.mark.parametrize("across", [True, False], ids=["columns", "rows"])
def test_relative_error_over_the_valid_region(across):
    # A 1x6 map shifted right by 1 (or its 6x1 transpose, down by 1). T'f(x) = [0, 1, 2, 3, 4, 5], f(Tx) =
    # [9, 9, 2, 3, 5, 9]. Margin 1: positions 2-4 (0 filled in, 1 and 5 at the border): ||(0, 0, 1)|| / ||(2, 3, 4)||
    # = 1 / sqrt(29). Margin 0: positions 1-5: ||(8, 0, 0, 1, 4)|| / ||(1, 2, 3, 4, 5)|| = 9 / sqrt(55).
    shape, step, margin = ((1, 1, 1, 6), (0, 1), (0, 1)) if across else ((1, 1, 6, 1), (1, 0), (1, 0))
    out = torch.tensor([1.0, 2, 3, 4, 5, 6]).reshape(shape)
    shifted = torch.tensor([9.0, 9, 2, 3, 5, 9]).reshape(shape)
    assert relative_error(shifted, out, *step, circular=False, margin=margin).item() == close(1 / math.sqrt(29))
    assert relative_error(shifted, out, *step, circular=False).item() == close(9 / math.sqrt(55))


def test_relative_error_circular_and_of_logits():
    # Circular: every column, T'f(x) = [6, 1, 2, 3, 4, 5]: ||(3, 8, 0, 0, 1, 4)|| / ||T'f(x)|| = sqrt(90 / 91).
    out = torch.tensor([1.0, 2, 3, 4, 5, 6]).reshape(1, 1, 1, 6)
    shifted = torch.tensor([9.0, 9, 2, 3, 5, 9]).reshape(1, 1, 1, 6)
    assert relative_error(shifted, out, 0, 1, circular=True).item() == close(math.sqrt(90 / 91))
    # Logits (B, K) are compared unshifted: ||(3, 5) - (3, 4)|| / ||(3, 4)|| = 1/5.
    assert relative_error(torch.tensor([[3.0, 5.0]]), torch.tensor([[3.0, 4.0]]), 0, 0, circular=False).item() == close(0.2)


def test_receptive_field_and_stride_with_dilation_and_a_stride_1_pool():
    # conv k=3, stride 2, dilation 2: r = 1 + (3 - 1) * 2 * 1 = 5, jump 2; ReLU: unchanged; avg-pool k=3, stride 1:
    # r = 5 + (3 - 1) * 1 * 2 = 9, jump 2. Sizes: (16 + 4 - 4 - 1) // 2 + 1 = 8, then 8 - 3 + 1 = 6.
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, dilation=2, padding=2), nn.ReLU(), nn.AvgPool2d(3, stride=1))
    layers = spatial_layers(net, torch.zeros(1, 1, 16, 16))
    assert [(s.kind, s.stride, s.receptive_field, s.size) for s in layers] == [("conv", 2, 5, 8), ("relu", 2, 5, 8), ("pool", 2, 9, 6)]
    assert list(layer_labels(layers).values()) == ["conv1", "conv1+relu", "pool1"]


def test_equivariance_and_agreement_tables():
    rows = [{"model": "toy", **r} for r in equivariance_errors(POOL_NET, dots([(0, 0)], [(0, 1)]), shifts=(1, 2, 3), circular=True)]
    assert equivariance_table(rows) == [
        "| model | layer | stride | receptive field | shift 1 | shift 2 | shift 3 |", "|---|---|---|---|---|---|---|",
        "| toy | pool1 | 2 | 2 | 0.354 ± 0.707 | 0.000 ± 0.000 | 0.354 ± 0.707 |",
        "| toy | logits | - | 8 | 0.354 ± 0.707 | 1.414 ± 0.000 | 1.414 ± 0.000 |",
    ]  # fmt: skip
    assert agreement_table(rows) == ["| model | shift 1 | shift 2 | shift 3 |", "|---|---|---|---|", "| toy | 75.0% | 0.0% | 0.0% |"]
    # Rows in any order: the columns follow the sorted shifts.
    mixed = [{"model": "m", "label": "logits", "stride": 0, "receptive_field": 28, "shift": s, "mean": s / 10, "std": 0.0, "agreement": s / 4} for s in (2, 1)]
    assert equivariance_table(mixed)[2:] == ["| m | logits | - | 28 | 0.100 ± 0.000 | 0.200 ± 0.000 |"]
    assert agreement_table(mixed)[2:] == ["| m | 25.0% | 50.0% |"]


def test_agreement_is_an_exact_fraction():
    # 2000 comparisons, 1693 kept: 0.8465 exactly as the CSV writes it, so the table and the CSV round alike (84.7 %);
    # a float32 mean gives 0.84649998 and 84.6 %.
    rows = [{"model": "m", "label": "logits", "shift": 1, "agreement": 1693 / 2000}]
    assert agreement_table(rows)[-1] == "| m | 84.7% |"
    # Shift 1 of B = (0,1) and twice C = (1,1) (see above): only B's down copy stays in its cell: 1 of 6 kept.
    x = dots([(0, 1)], [(1, 1)], [(1, 1)])
    assert equivariance_errors(POOL_NET, x, shifts=(1,), circular=True)[-1]["agreement"] == 1 / 6


# Integrated Gradients. For f(x) = w . x + b the gradient is w everywhere: IG_i = x_i w_i, summing to f(x) - f(0).
class Square(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z**2


def linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 0.5, 2.0]]))
        model[1].bias.copy_(torch.tensor([0.5, -1.0]))
    return model.eval()


IMAGES = torch.tensor([[0.25, 0.5, 0.75, 1.0], [0.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 2, 2)
TARGETS = torch.tensor([0, 1])


def test_integrated_gradients_of_a_linear_model_is_input_times_weight():
    # Image 1, class 0: x * w0 = [0.25, 1, 2.25, 4], sum 7.5. Image 2, class 1: x * w1 = [0, 0, 0.5, 2], sum 2.5.
    # The maps are the step weights (summing to 1 up to rounding) times x * w, summed in float32 over 8 steps.
    maps, delta = integrated_gradients(linear_model(), IMAGES, TARGETS, steps=8)
    expected = torch.tensor([[[0.25, 1.0], [2.25, 4.0]], [[0.0, 0.0], [0.5, 2.0]]])
    torch.testing.assert_close(maps, expected, rtol=16 * EPS, atol=0)
    assert delta.abs().max().item() <= 16 * EPS * 7.5
    # The logit gap is exact: 7.5 + 0.5 - 0.5 and 2.5 - 1 + 1 are sums of dyadic numbers.
    assert completeness_gap(linear_model(), IMAGES, TARGETS).tolist() == [7.5, 2.5]


def test_integrated_gradients_maps_sum_over_channels():
    # Two channels, both image 1 of the test above; weights (1, 2, 3, 4) and (1, 1, 1, 1): map = x * (w_a + w_b) =
    # [0.25 * 2, 0.5 * 3, 0.75 * 4, 1 * 5] = [0.5, 1.5, 3, 5].
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 1, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2, 3, 4, 1, 1, 1, 1]]))
    maps, _ = integrated_gradients(model, IMAGES[:1].repeat(1, 2, 1, 1), torch.tensor([0]), steps=8)
    torch.testing.assert_close(maps[0], torch.tensor([[0.5, 1.5], [3.0, 5.0]]), rtol=16 * EPS, atol=0)


def test_integrated_gradients_integrates_along_the_path():
    # f(x) = (w . x)^2 with w = (1, 2, 3, 4): along x(a) = a x the gradient is 2 a (w . x) w, so
    # IG_i = (w . x) w_i x_i (half of gradient x input, which is 2 (w . x) w_i x_i). Image 1: w . x = 7.5,
    # IG = 7.5 * [0.25, 1, 2.25, 4] = [1.875, 7.5, 16.875, 30], sum 56.25 = f(x) - f(0). Gauss-Legendre is exact for
    # this linear integrand.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, bias=False), Square()).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    maps, delta = integrated_gradients(model, IMAGES[:1], torch.tensor([0]), steps=8)
    torch.testing.assert_close(maps[0], torch.tensor([[1.875, 7.5], [16.875, 30.0]]), rtol=16 * EPS, atol=0)
    assert abs(delta.item()) <= 16 * EPS * 56.25
    assert completeness_gap(model, IMAGES[:1], torch.tensor([0])).item() == 56.25


def test_completeness_rows_and_their_table():
    # Map sums 1 + 3 = 4 and 0.25; |delta| / |gap|: 0.03 / 2 = 0.015 and 0.01 / 0.25 = 0.04; a gap of 0 counts as 1e-12.
    maps = torch.tensor([[[1.0, 3.0]], [[0.25, 0.0]], [[0.0, 0.0]]])
    rows = completeness_rows(maps, torch.tensor([2.0, -0.25, 0.0]), torch.tensor([-0.03, 0.01, 1e-6]))
    assert [(r["ig_sum"], r["logit_gap"]) for r in rows] == [(4.0, 2.0), (0.25, -0.25), (0.0, 0.0)]
    assert [r["delta"] for r in rows] == [close(-0.03, EPS), close(0.01, EPS), close(1e-6, EPS)]
    assert [r["relative_delta"] for r in rows] == [close(0.015, EPS), close(0.04, EPS), close(1e6, EPS)]
    # Per model, the largest |delta| (the first row's, negative) and the largest ratio (the second row's).
    table = ig_delta_table([{"model": "a", **r} for r in rows[:2]] + [{"model": "b", "delta": 2e-4, "relative_delta": 1e-4}])
    assert table == ["| model | max abs delta | max delta / logit gap |", "|---|---|---|", "| a | 3.00e-02 | 4.00e-02 |", "| b | 2.00e-04 | 1.00e-04 |"]


# Models, filters, feature maps.
def test_accuracy_parameters_and_the_models_table():
    # Argmax per row: 1, 0, 2 against labels 1, 1, 1: one of three, exactly 1/3 (a count over N).
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    assert accuracy(probs, torch.tensor([1, 1, 1])) == 1 / 3
    # conv 1 -> 2 channels, 3x3: 2 * 9 + 2 = 20; linear 8 -> 3: 8 * 3 + 3 = 27.
    assert count_parameters(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))) == 47
    rows = [{"model": "cnn", "class": "CNN", "params": 421642, "test_acc": 0.9091, "images": 10000, "source": "a.ckpt"}]
    assert models_table(rows)[2:] == ["| cnn | CNN | 421,642 | 90.91% | `a.ckpt` |"]


def test_first_layer_filters_on_fixed_weights():
    # Conv weight w[o, i, r, c] = 8o + 4i + 2r + c, summed over the 2 input channels: 16o + 4 + 4r + 2c.
    conv = nn.Conv2d(2, 3, 2)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24.0).reshape(3, 2, 2, 2))
    kernels, kind = first_layer_filters(conv, limit=2)
    assert kind == "conv 2x2" and kernels.tolist() == [[[4, 6], [8, 10]], [[20, 22], [24, 26]]]
    # Linear rows with norms 1, 3, 2: the two largest, largest first, as 2x2 pictures.
    linear = nn.Linear(4, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 3, 0, 0], [0, 0, -2, 0]]))
    rows, kind = first_layer_filters(linear, image_size=(2, 2), limit=2)
    assert kind == "linear rows" and rows.tolist() == [[[0, 3], [0, 0]], [[0, 0], [-2, 0]]]


def test_most_active_channels_by_mean_activation():
    # Channel means over 2 images x 2 positions: c0 (1+1+1+1)/4 = 1, c1 5/4 = 1.25, c2 (3+3)/4 = 1.5
    # (by maximum, c1 would come first: 5 > 3).
    fmap = torch.tensor([[[[1.0, 1]], [[5, 0]], [[0, 0]]], [[[1, 1]], [[0, 0]], [[3, 3]]]])  # (2, 3, 1, 2)
    assert most_active_channels(fmap, 2) == [2, 1]


# Mistakes.
PROBS = torch.tensor([
    [0.1, 0.7, 0.2], [0.2, 0.1, 0.7], [0.05, 0.9, 0.05], [0.6, 0.3, 0.1],  # true class 0: wrong, wrong, wrong, right
    [0.8, 0.1, 0.1],  # true class 1: predicted 0
    [0.1, 0.1, 0.8],  # true class 2: right
])  # fmt: skip
LABELS = torch.tensor([0, 0, 0, 0, 1, 2])


def test_confident_errors_and_the_worst_per_class():
    # Class 0's mistakes: images 0 (0.7 for class 1), 1 (0.7 for class 2), 2 (0.9 for class 1). Most confident
    # first, the tie by index: 2, 0. Class 1: image 4 (0.8 for class 0). Class 2: none.
    rows = confident_errors(PROBS, LABELS, per_class=2)
    assert [(r["index"], r["true"], r["predicted"]) for r in rows] == [(2, 0, 1), (0, 0, 1), (4, 1, 0)]
    assert [(r["confidence"], r["p_true"]) for r in rows] == [(close(0.9, EPS), close(0.05, EPS)), (close(0.7, EPS), close(0.1, EPS)), (close(0.8, EPS), close(0.1, EPS))]
    assert [r["index"] for r in worst_per_class(rows)] == [2, 4]


def test_tied_mistakes_and_confusions_come_in_index_order():
    # 41 mistakes of class 0 (predicted 1): image 40 at 0.9, the others at 0.6. Top 3: 40, then 0 and 1 by index
    # (an unstable sort reorders ties this many).
    probs = torch.tensor([[0.4, 0.6]] * 40 + [[0.1, 0.9]])
    assert [r["index"] for r in confident_errors(probs, torch.zeros(41, dtype=torch.long))] == [40, 0, 1]
    # Every off-diagonal (true, predicted) pair of 10 classes once, and 3 -> 5 a second time: 3 -> 5 (2), then the
    # first four pairs in (true, predicted) order.
    pairs = [(t, p) for t in range(10) for p in range(10) if t != p] + [(3, 5)]
    labels, predicted = torch.tensor(pairs).T
    top = confusion_pairs(nn.functional.one_hot(predicted, 10).float(), labels)
    assert top == [(3, 5, 2), (0, 1, 1), (0, 2, 1), (0, 3, 1), (0, 4, 1)]


def test_confusion_pairs_and_their_text():
    # Predicted (argmax) 1, 2, 1, 0 | 0 | 2 against 0, 0, 0, 0 | 1 | 2: errors 0->1 twice, 0->2 once, 1->0 once;
    # the right answers (0->0, 2->2) are not confusions.
    assert confusion_pairs(PROBS, LABELS, top=2) == [(0, 1, 2), (0, 2, 1)]
    labels = torch.tensor([0, 1, 0, 0, 1, 2])  # now 0->1 twice (images 0, 2), 1->2 (1), 1->0 (4); no more pairs
    assert confusion_pairs(PROBS, labels) == [(0, 1, 2), (1, 0, 1), (1, 2, 1)]  # ties in (true, predicted) order
    assert confusions_text([(0, 1, 2), (1, 0, 1)]) == "T-shirt/top → Trouser (2), Trouser → T-shirt/top (1)"


def test_one_image_per_class_and_csv_cells():
    # Classes 0, 1, 2 first appear at indices 1, 3, 0.
    assert one_per_class(torch.tensor([2, 0, 2, 1, 0])).tolist() == [1, 3, 0]
    rows = [{"model": "a", "n": 2000, "mean": 0.123456789, "agreement": None}, {"model": "b", "n": 4, "mean": 1e-7, "agreement": 0.75}]
    assert csv_text(rows) == "model,n,mean,agreement\na,2000,0.123457,\nb,4,1e-07,0.75\n"
