"""SAM builders: the tiny config is self-consistent, seeds are reproducible, local loading is checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rsvl.errors import InputError
from rsvl.models.sam import check_sam_processor, load_sam, sam_processor, tiny_sam, tiny_sam_config


@pytest.fixture(scope="module")
def tiny():
    return tiny_sam(seed=0)


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam") / "tiny-sam"
    model, processor = tiny
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_tiny_config_sizes_agree():
    cfg = tiny_sam_config(image_size=64, patch_size=8, hidden=32)
    vision, prompt, decoder = cfg.vision_config, cfg.prompt_encoder_config, cfg.mask_decoder_config
    assert vision.image_size == prompt.image_size == 64
    assert prompt.image_embedding_size == vision.image_size // vision.patch_size == 8
    assert vision.output_channels == prompt.hidden_size == decoder.hidden_size == 2 * vision.num_pos_feats == 32
    assert decoder.num_multimask_outputs == 3


def test_tiny_config_refuses_inconsistent_sizes():
    with pytest.raises(InputError, match="multiple of patch_size"):
        tiny_sam_config(image_size=60, patch_size=8)
    with pytest.raises(InputError, match="divisible"):
        tiny_sam_config(hidden=30, heads=4)


def test_tiny_forward_shapes_follow_the_config(tiny):
    model, processor = tiny
    assert processor.target_size == 64
    image = np.zeros((40, 64, 3), np.uint8)
    enc = processor(images=image, input_boxes=[[[4.0, 4.0, 30.0, 20.0]]], return_tensors="pt")
    assert tuple(enc["pixel_values"].shape) == (1, 3, 64, 64)  # resized to 64 wide, padded to square
    with torch.inference_mode():
        out = model(pixel_values=enc["pixel_values"], input_boxes=enc["input_boxes"].float(), multimask_output=True)
    assert tuple(out.iou_scores.shape) == (1, 1, 3)
    assert tuple(out.pred_masks.shape) == (1, 1, 3, 32, 32)  # 4x the 8x8 embedding grid
    assert sum(p.numel() for p in model.parameters()) < 200_000


def test_seed_fixes_weights_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = tiny_sam(seed=1)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b, _ = tiny_sam(seed=1)
    c, _ = tiny_sam(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_and_load_round_trip(tiny, saved):
    model, processor = tiny
    loaded, loaded_processor = load_sam(saved, "cpu")
    assert not loaded.training
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert loaded_processor.target_size == processor.target_size == 64
    assert loaded_processor.image_processor.pad_size["height"] == 64


def test_load_refuses_missing_or_foreign_folders(tmp_path, saved):
    with pytest.raises(InputError, match="not found") as err:
        load_sam(tmp_path / "nope")
    assert err.value.path == str(tmp_path / "nope")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match="not a SAM checkpoint") as err:
        load_sam(bert)
    assert err.value.path == str(bert)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((saved / "config.json").read_text())
    with pytest.raises(InputError, match="no weights"):
        load_sam(no_weights)


def test_load_refuses_weights_that_do_not_fit(tmp_path, saved):
    folder = tmp_path / "resized"
    folder.mkdir()
    for item in saved.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mask_decoder_config"]["iou_head_hidden_dim"] = 48  # the saved iou head is 32 wide
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError) as err:
        load_sam(folder)
    assert err.value.path == str(folder)


def test_processor_that_does_not_match_the_model_is_refused(tiny, tmp_path, saved):
    model, _ = tiny
    with pytest.raises(InputError, match="does not match"):
        check_sam_processor(model, sam_processor(128))
    folder = tmp_path / "mixed"
    folder.mkdir()
    for item in saved.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    sam_processor(128).save_pretrained(folder)
    with pytest.raises(InputError, match="does not match") as err:
        load_sam(folder)
    assert err.value.path == str(folder)
