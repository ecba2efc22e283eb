"""TensorBoard's HPARAMS tab: declared columns (the first 5 ticked by default), typed values, legible figures."""

import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hp_metadata

from fashion_conv.callbacks.dashboards import HPARAMS_SHOWN, class_counts_figure, log_hparams, recipe_text

NOTEBOOK = {"backbone": "cnn", "params": 421642, "seed": 42, "precision": "32-true", "epochs": 5, "lr": 1e-3,
            "lr_schedule": "none", "weight_decay": 0.0, "label_smoothing": 0.0, "tta_hflip": False, "batch_size": 64,
            "random_shift": 0, "hflip": False, "random_erasing": 0.0}  # fmt: skip
STRONG = {**NOTEBOOK, "epochs": 60, "lr": 3e-3, "lr_schedule": "onecycle", "weight_decay": 0.05, "label_smoothing": 0.1,
          "tta_hflip": True, "batch_size": 128, "random_shift": 2, "hflip": True, "precision": "bf16-mixed"}  # fmt: skip


def test_recipe_text():
    assert recipe_text(NOTEBOOK) == "Adam lr 0.001, batch 64, 32-true"
    assert recipe_text(STRONG) == "AdamW lr 0.003 wd 0.05 onecycle, batch 128, bf16-mixed, smoothing 0.1, shift 2, hflip, TTA"


def _hparams_events(run_dir):
    found = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    found[value.tag] = value.metadata.plugin_data.content
                elif value.tag.startswith("hp/"):
                    found[value.tag] = value.simple_value if value.HasField("simple_value") else value.tensor.float_val[0]
    return found


def test_experiment_config_and_session_values(tmp_path):
    log_hparams(tmp_path, STRONG, {"hp/val_acc": 0.9409, "hp/test_acc": 0.9402}, step=25800, trial_id="cnn/version_3")
    events = _hparams_events(tmp_path)
    experiment = hp_metadata.parse_experiment_plugin_data(events[hp_metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert set(infos) == {*STRONG, "recipe"}
    assert {name for name, info in infos.items() if info.differs} == set(HPARAMS_SHOWN)  # TensorBoard ticks these 5
    assert infos["tta_hflip"].type == infos["hflip"].type == api_pb2.DATA_TYPE_BOOL
    assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64 and infos["lr_schedule"].type == api_pb2.DATA_TYPE_STRING
    assert [m.name.tag for m in experiment.metric_infos] == ["hp/val_acc", "hp/test_acc"]
    session = hp_metadata.parse_session_start_info_plugin_data(events[hp_metadata.SESSION_START_INFO_TAG])
    assert session.hparams["tta_hflip"].bool_value is True and session.hparams["hflip"].HasField("bool_value")
    assert session.hparams["recipe"].string_value == recipe_text(STRONG)
    assert session.hparams["lr"].number_value == 3e-3
    assert session.group_name == "cnn/version_3"  # the HPARAMS table's "Trial ID"
    assert round(events["hp/test_acc"], 4) == 0.9402


def test_class_counts_figure_is_card_sized():
    fig = class_counts_figure(torch.tensor([0, 1, 1, 9]), "train split")
    width, height = fig.get_size_inches() * fig.dpi
    assert (width, height) == (370, 210)  # TIME SERIES shows images about 200 px high: not scaled down much
    assert fig.axes[0].get_title() == "train split: 4 images"
    assert [t.get_text() for t in fig.axes[0].texts] == [" 1", " 2", " 0", " 0", " 0", " 0", " 0", " 0", " 0", " 1"]
