"""The fast paths compute what the plain path computes, and the benchmark reports every figure (never how fast)."""

import re

import pytest
import torch

from fashion_conv import FashionClassifier, FashionMNISTDataModule, build_backbone, list_backbones
from fashion_conv.research.bench import main as bench_main
from fashion_conv.data.datamodule import InMemoryImages


@pytest.mark.parametrize("name", list_backbones())
def test_channels_last_gives_the_same_logits_and_gradients(name):
    torch.manual_seed(0)
    plain = FashionClassifier(backbone=name, channels_last=False)
    fast = FashionClassifier(backbone=name, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    out_plain, out_fast = plain(x), fast(x)
    assert torch.allclose(out_plain, out_fast, atol=1e-5)
    torch.nn.functional.cross_entropy(out_plain, y).backward()
    torch.nn.functional.cross_entropy(out_fast, y).backward()
    for (k, p), q in zip(plain.named_parameters(), fast.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), k


def test_bf16_autocast_agrees_with_fp32():
    torch.manual_seed(0)
    net = build_backbone("cnn").eval()
    x = torch.rand(256, 1, 28, 28)
    with torch.no_grad():
        full = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = net(x).float()
    assert torch.allclose(full, half, rtol=0.05, atol=0.05)
    assert (full.argmax(1) == half.argmax(1)).float().mean() > 0.95


def test_batch_slicing_equals_per_sample_indexing():
    images = torch.randint(0, 256, (50, 1, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (50,))
    data = InMemoryImages(images, labels)
    idx = [3, 17, 0, 49, 17]
    x, y = data.__getitems__(idx)
    assert torch.equal(x, torch.stack([data[i][0] for i in idx])) and torch.equal(y, labels[idx])
    assert x.dtype == torch.float32 and x.max() <= 1.0
    assert data.to(torch.device("cpu")) is data  # on the CPU the data already lives where it trains


def test_data_on_device_keeps_batches_identical(tiny_data_dir):
    import lightning as L

    batches = []
    for on_device in (True, False):
        dm = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16, shuffle_seed=3, data_on_device=on_device)
        dm.trainer = L.Trainer(accelerator="cpu", logger=False)
        dm.setup("fit")
        batches.append(next(iter(dm.train_dataloader())))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


@pytest.mark.slow
def test_benchmark_prints_the_readme_markdown_table(tiny_data_dir, capsys):
    args = ["--backbones", "mlp", "--repeats", "1", "--train-size", "100", "--val-size", "20", "--scale", "40,80",
            "--data-dir", str(tiny_data_dir), "--threads", "1"]  # fmt: skip
    assert bench_main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: CPU ") and "1 torch threads" in out
    assert "| backbone | variant | s/epoch | samples/s | peak RSS (MB) | test acc after 1 epoch | time vs reference | time vs plain | µs/step over plain |" in out
    cells = r"\| ([\d.]+) \| ([\d,]+) \| (\d+) \| ([\d.]+) % \| ([\d.]+)x \| ([\d.]+)x \| ([+-]\d+)? \|"
    for variant in ("reference", "plain", "fit", "fit-fast"):
        row = re.search(rf"^\| mlp \| {variant} {cells}$", out, re.M)
        assert row, f"no row for {variant}:\n{out}"
        seconds, per_second, peak, acc, vs_ref, vs_plain, over = row.groups()
        assert float(seconds) > 0 and int(per_second.replace(",", "")) > 0 and int(peak) > 0 and 0 <= float(acc) <= 100
        assert (vs_ref == "1.00") == (variant == "reference") and (vs_plain == "1.00") == (variant == "plain")
        assert (over is not None) == (variant == "fit")
    assert re.search(r"cold parse of the train CSV [\d.]+ s, warm start from the cache [\d.]+ s", out)
    assert re.findall(r"^\| mlp \| (\d+) \| [\d.]+ \| [\d.]+ \|$", out, re.M) == ["40", "80"]
    assert "[" not in out  # no raw Python lists


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backbones", "resnet"], "error: --backbones: unknown backbone(s) resnet; choose from cnn, cnn5"),
        (["--variants", "fit,fastest"], "error: --variants: unknown variant(s) fastest; choose from reference, plain, fit, fit-fast"),
        (["--repeats", "0"], "error: --repeats must be positive, got 0"),
        (["--epochs", "two"], "error: argument --epochs: invalid int value: 'two'"),
    ],
)
def test_bad_benchmark_command_lines_give_one_error_line(tiny_data_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        bench_main([*args, "--data-dir", str(tiny_data_dir)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err


def test_benchmark_help_names_every_option_in_plain_text(capsys):
    with pytest.raises(SystemExit):
        bench_main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    chunks = out.split("options:")[1].split("\n  --")[1:]  # one per option: its flag, metavar and help text
    assert len(chunks) == 10 and all(len(chunk.split()) >= 5 for chunk in chunks), out


def test_benchmark_needs_the_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_main(["--data-dir", str(tmp_path)])
    assert capsys.readouterr().err.startswith(f"error: --data-dir: {tmp_path}/processed/fashion-mnist-train.csv")


@pytest.mark.parametrize("backbone", ["mlp", "cnn"])
def test_fit_trains_the_weights_a_plain_loop_trains(tiny_data_dir, backbone):
    """fit's whole path (fused Adam, channels-last, batches cut from uint8, Lightning's loop) against hand-written
    loops over the same batches, with a tolerance that float rounding sets on this CPU, not a constant.

    Two plain loops that differ only in kernel choice (fused Adam and NHWC convs, or per-tensor Adam and NCHW) measure
    what rounding can do here; fit must agree with both within 4x that. A loop that swaps two batches must not: it
    shows the tolerance still tells a wrong batch from rounding (on an Intel Xeon, rounding moves each tensor by
    1e-7 to 2e-5 of its training distance, a swapped batch by 8e-3 to 7e-2)."""
    import lightning as L

    L.seed_everything(7)
    model = FashionClassifier(backbone=backbone)
    start = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    data = FashionMNISTDataModule(tiny_data_dir, val_size=20, batch_size=16, shuffle_seed=3)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert trainer.optimizers[0].defaults["fused"] is True and trainer.global_step == 2 * 7  # 100 images, batches of 16
    trained = model.backbone.state_dict()

    images, labels = data.train_set.images, data.train_set.labels
    batches = []  # the sample indices of each of fit's 14 batches, in order
    for epoch in range(2):
        sampler = data.train_dataloader().sampler
        sampler.set_epoch(epoch)
        batches += torch.tensor(list(sampler)).split(16)

    def plain_loop(fast_kernels: bool, order: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        net = build_backbone(backbone)
        net.load_state_dict(start)
        layout = torch.channels_last if fast_kernels else torch.contiguous_format
        net.to(memory_format=layout)
        adam = {"fused": True} if fast_kernels else {"foreach": False}  # one fused kernel, or the per-tensor loop
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, **adam)
        for idx in order:
            loss = torch.nn.functional.cross_entropy(net((images[idx].float() / 255).contiguous(memory_format=layout)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return net.state_dict()

    def distance(a: dict, b: dict) -> dict[str, float]:
        """Per tensor: how far apart two trained copies are, relative to how far training moved the weights."""
        return {k: ((a[k] - b[k]).norm() / (b[k] - start[k]).norm()).item() for k in b}

    fast, per_tensor = plain_loop(True, batches), plain_loop(False, batches)
    swapped = list(batches)
    swapped[8], swapped[9] = swapped[9], swapped[8]
    wrong = plain_loop(True, swapped)
    rounding = distance(per_tensor, fast)
    tolerance = {k: 4 * v + 1e-6 for k, v in rounding.items()}  # 1e-6: where both kernels round alike (a bias)
    for k, v in trained.items():
        assert not torch.equal(v, start[k]), k  # it trained
        assert distance(trained, fast)[k] <= tolerance[k], k
        assert distance(trained, per_tensor)[k] <= tolerance[k], k
        assert distance(wrong, fast)[k] > tolerance[k], k  # a wrong batch is more than rounding
