"""RSVG-ZeroOV refinement: SAM prompted with a box, masks back at the original size, checked inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rsvl.errors import InputError
from rsvl.methods.zeroov.config import RefineConfig
from rsvl.methods.zeroov.refine_sam import RefinedMask, SamBoxRefiner, build_sam_refiner
from rsvl.models.sam import tiny_sam

H, W = 48, 80  # non-square: SAM resizes 80 -> 64 wide, 48 -> 38 high (38.4 rounded), then pads to 64x64


@pytest.fixture(scope="module")
def refiner():
    model, processor = tiny_sam(seed=0)
    return SamBoxRefiner(model, processor, "cpu", real_weights=False)


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_mask_has_the_original_non_square_shape(refiner, image):
    out = refiner.refine(image, (10.0, 5.0, 50.0, 40.0))
    assert isinstance(out, RefinedMask)
    assert out.mask.shape == (H, W) and out.mask.dtype == np.bool_
    assert out.box == (10.0, 5.0, 50.0, 40.0)
    tall = np.ascontiguousarray(image[:, :30])  # 48 high, 30 wide: padded on the right instead of below
    assert refiner.refine(tall, (2, 2, 20, 40)).mask.shape == (48, 30)


def test_score_and_mask_are_the_best_of_a_direct_model_call(refiner, image):
    box = (12.0, 6.0, 60.0, 44.0)
    out = refiner.refine(image, box)
    enc = refiner.processor(images=image, input_boxes=[[list(box)]], return_tensors="pt")
    with torch.inference_mode():
        direct = refiner.model(
            pixel_values=enc["pixel_values"], input_boxes=enc["input_boxes"].float(), multimask_output=True
        )
    scores = direct.iou_scores[0, 0]
    assert scores.numel() == 3
    assert out.score == pytest.approx(float(scores.max()), abs=1e-6)
    masks = refiner.processor.post_process_masks(direct.pred_masks, enc["original_sizes"], enc["reshaped_input_sizes"])
    best = masks[0][0, int(scores.argmax())].numpy()
    np.testing.assert_array_equal(out.mask, best)


def test_box_reaches_the_model_in_resized_coordinates(refiner, image):
    seen = {}

    def grab(_module, _args, kwargs):
        seen["boxes"] = kwargs["input_boxes"].detach().clone()

    handle = refiner.model.prompt_encoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        refiner.refine(image, (10.0, 6.0, 50.0, 42.0))
    finally:
        handle.remove()
    sx, sy = 64 / W, 38 / H
    expected = torch.tensor([[[10.0 * sx, 6.0 * sy, 50.0 * sx, 42.0 * sy]]])
    torch.testing.assert_close(seen["boxes"], expected)


def test_different_boxes_give_different_masks(refiner, image):
    left = refiner.refine(image, (0, 0, 30, 30)).mask
    right = refiner.refine(image, (45, 10, 80, 48)).mask
    assert (left != right).any()


def test_box_slightly_past_the_border_is_clipped(refiner, image):
    assert refiner.refine(image, (-0.3, 0, W + 0.4, H)).box == (0.0, 0.0, float(W), float(H))


@pytest.mark.parametrize(
    "box",
    [
        (10, 10, 10, 30),  # zero width
        (30, 10, 20, 40),  # x2 < x1
        (5, 20, 30, 20),  # zero height
        (100, 10, 120, 40),  # right of the image
        (10, 10, 90, 40),  # wider than the image (xywh passed as xyxy?)
        (-5, 0, 20, 20),
        (0.1, 0.1, 0.5, 0.5 + float("nan")),
        (1, 2, 3),
        ("a", 1, 2, 3),
        None,
    ],
)
def test_bad_boxes_raise_input_error(refiner, image, box):
    with pytest.raises(InputError):
        refiner.refine(image, box)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((H, W), np.uint8),
        np.zeros((H, W, 4), np.uint8),
        np.zeros((H, W, 3), np.float32),
        np.zeros((0, W, 3), np.uint8),
    ],
)
def test_bad_images_raise_input_error(refiner, bad):
    with pytest.raises(InputError, match="image"):
        refiner.refine(bad, (0, 0, 10, 10))


def test_build_is_none_when_disabled():
    assert build_sam_refiner(RefineConfig()) is None
    assert build_sam_refiner(RefineConfig(sam=False, tiny=True)) is None


def test_build_without_path_needs_tiny(caplog):
    with pytest.raises(InputError, match="--sam-path"):
        build_sam_refiner(RefineConfig(sam=True))
    with caplog.at_level(logging.WARNING, logger="rsvl.methods.zeroov.refine_sam"):
        built = build_sam_refiner(RefineConfig(sam=True, tiny=True))
    assert isinstance(built, SamBoxRefiner)
    assert built.real_weights is False and built.name == "sam"
    assert "RANDOM" in caplog.text


def test_build_from_saved_folder_gives_identical_masks(refiner, image, tmp_path):
    refiner.model.save_pretrained(tmp_path / "sam")
    refiner.processor.save_pretrained(tmp_path / "sam")
    loaded = build_sam_refiner(RefineConfig(sam=True, path=tmp_path / "sam"))
    assert loaded is not None and loaded.real_weights is True
    box = (8.0, 4.0, 70.0, 40.0)
    a, b = refiner.refine(image, box), loaded.refine(image, box)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.score == pytest.approx(b.score, rel=1e-5)  # same weights; kernels may differ in the last bits
    with pytest.raises(InputError, match="not found"):
        build_sam_refiner(RefineConfig(sam=True, path=tmp_path / "missing"))
