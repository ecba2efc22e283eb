"""Every registered backbone honours the same contract; the notebook's three keep their exact sizes."""

import pytest
import torch
from torch import nn

from fashion_conv.utils.errors import FashionConvError
from fashion_conv.models.backbones import build_backbone, count_parameters, list_backbones, load_backbone, register_backbone

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


def test_a_registered_builder_is_built_by_its_name():
    from fashion_conv.models.backbones import _REGISTRY

    register_backbone("test-only-identity")(nn.Identity)
    try:
        assert isinstance(build_backbone("test-only-identity"), nn.Identity)
    finally:
        del _REGISTRY["test-only-identity"]


def test_load_backbone_passes_its_kwargs_on(tmp_path):
    torch.save(build_backbone("convnet", hidden=0).state_dict(), tmp_path / "model.pth")
    assert count_parameters(load_backbone(tmp_path / "model.pth", "convnet", hidden=0)) == 50_186


def plain_forward(name: str, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The notebook's networks written out with torch.nn.functional, on ``net``'s weights."""
    import torch.nn.functional as F

    w = net.state_dict()
    if name == "mlp":
        return F.linear(F.relu(F.linear(x.flatten(1), w["model.1.weight"], w["model.1.bias"])), w["model.3.weight"], w["model.3.bias"])
    if name == "cnn5":
        h = F.max_pool2d(F.relu(F.conv2d(x, w["conv.0.weight"], w["conv.0.bias"], padding=2)), 2)  # (B, 32, 14, 14)
        return F.linear(h.flatten(1), w["fc.1.weight"], w["fc.1.bias"])
    h = F.max_pool2d(F.relu(F.conv2d(x, w["conv.0.weight"], w["conv.0.bias"], padding=1)), 2)  # (B, 32, 14, 14)
    h = F.max_pool2d(F.relu(F.conv2d(h, w["conv.3.weight"], w["conv.3.bias"], padding=1)), 2)  # (B, 64, 7, 7)
    return F.linear(F.relu(F.linear(h.flatten(1), w["fc.1.weight"], w["fc.1.bias"])), w["fc.3.weight"], w["fc.3.bias"])


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn5", "convnet"])
def test_the_notebook_networks_compute_what_they_say(name):
    torch.manual_seed(0)
    net, x = build_backbone(name), torch.rand(4, 1, 28, 28) - 0.5  # negative inputs too, so a missing ReLU shows
    assert torch.allclose(net(x), plain_forward("cnn" if name == "convnet" else name, net, x), atol=1e-5)


def test_convnet_defaults_build_cnn():
    convnet, cnn = build_backbone("convnet"), build_backbone("cnn")
    assert count_parameters(convnet) == NOTEBOOK_PARAMS["cnn"] and list(convnet.state_dict()) == list(cnn.state_dict())


@pytest.mark.parametrize(
    "kwargs,layers,params",
    [
        ({"kernel_size": 1, "channels": [1]}, ["Conv2d", "ReLU", "MaxPool2d"], 2 + 196 * 128 + 128 + 1290),
        ({"kernel_size": 5, "channels": [4, 8], "pooling": "avg", "hidden": 0}, ["Conv2d", "ReLU", "AvgPool2d"] * 2, 104 + 808 + 3930),
        ({"channels": [2], "pooling": "none", "hidden": 3}, ["Conv2d", "ReLU"], 20 + 1568 * 3 + 3 + 40),
    ],
)  # fmt: skip
def test_convnet_options_build_the_layers_they_name(kwargs, layers, params):
    net = build_backbone("convnet", **kwargs)
    assert [type(m).__name__ for m in net.conv] == layers and count_parameters(net) == params
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # 'same' padding and the feature count agree


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"kernel_size": 0}, "kernel_size must be odd and positive ('same' padding), got 0"),
        ({"kernel_size": 2}, "kernel_size must be odd and positive ('same' padding), got 2"),
        ({"pooling": "min"}, "pooling must be one of max, avg, none, got 'min'"),
        ({"channels": []}, "channels must be a non-empty list of positive counts, got []"),
        ({"channels": [4, 0]}, "channels must be a non-empty list of positive counts, got [4, 0]"),
    ],
)
def test_convnet_refuses_bad_options_with_one_clear_message(kwargs, message):
    from fashion_conv.models.backbones import ConvNet

    with pytest.raises(ValueError) as info:
        ConvNet(**kwargs)
    assert str(info.value) == message


def test_num_classes_is_passed_to_the_backbones_that_take_it_and_a_contradiction_is_refused():
    from fashion_conv import FashionClassifier
    from fashion_conv.models.classifier import _with_num_classes

    assert _with_num_classes("cnn", {}, 10) == {"num_classes": 10}  # a built-in backbone takes it
    assert _with_num_classes("cnn", {"dropout": 0.5}, 7) == {"dropout": 0.5, "num_classes": 7}
    assert _with_num_classes("cnn", {"num_classes": 7}, 7) == {"num_classes": 7}
    assert _with_num_classes("nets.TinyNet", {}, 10) == {}  # a class path gets it only when it is not the default
    assert _with_num_classes("nets.TinyNet", {}, 7) == {"num_classes": 7}
    with pytest.raises(ValueError, match=r"^backbone_kwargs num_classes=5 contradicts num_classes=7$"):
        _with_num_classes("cnn", {"num_classes": 5}, 7)
    with pytest.raises(FashionConvError, match="backbone_kwargs num_classes=5 contradicts num_classes=7"):
        FashionClassifier("mlp", backbone_kwargs={"num_classes": 5}, num_classes=7)
    assert FashionClassifier("mlp", backbone_kwargs={"num_classes": 7}, num_classes=7)(torch.rand(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize(
    "name, kwargs, kind",
    [
        ("mlp", {"hidden": None}, "NoneType"),
        ("convnet", {"channels": {32, 64}}, "set"),  # ints, but not a list: its order is not the layers'
        ("convnet", {"channels": [32, 64.0]}, "list"),
        ("convnet", {"channels": [32, True]}, "list"),
    ],
)
def test_backbone_kwargs_must_be_plain_values(name, kwargs, kind):
    key = next(iter(kwargs))
    with pytest.raises(ValueError) as info:
        build_backbone(name, **kwargs)
    assert str(info.value) == f"backbone_kwargs {key!r} is a {kind}; expected a number, string or list of integers"


def test_the_parameter_limit_allows_exactly_its_count(monkeypatch):
    from fashion_conv.models import backbones

    assert count_parameters(build_backbone("convnet", channels=(16,), hidden=0)) == 31_530
    monkeypatch.setattr(backbones, "MAX_PARAMETERS", 31_530)
    build_backbone("convnet", channels=(16,), hidden=0)
    monkeypatch.setattr(backbones, "MAX_PARAMETERS", 31_529)
    with pytest.raises(ValueError) as info:
        build_backbone("convnet", channels=[16], hidden=0)
    assert str(info.value) == "convnet with {'channels': [16], 'hidden': 0} has 31,530 parameters, more than the 31,529 allowed"


def test_the_model_asks_a_registered_builder_for_its_class_count_even_the_default():
    """A builder whose own default is another count still gets the model's ``num_classes`` (10 by default)."""
    from fashion_conv import FashionClassifier
    from fashion_conv.models.backbones import _REGISTRY

    register_backbone("test-only-three")(lambda num_classes=3: nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes)))
    try:
        assert FashionClassifier("test-only-three", channels_last=False)(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert build_backbone("test-only-three")(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    finally:
        del _REGISTRY["test-only-three"]
