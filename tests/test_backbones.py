"""Every registered backbone honours the same contract; the notebook's three keep their exact sizes."""

import pytest
import torch
from torch import nn

from fashion_conv.errors import FashionConvError
from fashion_conv.backbones import build_backbone, count_parameters, list_backbones, load_backbone, register_backbone

NOTEBOOK_PARAMS = {"mlp": 203_530, "cnn": 421_642, "cnn5": 63_562}


def test_registry_holds_the_notebook_models():
    assert set(NOTEBOOK_PARAMS) <= set(list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_contract_float_images_in_logits_out(name):
    net = build_backbone(name)
    assert not any(isinstance(m, nn.Module) and "lightning" in type(m).__module__ for m in net.modules())
    out = net(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10) and out.dtype == torch.float32
    out.sum().backward()  # differentiable end to end
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name,params", NOTEBOOK_PARAMS.items())
def test_notebook_parameter_counts(name, params):
    assert count_parameters(build_backbone(name)) == params


def test_state_dict_keys_match_the_notebook():
    # The notebook saved FashionMNISTCNN().state_dict(): conv.0/conv.3 and fc.1/fc.3
    assert list(build_backbone("cnn").state_dict()) == [
        "conv.0.weight", "conv.0.bias", "conv.3.weight", "conv.3.bias",
        "fc.1.weight", "fc.1.bias", "fc.3.weight", "fc.3.bias",
    ]  # fmt: skip


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown backbone 'resnet'.*cnn, cnn5, convnet, mlp"):
        build_backbone("resnet")


def test_class_path_builds_any_module():
    net = build_backbone("torch.nn.Identity")
    assert isinstance(net, nn.Identity)
    with pytest.raises(ValueError, match="cannot import backbone class 'no_such_pkg.Net'"):
        build_backbone("no_such_pkg.Net")


def test_class_path_must_be_a_module_class(tmp_path):
    # A checkpoint's hyperparameters name the backbone: a crafted one must not get to call anything else.
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="'os.system' is not an nn.Module class"):
        build_backbone("os.system", command=f"touch {marker}")
    assert not marker.exists()


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("cnn")(nn.Identity)


def test_load_backbone_round_trip(tmp_path):
    net = build_backbone("cnn5")
    torch.save(net.state_dict(), tmp_path / "model.pth")
    loaded = load_backbone(tmp_path / "model.pth", "cnn5")
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), net.eval()(x))
    with pytest.raises(FashionConvError, match="do not fit backbone 'mlp'"):
        load_backbone(tmp_path / "model.pth", "mlp")
