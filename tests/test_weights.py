"""Untrusted checkpoints: no module a checkpoint names is imported, backbone_kwargs are checked before any memory."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import REPO
from fashion_conv import FashionClassifier, build_backbone
from fashion_conv.utils.errors import FashionConvError
from fashion_conv.models.weights import load_model


def checkpoint(path, backbone="mlp", backbone_kwargs=None, state=None, **hparams):
    """A FashionClassifier-shaped checkpoint written by torch.save, as an attacker could write one."""
    if state is None:
        state = {f"backbone.{k}": v for k, v in build_backbone("mlp").state_dict().items()}
    hp = {"backbone": backbone, "backbone_kwargs": backbone_kwargs, "lr": 1e-3, **hparams}
    torch.save({"state_dict": state, "hyper_parameters": hp, "pytorch-lightning_version": "2.6.6"}, path)
    return path


def test_a_checkpoint_naming_a_module_never_imports_it(tmp_path):
    """unittest.__main__ runs test discovery and exits the process on import: the old main did exactly that."""
    (tmp_path / "planted.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    evil = checkpoint(tmp_path / "evil.ckpt", backbone="planted.Net")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from fashion_conv import FashionClassifier\n"
        "from fashion_conv.models.weights import load_model\n"
        "for load in (lambda: FashionClassifier.load_from_checkpoint(sys.argv[2], weights_only=True),\n"
        "             lambda: load_model(sys.argv[2])):\n"
        "    try: load()\n"
        "    except Exception as exc: print(type(exc).__name__, exc)\n"
        "print('caller still running')\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(evil)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.count("importing it runs that module's code") == 2, out.stdout + out.stderr
    assert "caller still running" in out.stdout
    assert not (tmp_path / "ran").exists()
    unittest_main = checkpoint(tmp_path / "u.ckpt", backbone="unittest.__main__.Net")
    with pytest.raises(FashionConvError, match="confirm with --backbone unittest.__main__.Net"):
        FashionClassifier.load_from_checkpoint(unittest_main, weights_only=True)


def test_a_class_path_the_caller_names_is_allowed(tmp_path):
    sys.path.insert(0, str(REPO / "tests"))
    from nets import TinyNet

    state = {f"backbone.{k}": v for k, v in TinyNet().state_dict().items()}
    ckpt = checkpoint(tmp_path / "tiny.ckpt", backbone="nets.TinyNet", state=state)
    assert isinstance(load_model(ckpt, backbone="nets.TinyNet"), TinyNet)
    model = FashionClassifier.load_from_checkpoint(ckpt, weights_only=True, backbone="nets.TinyNet")
    assert isinstance(model.backbone, TinyNet)


def test_registered_backbone_loads_as_the_readme_shows(tmp_path):
    ckpt = checkpoint(tmp_path / "mlp.ckpt", backbone_kwargs={"hidden": 256})
    model = FashionClassifier.load_from_checkpoint(ckpt, weights_only=True)
    assert model.num_params == 203_530


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"hidden": -1}, "negative dimension"),
        ({"hidden": 500_000}, "397,500,010 parameters, more than the 100,000,000 allowed"),
        ({"hidden": "os.system"}, "empty\\(\\)|must be|str"),
        ({"hidden": {"a": 1}}, "'hidden' is a dict"),
        ({"depth": 3}, "unexpected keyword argument 'depth'"),
    ],
)
def test_backbone_kwargs_from_a_checkpoint_are_checked_before_allocating(tmp_path, kwargs, problem):
    ckpt = checkpoint(tmp_path / "bad.ckpt", backbone_kwargs=kwargs)
    for load in (lambda: load_model(ckpt), lambda: FashionClassifier.load_from_checkpoint(ckpt, weights_only=True)):
        with pytest.raises(FashionConvError, match=problem):
            load()


@pytest.mark.parametrize("kwargs, kind", [(["hidden"], "list"), ({1: 256}, "dict")])
def test_backbone_kwargs_must_be_a_dict_of_names(tmp_path, kwargs, kind):
    ckpt = checkpoint(tmp_path / "k.ckpt", backbone_kwargs=kwargs)
    with pytest.raises(FashionConvError) as info:
        load_model(ckpt)
    assert str(info.value) == f"{ckpt}: backbone_kwargs must be a dict of names to values, got {kind}"


def test_a_foreign_instantiator_is_refused_and_lightnings_own_is_not(tmp_path):
    ckpt = checkpoint(tmp_path / "i.ckpt", _instantiator="os.system")
    with pytest.raises(FashionConvError, match="name code to run"):
        FashionClassifier.load_from_checkpoint(ckpt, weights_only=True)
    with pytest.raises(FashionConvError) as info:
        load_model(ckpt)
    assert str(info.value) == f"{ckpt}: refused: its hyper_parameters name code to run ('os.system')"
    cli = checkpoint(tmp_path / "cli.ckpt", _instantiator="lightning.pytorch.cli.instantiate_module")  # what fit writes
    assert sum(p.numel() for p in load_model(cli).parameters()) == 203_530
    assert FashionClassifier.load_from_checkpoint(cli, weights_only=True).num_params == 203_530


def test_a_model_pth_given_as_a_checkpoint_says_how_to_load_it(tmp_path):
    pth = tmp_path / "model.pth"
    torch.save(build_backbone("mlp").state_dict(), pth)
    with pytest.raises(FashionConvError) as info:
        load_model(pth)
    hint = f"; a model.pth goes with --weights {pth} --backbone NAME"
    assert str(info.value) == f"{pth}: not a FashionClassifier checkpoint (no backbone in its hyper_parameters){hint}"


def test_dependency_floors_keep_weights_only_safe():
    text = (REPO / "pyproject.toml").read_text()
    assert '"lightning>=2.6.6"' in text and '"torch>=2.6"' in text


def test_load_from_checkpoint_names_the_file_and_passes_arguments_on(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(FashionConvError) as info:
        FashionClassifier.load_from_checkpoint(bad, weights_only=True)
    assert str(info.value) == f"{bad}: not a FashionClassifier checkpoint (no backbone in its hyper_parameters)"
    ckpt = checkpoint(tmp_path / "mlp.ckpt")
    assert FashionClassifier.load_from_checkpoint(ckpt, weights_only=True, lr=0.5).hparams.lr == 0.5  # kwargs reach Lightning
    state = {f"backbone.{k}": v for k, v in build_backbone("mlp").state_dict().items()}
    extra = checkpoint(tmp_path / "extra.ckpt", state={**state, "backbone.unexpected": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        FashionClassifier.load_from_checkpoint(extra, weights_only=True)
    FashionClassifier.load_from_checkpoint(extra, None, None, False, weights_only=True)  # positional strict=False reaches Lightning


def test_weights_that_do_not_fit_say_how_and_name_the_file(tmp_path):
    from fashion_conv.models.weights import load_backbone

    mlp, narrow = tmp_path / "mlp.pth", tmp_path / "narrow.pth"
    torch.save(build_backbone("mlp").state_dict(), mlp)
    torch.save(build_backbone("mlp", hidden=8).state_dict(), narrow)
    cases = [
        (lambda: load_backbone(mlp, "cnn5"), f"{mlp}: weights do not fit backbone 'cnn5' (4 tensors missing, 4 unexpected); was it trained with another backbone or options?"),
        (lambda: load_backbone(narrow, "mlp"), f"{narrow}: weights do not fit backbone 'mlp' (tensor shapes differ); was it trained with another backbone or options?"),
        (lambda: load_model(weights=narrow, backbone="mlp"), f"{narrow}: weights do not fit backbone 'mlp' (tensor shapes differ); was it trained with another backbone or options?"),
    ]
    extra = tmp_path / "extra.pth"
    torch.save({**build_backbone("mlp").state_dict(), "extra": torch.zeros(1)}, extra)
    cases.append((lambda: load_backbone(extra, "mlp"), f"{extra}: weights do not fit backbone 'mlp' (0 tensors missing, 1 unexpected); was it trained with another backbone or options?"))
    ckpt = checkpoint(tmp_path / "m.ckpt", backbone_kwargs={"hidden": 8})  # its state holds the default 256-wide weights
    cases.append((lambda: load_model(ckpt), f"{ckpt}: weights do not fit backbone 'mlp' (tensor shapes differ); was it trained with another backbone or options?"))
    foreign = checkpoint(tmp_path / "c.ckpt", backbone="nets.TinyNet")
    cases.append((lambda: load_model(foreign, backbone="mlp"), f"{foreign}: holds a 'nets.TinyNet' backbone, but --backbone says 'mlp'"))
    for load, message in cases:
        with pytest.raises(FashionConvError) as info:
            load()
        assert str(info.value) == message


def test_load_model_needs_exactly_one_model_and_a_backbone_for_weights(tmp_path):
    pth = tmp_path / "model.pth"
    torch.save(build_backbone("mlp").state_dict(), pth)
    ckpt = checkpoint(tmp_path / "m.ckpt")
    cases = [
        ({}, "give a model: --checkpoint X.ckpt, or --weights model.pth with --backbone NAME"),
        ({"checkpoint": ckpt, "weights": pth}, "give a model: --checkpoint X.ckpt, or --weights model.pth with --backbone NAME"),
        ({"weights": pth}, f"--weights {pth} needs --backbone NAME (one of cnn, cnn5, convnet, mlp)"),
        ({"weights": ckpt, "backbone": "mlp"}, f"{ckpt}: is a Lightning checkpoint; pass it as --checkpoint {ckpt}"),
    ]
    for kwargs, message in cases:
        with pytest.raises(FashionConvError) as info:
            load_model(**kwargs)
        assert str(info.value) == message
    # A state dict that merely has a "state_dict" key is not taken for a Lightning checkpoint: it needs hyper_parameters too.
    odd = tmp_path / "odd.pth"
    torch.save({"state_dict": torch.zeros(1)}, odd)
    with pytest.raises(FashionConvError) as info:
        load_model(weights=odd, backbone="mlp")
    assert str(info.value) == f"{odd}: weights do not fit backbone 'mlp' (4 tensors missing, 1 unexpected); was it trained with another backbone or options?"


def test_the_backbone_option_lists_the_registered_names():
    import argparse

    from fashion_conv.models.weights import add_model_arguments

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert "backbone of --weights (cnn, cnn5, convnet, mlp, or a class path)" in " ".join(parser.format_help().split())


class Pickled:
    """An object that a full unpickler would build, so a weights-only load refuses it."""


def test_read_weights_file_says_what_is_wrong_with_a_file_exactly(tmp_path, monkeypatch):
    from fashion_conv.models.weights import read_weights_file

    def message(path):
        with pytest.raises(FashionConvError) as info:
            read_weights_file(path)
        return str(info.value)

    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    assert message(text) == f"{text}: not a PyTorch weights file, or a damaged one (UnpicklingError)"
    code = tmp_path / "code.pth"
    torch.save({"x": Pickled()}, code)
    assert message(code) == (
        f"{code}: refused: loading it would run Python code (test_weights.Pickled), so it is not plain weights; "
        "fashion_conv loads tensors only (torch.load weights_only=True)"
    )
    listed = tmp_path / "list.pth"
    torch.save([1], listed)
    assert message(listed) == f"{listed}: holds a list, expected a state dict or a Lightning checkpoint"
    assert message(tmp_path) == f"{tmp_path}: is a folder, expected a .ckpt or .pth file"
    assert message(tmp_path / "nope.pth") == f"{tmp_path / 'nope.pth'}: no such file"

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # root reads any file, so the refusal is simulated

    monkeypatch.setattr(torch, "load", denied)
    assert message(listed) == f"{listed}: not readable (permission denied)"


def test_weights_files_are_read_on_cpu_and_weights_only(tmp_path, monkeypatch):
    from fashion_conv.models.weights import read_weights_file

    calls, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or load(*a, **kw))
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    assert torch.equal(read_weights_file(tmp_path / "w.pth")["w"], torch.ones(2))
    assert calls == [{"map_location": "cpu", "weights_only": True}]  # a GPU run's file loads on a CPU machine
