"""The optional refinement stage of RSVG-ZeroOV: SAM prompted with the evolved box.

The paper applies SAM with a box prompt after the Evolve stage (box prompts worked best). Here the
real ``transformers.SamModel`` gets the image and the box through its ``SamProcessor`` (which
resizes the longest side to SAM's input size and scales the box the same way), predicts three
masks (``multimask_output=True``), and the one with the highest predicted IoU is taken back to the
original image size with the processor's ``post_process_masks`` (logits > 0).

:func:`build_sam_refiner` turns a :class:`~rsvl.methods.zeroov.config.RefineConfig` into a
:class:`SamBoxRefiner` (or None when refinement is off). There are no weights to download: real
refinement needs a local SAM folder (``--sam-path``); ``tiny`` builds a random one for tests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import SamModel, SamProcessor

from rsvl.errors import InputError
from rsvl.methods.zeroov.config import RefineConfig
from rsvl.methods.zeroov.providers import check_image
from rsvl.models.sam import check_sam_processor, load_sam, tiny_sam

logger = logging.getLogger(__name__)

__all__ = ["RefinedMask", "SamBoxRefiner", "build_sam_refiner"]

#: How far (pixels) a box may reach past the image border before it is refused rather than clipped.
BOX_TOLERANCE = 0.5


@dataclass
class RefinedMask:
    """SAM's answer for one box.

    Attributes:
        mask: ``(H, W)`` bool at the original image size.
        score: SAM's predicted IoU of the chosen mask (the highest of its multimask outputs).
        box: the ``xyxy`` pixel-edge prompt box that was used (after clipping to the image).
    """

    mask: np.ndarray
    score: float
    box: tuple[float, float, float, float]


def _check_box(box: Sequence[float], height: int, width: int) -> tuple[float, float, float, float]:
    """The box as four floats clipped to the image, or an InputError.

    Refused: not four finite numbers, ``x2 <= x1`` or ``y2 <= y1``, or any edge more than
    :data:`BOX_TOLERANCE` pixels outside ``[0, W] x [0, H]`` (a box past the border usually means
    another convention: normalised, ``xywh``, or width and height swapped).
    """
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise InputError(f"the box must be four numbers x1, y1, x2, y2, got {box!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"the box must be four finite numbers x1, y1, x2, y2, got {box!r}")
    x1, y1, x2, y2 = values
    if x2 <= x1 or y2 <= y1:
        raise InputError(f"degenerate box {tuple(values)}: need x2 > x1 and y2 > y1 (xyxy pixels)")
    tol = BOX_TOLERANCE
    if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
        raise InputError(f"box {tuple(values)} lies outside the {width}x{height} image (xyxy pixels expected)")
    return (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))


class SamBoxRefiner:
    """Refine a region with SAM prompted by its box.

    Args:
        model: a ``transformers.SamModel`` (put in eval mode and moved to ``device`` here).
        processor: the ``SamProcessor`` that matches it (its sizes are checked against the model).
        device: torch device to run on.
        real_weights: whether ``model`` holds trained weights (recorded with every result).
    """

    name = "sam"

    def __init__(
        self, model: SamModel, processor: SamProcessor, device: str = "cpu", real_weights: bool = False
    ) -> None:
        check_sam_processor(model, processor)
        try:
            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
        except (RuntimeError, AssertionError, ValueError) as exc:
            raise InputError(f"cannot run SAM on device {device!r}: {exc}") from None
        self.processor = processor
        self.real_weights = bool(real_weights)
        self.dtype = next(model.parameters()).dtype

    def inputs(self, image: np.ndarray, box: tuple[float, float, float, float]) -> dict[str, torch.Tensor]:
        """The processor's tensors for one image and one box, on the model's device and dtype.

        ``input_boxes`` is ``(1, 1, 4)`` in the resized (longest side = SAM's input size) frame;
        ``original_sizes`` and ``reshaped_input_sizes`` stay on the CPU for post-processing.
        """
        encoded = self.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
        return {
            "pixel_values": encoded["pixel_values"].to(self.device, self.dtype),
            "input_boxes": encoded["input_boxes"].to(self.device, self.dtype),
            "original_sizes": encoded["original_sizes"],
            "reshaped_input_sizes": encoded["reshaped_input_sizes"],
        }

    def refine(self, image: np.ndarray, box: Sequence[float]) -> RefinedMask:
        """SAM's best mask for ``box`` (``xyxy`` pixel edges) in ``image`` (``(H, W, 3)`` uint8 RGB)."""
        image = check_image(image)
        height, width = image.shape[:2]
        prompt = _check_box(box, height, width)
        enc = self.inputs(image, prompt)
        with torch.inference_mode():
            out = self.model(pixel_values=enc["pixel_values"], input_boxes=enc["input_boxes"], multimask_output=True)
        scores = out.iou_scores[0, 0].float().cpu()  # (num_masks,)
        best = int(torch.argmax(scores))
        low_res = out.pred_masks[:, :, best : best + 1].float().cpu()  # (1, 1, 1, h, w)
        masks = self.processor.post_process_masks(
            low_res, enc["original_sizes"], enc["reshaped_input_sizes"], binarize=True
        )
        mask = masks[0][0, 0].numpy().astype(bool, copy=False)
        return RefinedMask(mask=mask, score=float(scores[best]), box=prompt)


def build_sam_refiner(cfg: RefineConfig) -> SamBoxRefiner | None:
    """The refiner ``cfg`` asks for: None when ``cfg.sam`` is off.

    A local folder (``cfg.path``) gives real weights; without one, ``cfg.tiny`` builds a tiny random
    SAM (warned: its masks are noise) and anything else is an InputError, since no SAM weights
    ship with rsvl and nothing is downloaded.
    """
    if not cfg.sam:
        return None
    if cfg.path is not None:
        model, processor = load_sam(cfg.path, cfg.device)
        return SamBoxRefiner(model, processor, cfg.device, real_weights=True)
    if not cfg.tiny:
        raise InputError(
            "SAM refinement needs --sam-path: a local SAM folder in transformers format (e.g. facebook/sam-vit-base "
            "saved with save_pretrained); there are no SAM weights to download"
        )
    logger.warning("SAM refinement uses a tiny RANDOM SAM (tests only): its masks are noise")
    model, processor = tiny_sam()
    return SamBoxRefiner(model, processor, cfg.device, real_weights=False)
