"""Export: TorchScript and torch.export programs give the backbone's logits; the export command."""

from __future__ import annotations

import pytest
import torch

from fashion_conv import list_backbones, load_backbone
from fashion_conv.export import export_program, export_torchscript
from fashion_conv.export import main as export_main


@pytest.mark.parametrize("name", list_backbones())
def test_exports_give_the_same_logits(name, weights, tmp_path):
    net = load_backbone(weights[name], name)
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x)
        scripted = torch.jit.load(str(export_torchscript(net, tmp_path / "model.ts.pt")))
        assert torch.allclose(scripted(x), expected, atol=1e-6)
        program = torch.export.load(export_program(net, tmp_path / "model.pt2")).module()
        assert torch.allclose(program(x), expected, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2", "model.ts.pt"]  # no temporary files left


def test_export_cli(run_dir, tmp_path, capsys):
    assert export_main(["--checkpoint", str(run_dir / "last.ckpt"), "-o", str(tmp_path / "model.ts.pt")]) == 0
    assert "wrote" in capsys.readouterr().out
    net = load_backbone(run_dir / "model.pth", "mlp")
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "model.ts.pt"))(x), net(x), atol=1e-6)
    assert export_main(["--checkpoint", str(tmp_path / "nope.ckpt"), "-o", str(tmp_path / "x.pt")]) == 1
    assert capsys.readouterr().err.startswith("error: ")
