"""Weights saved under the head's pre-0.3.0 names (`cls_convs`, `convs_seg`, `conv_cls`, ...) still load, through
`from_pretrained`, the Auto classes and `load_state_dict`; a model read from such a folder saves under the new names;
the old attribute names still read, with a FutureWarning."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TINY_MODEL_KWARGS
from safetensors.torch import load_file, save_file

from bafenet.models.bafenet import BafeNetConfig, BafeNetForObjectDetection
from bafenet.models.bafenet.modeling_bafenet import LEGACY_HEAD_NAMES, LEGACY_KEY_MAPPING

pytestmark = pytest.mark.usefixtures("one_thread_module")


def to_legacy_key(key: str) -> str:
    """A state-dict key as a model before 0.3.0 saved it."""
    for old, new in LEGACY_KEY_MAPPING.items():
        if key.startswith(new):
            return old + key[len(new):]
    return key


@pytest.fixture(scope="module")
def legacy_folder(tmp_path_factory):
    """(model, folder): a tiny model saved with every head key under its old name, and the model itself."""
    torch.manual_seed(0)
    model = BafeNetForObjectDetection(BafeNetConfig.faithful(**TINY_MODEL_KWARGS)).eval()
    with torch.no_grad():  # away from the init, so a re-initialised tensor would show
        for param in model.head.parameters():
            param.add_(torch.randn_like(param) * 0.1)
        for module in model.head.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_()
    folder = tmp_path_factory.mktemp("legacy") / "model"
    model.save_pretrained(folder)
    weights = load_file(str(folder / "model.safetensors"))
    legacy = {to_legacy_key(k): v for k, v in weights.items()}
    renamed = {k for k in legacy if k not in weights}
    assert {k.split(".")[1] for k in renamed} == set(LEGACY_HEAD_NAMES)  # every old name is in the file
    save_file(legacy, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return model, folder


def outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(1)
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 128, 128))
    return [out.logits, out.pred_boxes, out.centerness, *out.sky_logits]


def assert_same_outputs(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    for got, want in zip(outputs(model), outputs(reference), strict=True):
        assert torch.equal(got, want)


def test_legacy_key_mapping_covers_every_renamed_attribute():
    head = BafeNetForObjectDetection(BafeNetConfig.faithful(**TINY_MODEL_KWARGS)).head
    names = dict(head.named_children())
    assert all(new in names and old not in names for old, new in LEGACY_HEAD_NAMES.items())
    assert LEGACY_KEY_MAPPING == {f"head.{old}.": f"head.{new}." for old, new in LEGACY_HEAD_NAMES.items()}


def test_from_pretrained_reads_old_names_with_identical_outputs(legacy_folder):
    reference, folder = legacy_folder
    model, info = BafeNetForObjectDetection.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert_same_outputs(model, reference)


def test_auto_model_and_the_shipped_code_read_old_names_with_identical_outputs(legacy_folder):
    import json

    from transformers import AutoModel, AutoModelForObjectDetection
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    import bafenet.models  # noqa: F401  (registers the Auto classes)

    reference, folder = legacy_folder
    for auto in (AutoModel, AutoModelForObjectDetection):  # the installed classes
        model = auto.from_pretrained(folder)
        assert type(model).__module__.startswith("bafenet.")
        assert_same_outputs(model, reference)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    for name in ("AutoModel", "AutoModelForObjectDetection"):  # the folder's own code (`trust_remote_code=True`)
        model = get_class_from_dynamic_module(auto_map[name], str(folder)).from_pretrained(folder)
        assert type(model).__module__.startswith("transformers_modules.")
        assert_same_outputs(model, reference)


def test_saving_after_loading_old_names_writes_the_new_names(legacy_folder, tmp_path):
    reference, folder = legacy_folder
    BafeNetForObjectDetection.from_pretrained(folder).save_pretrained(tmp_path / "resaved")
    keys = set(load_file(str(tmp_path / "resaved" / "model.safetensors")))
    assert keys == set(reference.state_dict())
    assert not any(old in key for key in keys for old in LEGACY_KEY_MAPPING)
    assert_same_outputs(BafeNetForObjectDetection.from_pretrained(tmp_path / "resaved"), reference)


def test_load_state_dict_reads_a_training_checkpoint_with_old_names(legacy_folder):
    """`bafenet.checkpoints.apply_checkpoint` and the trainer load `model.safetensors` with `load_state_dict`."""
    reference, folder = legacy_folder
    weights = load_file(str(folder / "model.safetensors"))
    assert any(key.startswith("head.cls_convs.") for key in weights)
    model = BafeNetForObjectDetection(reference.config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not missing and not unexpected
    assert_same_outputs(model, reference)
    model.load_state_dict(weights, strict=True)  # strict too
    head = BafeNetForObjectDetection(reference.config).head  # the head on its own, under any prefix
    head.load_state_dict({k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")})
    torch.testing.assert_close(head.state_dict(), reference.head.state_dict(), rtol=0, atol=0)


def test_old_attribute_names_warn_and_give_the_new_modules():
    head = BafeNetForObjectDetection(BafeNetConfig.faithful(**TINY_MODEL_KWARGS)).head
    for old, new in LEGACY_HEAD_NAMES.items():
        with pytest.warns(FutureWarning, match=f"{old} is renamed {new}"):
            assert getattr(head, old) is getattr(head, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert head.cls_tower is head.cls_tower  # the new names do not warn
    with pytest.raises(AttributeError):
        head.no_such_module  # noqa: B018
