"""Segment Anything (SAM) builders: a tiny random model for tests and loading a local checkpoint.

Everything here wraps the real ``transformers.SamModel`` and ``SamProcessor``; nothing is
re-implemented. RSVG-ZeroOV's optional refinement stage prompts SAM with the evolved box.

* :func:`tiny_sam_config` / :func:`tiny_sam` build an explicit tiny SAM (``SamConfig()`` alone is
  SAM ViT-B: ~94 M parameters at 1024 px) whose parts agree on one geometry: the vision tower, the
  prompt encoder and the processor all use ``image_size``; the image embedding grid is
  ``image_size // patch_size`` in both the vision tower and the prompt encoder; the vision output
  channels, the prompt encoder's hidden size, the mask decoder's hidden size and twice the
  positional features (``num_pos_feats``) are one number.
* :func:`sam_processor` builds a ``SamProcessor`` that resizes the longest side to ``image_size``
  and pads to a square of that side, as SAM expects.
* :func:`load_sam` loads a user's local SAM folder in transformers' format (``config.json`` with
  ``model_type: sam``, the weights, the processor config), refusing folders of other models,
  weights that do not fit, and processors whose sizes disagree with the model.
"""

from __future__ import annotations

import logging
from os import PathLike
from pathlib import Path

import torch
from transformers import (
    SamConfig,
    SamImageProcessor,
    SamMaskDecoderConfig,
    SamModel,
    SamProcessor,
    SamPromptEncoderConfig,
    SamVisionConfig,
)

from rsvl.errors import InputError
from rsvl.models.folders import check_model_folder, load_pretrained

logger = logging.getLogger(__name__)

__all__ = ["check_sam_processor", "load_sam", "sam_processor", "tiny_sam", "tiny_sam_config"]

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def tiny_sam_config(
    image_size: int = 64, patch_size: int = 8, hidden: int = 32, layers: int = 2, heads: int = 2
) -> SamConfig:
    """An explicit tiny SAM configuration with consistent sizes (see the module docstring).

    The vision tower alternates windowed (window 4) and global attention, its last layer global as
    in SAM; the mask decoder keeps SAM's 3 multimask outputs and its 2-way transformer depth.
    """
    if image_size % patch_size:
        raise InputError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
    if hidden % (2 * heads):
        raise InputError(f"hidden ({hidden}) must be divisible by 2 * heads ({2 * heads})")
    vision = SamVisionConfig(
        hidden_size=hidden,
        output_channels=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        window_size=4,
        global_attn_indexes=(layers - 1,),
        num_pos_feats=hidden // 2,
        mlp_dim=2 * hidden,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=hidden, image_size=image_size, patch_size=patch_size, mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=hidden,
        mlp_dim=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=heads,
        iou_head_hidden_dim=hidden,
        iou_head_depth=3,
        num_multimask_outputs=3,
    )
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def sam_processor(image_size: int) -> SamProcessor:
    """A ``SamProcessor`` for a SAM whose input side is ``image_size`` (SAM ViT-*: 1024).

    Images are resized so the longest side is ``image_size`` and padded to ``image_size`` square;
    segmentation maps (unused here) to a quarter of that, the side of SAM's low-resolution masks.
    """
    mask_side = max(1, image_size // 4)
    image_processor = SamImageProcessor(
        size={"longest_edge": image_size},
        pad_size={"height": image_size, "width": image_size},
        mask_size={"longest_edge": mask_side},
        mask_pad_size={"height": mask_side, "width": mask_side},
    )
    return SamProcessor(image_processor)


def tiny_sam(seed: int = 0, **kwargs: int) -> tuple[SamModel, SamProcessor]:
    """A randomly initialised tiny SAM (eval mode) and its matching processor.

    ``seed`` fixes the random weights (the global torch RNG is left as it was); ``kwargs`` go to
    :func:`tiny_sam_config`. Its masks are noise: for tests only.
    """
    config = tiny_sam_config(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config)
    model.eval()
    return model, sam_processor(config.vision_config.image_size)


def check_sam_processor(model: SamModel, processor: SamProcessor, path: str | PathLike[str] | None = None) -> None:
    """Raise InputError unless ``processor`` feeds ``model`` images and boxes at the model's input size.

    SAM normalises box prompts by the processor's ``longest_edge`` and the prompt encoder by its
    ``image_size``: if they differ, every box lands in the wrong place without any error.
    """
    side = int(model.config.prompt_encoder_config.image_size)
    vision_side = int(model.config.vision_config.image_size)
    image_processor = processor.image_processor
    pad = image_processor.pad_size
    sizes = {
        "vision image_size": vision_side,
        "processor longest_edge": int(processor.target_size),
        "processor pad height": None if pad is None else pad["height"],
        "processor pad width": None if pad is None else pad["width"],
    }
    wrong = {k: v for k, v in sizes.items() if v != side}
    if wrong or not image_processor.do_pad:
        raise InputError(
            f"the SAM processor does not match the model: prompt encoder image_size {side}, but {wrong}"
            + ("" if image_processor.do_pad else " and do_pad is off"),
            path,
        )


def _check_sam_folder(path: Path) -> None:
    """Raise InputError unless ``path`` looks like a transformers SAM folder."""
    check_model_folder(path, "SAM", SamConfig.model_type, " (e.g. facebook/sam-vit-base in transformers format)")
    if not any((path / name).is_file() for name in _PROCESSOR_FILES):
        raise InputError(f"SAM model folder has no processor config ({' or '.join(_PROCESSOR_FILES)})", path)


def load_sam(path: str | PathLike[str], device: str = "cpu") -> tuple[SamModel, SamProcessor]:
    """Load a local SAM checkpoint in transformers' format and its processor, in eval mode on ``device``.

    Nothing is downloaded. A missing folder, a folder of another model, weights that leave any SAM
    parameter uninitialised, or a processor whose sizes disagree with the model raise
    :class:`InputError` naming ``path``.
    """
    folder = Path(path)
    _check_sam_folder(folder)
    try:
        processor = SamProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise InputError(f"cannot load the SAM processor: {exc}", folder) from exc
    model = load_pretrained(SamModel, folder, "SAM")
    check_sam_processor(model, processor, folder)
    try:
        model = model.to(torch.device(device))
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise InputError(f"cannot move SAM to device {device!r}: {exc}") from None
    model.eval()
    logger.info("loaded SAM from %s (%s parameters)", folder, f"{model.num_parameters():,}")
    return model, processor
