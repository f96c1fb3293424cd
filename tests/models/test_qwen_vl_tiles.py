"""QwenVLTileBundle: tiles through the real Qwen2.5-VL vision tower, multimodal RoPE positions, attention, answers.

The references are transformers' own computations: the processor + ``model(**inputs)`` path for a
single tile, ``Qwen2_5_VLModel.get_rope_index`` for the 3-D positions, ``output_attentions=True``
for attention and ``model.generate`` / an explicit cache-free loop for answers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional

from rsvl.errors import InputError
from rsvl.models.llava import VQASequence
from rsvl.models.qwen_vl_tiles import (
    QwenVLSequence,
    QwenVLTileBundle,
    full_tile_positions,
    load_qwen_vl_tiles,
    mrope_position_ids,
    tiny_qwen_vl_tiles,
)

QUESTION = "What is it?"
TILE = 112  # 8 x 8 patches -> 4 x 4 merged tokens, two 2 x 2 windows per side (window attention is exercised)
G = 4
D = 64


@pytest.fixture(scope="module")
def bundle() -> QwenVLTileBundle:
    return tiny_qwen_vl_tiles(seed=0, tile_size=TILE, num_text_layers=3)


@pytest.fixture(scope="module")
def tiles() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, TILE, TILE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def grids(bundle, tiles) -> torch.Tensor:
    return bundle.encode_tiles(tiles)


def _processor_inputs(bundle: QwenVLTileBundle, tile: np.ndarray, system: str | None = None):
    """The plain transformers path: chat template with one image, then the processor on the tile."""
    messages = [] if system is None else [{"role": "system", "content": [{"type": "text", "text": system}]}]
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]})
    text = bundle.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return bundle.processor(text=[text], images=[tile], return_tensors="pt")


def _rope_reference(bundle: QwenVLTileBundle, seq: QwenVLSequence, image_grids: list[tuple[int, int]]):
    """``get_rope_index`` on the sequence's ids (image run expanded) with the images' merged grids.

    ``get_rope_index`` splits the sequence into runs of one modality, so images placed back to back
    with no text between would read as one; alternating the run's type image / video (a one-frame
    video is placed exactly like an image: temporal index 0) makes it place each image on its own.
    """
    ids = bundle.tokenizer(seq.prompt)["input_ids"]
    cut, n = seq.image_slice.start, seq.n_image_tokens
    input_ids = torch.tensor([ids[:cut] + [bundle.model.config.image_token_id] * n + ids[cut + 1 :]])
    types = torch.zeros_like(input_ids)
    thw = torch.tensor([[1, 2 * h, 2 * w] for h, w in image_grids])
    start = cut
    for i, (h, w) in enumerate(image_grids):
        types[0, start : start + h * w] = 1 + i % 2
        start += h * w
    assert start == seq.image_slice.stop
    positions, _ = bundle.model.model.get_rope_index(
        input_ids, types, image_grid_thw=thw[0::2], video_grid_thw=thw[1::2] if len(thw) > 1 else None
    )
    return positions


# --------------------------------------------------------------------------- builders and properties


def test_tiny_builder_properties_and_tile_size_checks(bundle):
    small = tiny_qwen_vl_tiles()
    assert (small.tile_size, small.grid_size, small.hidden_size, small.num_layers) == (56, 2, 64, 4)
    assert small.model.config.text_config.num_hidden_layers == 4  # what the LRS-VQA scorer reads
    assert small.model.config.text_config._attn_implementation == "eager"
    assert small.real_weights is False and small.name == "tiny-qwen2.5-vl-seed0"
    assert small.device.type == "cpu" and small.dtype == torch.float32
    assert small.image_token == "<|image_pad|>"
    assert (bundle.tile_size, bundle.grid_size, bundle.num_layers) == (TILE, G, 3)
    same, other = tiny_qwen_vl_tiles(seed=0).model.lm_head.weight, tiny_qwen_vl_tiles(seed=1).model.lm_head.weight
    assert torch.equal(same, small.model.lm_head.weight) and not torch.equal(other, same)
    for bad in (100, 0, 14, 56.0, True):
        with pytest.raises(InputError, match="tile_size"):
            tiny_qwen_vl_tiles(tile_size=bad)
        with pytest.raises(InputError, match="tile_size"):
            QwenVLTileBundle(small.model, small.processor, False, "x", bad)
    big = tiny_qwen_vl_tiles(tile_size=448)  # the processor's bounds are widened so it keeps a big tile too
    thw = big.image_processor(images=[np.zeros((448, 448, 3), np.uint8)], return_tensors="pt")["image_grid_thw"]
    assert thw.tolist() == [[1, 32, 32]] and big.grid_size == 16


# --------------------------------------------------------------------------- vision


def test_encode_tiles_is_the_models_image_features_in_raster_order(bundle, tiles, grids):
    processed = bundle.image_processor(images=list(tiles), return_tensors="pt")  # the processor's own path
    pixels, thw = bundle.pixel_values(tiles)
    assert torch.equal(pixels, processed["pixel_values"]) and thw.tolist() == [[1, 2 * G, 2 * G]] * 3
    assert grids.shape == (3, G, G, D)
    with torch.no_grad():
        feats = bundle.model.get_image_features(processed["pixel_values"], processed["image_grid_thw"]).pooler_output
    for i in range(3):  # grid[r, c] is merged token r * G + c: the cell get_rope_index gives it
        torch.testing.assert_close(grids[i].reshape(G * G, D), feats[i])
    torch.testing.assert_close(bundle.encode_tiles(list(tiles), batch_size=1), grids)
    pooled = bundle.encode_tiles(tiles[:2], pool=2)
    expected = functional.interpolate(grids[:2].permute(0, 3, 1, 2), size=(2, 2), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pooled, expected.permute(0, 2, 3, 1))
    torch.testing.assert_close(bundle.encode_tiles(tiles[:1], pool=G), grids[:1])
    assert bundle.encode_tiles(np.zeros((0, TILE, TILE, 3), np.uint8)).shape == (0, G, G, D)
    assert not bundle.encode_tiles(tiles[:1]).requires_grad and bundle.encode_tiles(tiles[:1], grad=True).requires_grad


def test_encode_tiles_rejects_bad_tiles(bundle, tiles):
    for bad in (
        tiles[0],  # no batch axis
        np.zeros((1, 56, 56, 3), np.uint8),  # wrong size
        tiles.astype(np.float32),
        [tiles[0], tiles[1][:56]],
        [tiles[0], "tile"],
    ):
        with pytest.raises(InputError):
            bundle.encode_tiles(bad)
    with pytest.raises(InputError, match="pool"):
        bundle.encode_tiles(tiles[:1], pool=0)
    with pytest.raises(InputError, match="batch_size"):
        bundle.encode_tiles(tiles[:1], batch_size=0)


# --------------------------------------------------------------------------- sequences and positions


@pytest.mark.parametrize("system", [None, "Answer briefly."])
def test_one_tile_sequence_reproduces_the_processor_and_model_forward(bundle, tiles, grids, system):
    inputs = _processor_inputs(bundle, tiles[0], system)
    seq = bundle.build_sequence(grids[0].reshape(-1, D), QUESTION, system=system)
    image = (inputs["input_ids"][0] == bundle.model.config.image_token_id).nonzero().flatten()
    assert seq.image_slice == slice(int(image[0]), int(image[-1]) + 1) and seq.n_image_tokens == G * G
    assert seq.query_index == inputs["input_ids"].shape[1] - 1
    with torch.no_grad():
        reference = bundle.model(**inputs).logits
        ours = bundle.model(inputs_embeds=seq.inputs_embeds, position_ids=seq.position_ids).logits
        rope, _ = bundle.model.model.get_rope_index(
            inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
        )
    assert torch.equal(seq.position_ids, rope)
    torch.testing.assert_close(ours, reference)


def test_position_ids_equal_get_rope_index_for_consecutive_images(bundle, grids):
    """The key check: k tiles back to back get exactly get_rope_index's positions for k one-tile images."""
    tokens = grids.reshape(-1, D)
    inferred = bundle.build_sequence(tokens, QUESTION)
    given = bundle.build_sequence(tokens, QUESTION, positions=full_tile_positions(3, G))
    reference = _rope_reference(bundle, given, [(G, G)] * 3)
    assert torch.equal(given.position_ids, reference) and torch.equal(inferred.position_ids, reference)
    cut = given.image_slice.start
    assert given.position_ids[:, 0, cut + G * G].tolist() == [cut + G, cut + G, cut + G]  # tile 1 starts at +G
    assert given.next_position == int(reference.max()) + 1
    # the pipeline's layout: an unpooled global view (image 0), then tiles pooled to 2 x 2
    pooled = bundle.encode_tiles(np.zeros((2, TILE, TILE, 3), np.uint8), pool=2).reshape(-1, D)
    cells = torch.cat([full_tile_positions(1, G), full_tile_positions(2, 2) + torch.tensor([1, 0, 0])])
    seq = bundle.build_sequence(torch.cat([grids[0].reshape(-1, D), pooled]), QUESTION, positions=cells)
    assert torch.equal(seq.position_ids, _rope_reference(bundle, seq, [(G, G), (2, 2), (2, 2)]))


def _kept_positions(full: QwenVLSequence, keep: torch.Tensor) -> torch.Tensor:
    """The unpruned sequence's position ids with the image tokens not in ``keep`` (indices) left out."""
    cut, stop = full.image_slice.start, full.image_slice.stop
    ids = full.position_ids
    return torch.cat([ids[..., :cut], ids[..., cut + keep], ids[..., stop:]], dim=-1)


def test_pruned_tokens_keep_their_original_positions(bundle, grids):
    tokens, cells = grids.reshape(-1, D), full_tile_positions(3, G)
    full = bundle.build_sequence(tokens, QUESTION)
    # tile 2 loses its last row and column; tiles 0 and 1 keep a random share of their tokens
    inner = (cells[:, 0] == 2) & (cells[:, 1] < G - 1) & (cells[:, 2] < G - 1)
    inner |= (cells[:, 0] < 2) & torch.from_numpy(np.random.default_rng(1).random(len(cells)) < 0.4)
    keep = inner.nonzero().flatten()
    seq = bundle.build_sequence(tokens[keep], QUESTION, positions=cells[keep], grids=[(G, G)] * 3)
    assert torch.equal(seq.position_ids, _kept_positions(full, keep)) and seq.next_position == full.next_position
    torch.testing.assert_close(seq.inputs_embeds[0, seq.image_slice], tokens[keep])
    # without grids an image's extent is read from its tokens: tile 2 spans 3 positions, not 4
    tight = bundle.build_sequence(tokens[keep], QUESTION, positions=cells[keep])
    stop = tight.image_slice.stop
    assert torch.equal(tight.position_ids[..., :stop], seq.position_ids[..., :stop])
    assert torch.equal(tight.position_ids[..., stop:], seq.position_ids[..., stop:] - 1)
    assert tight.next_position == full.next_position - 1


def test_mrope_position_ids_known_answer_and_bad_positions(bundle, grids):
    # 2 text tokens, image 5 (2 tokens, extent 2), image 9 (1 token at (0, 2), extent 3), 1 text token
    pos, nxt = mrope_position_ids(2, torch.tensor([[5, 0, 1], [5, 1, 0], [9, 0, 2]]), 1)
    assert pos.tolist() == [[0, 1, 2, 2, 4, 7], [0, 1, 2, 3, 4, 7], [0, 1, 3, 2, 6, 7]] and nxt == 8
    tokens = grids.reshape(-1, D)
    for kwargs, match in (
        ({}, "whole"),  # 47 tokens are not whole tiles
        ({"positions": torch.zeros(46, 3, dtype=torch.long)}, "shape"),
        ({"positions": torch.zeros(47, 3)}, "integers"),
        ({"positions": torch.tensor([[0, 0, 0]] * 20 + [[1, 0, 0]] * 20 + [[0, 0, 1]] * 7)}, "consecutive"),
        ({"positions": torch.tensor([[0, -1, 0]] * 47)}, "negative"),
        ({"positions": full_tile_positions(3, G)[:47], "grids": [(G, G)] * 2}, "grids"),
        ({"positions": full_tile_positions(3, G)[:47], "grids": [(G, G), (G, G), (2, 2)]}, "outside"),
    ):
        with pytest.raises(InputError, match=match):
            bundle.build_sequence(tokens[:47], QUESTION, **kwargs)
    with pytest.raises(InputError, match="width"):
        bundle.build_sequence(torch.zeros(16, 8), QUESTION)
    with pytest.raises(InputError, match=r"\(N, D\)"):
        bundle.build_sequence(grids[0], QUESTION)


# --------------------------------------------------------------------------- attention and answers


def test_text_to_image_attention_equals_output_attentions(bundle, grids):
    keep = torch.arange(0, 3 * G * G, 2)
    seq = bundle.build_sequence(grids.reshape(-1, D)[keep], QUESTION, positions=full_tile_positions(3, G)[keep])
    with torch.no_grad():
        out = bundle.model(inputs_embeds=seq.inputs_embeds, position_ids=seq.position_ids, output_attentions=True)
    for layer, query in ((0, None), (2, None), (-1, seq.image_slice.stop + 2)):
        q = seq.query_index if query is None else query
        expected = out.attentions[layer][0, :, q, seq.image_slice].mean(0)
        got = bundle.text_to_image_attention(seq, layer, query_index=query)
        assert got.shape == (len(keep),)
        torch.testing.assert_close(got, expected)
    # the 3-D positions matter: the same embeddings with plain 1-D positions attend differently
    plain = VQASequence(seq.inputs_embeds, seq.image_slice, seq.query_index, seq.prompt)
    assert not torch.allclose(bundle.text_to_image_attention(plain, 1), bundle.text_to_image_attention(seq, 1))
    with pytest.raises(InputError, match="layer"):
        bundle.text_to_image_attention(seq, 3)
    with pytest.raises(InputError, match="query_index"):
        bundle.text_to_image_attention(seq, 0, query_index=seq.query_index + 1)


def _greedy_without_cache(bundle: QwenVLTileBundle, seq: QwenVLSequence, steps: int) -> list[int]:
    embeds, positions, out = seq.inputs_embeds, seq.position_ids, []
    table = bundle.model.get_input_embeddings()
    for i in range(steps):
        with torch.no_grad():
            logits = bundle.model(inputs_embeds=embeds, position_ids=positions, use_cache=False).logits
        token = int(logits[0, -1].argmax())
        out.append(token)
        embeds = torch.cat([embeds, table(torch.tensor([[token]]))], dim=1)
        positions = torch.cat([positions, torch.full((3, 1, 1), seq.next_position + i)], dim=-1)
    return out


def test_generate_matches_model_generate_and_a_cache_free_loop(bundle, tiles, grids):
    steps = 6
    inputs = _processor_inputs(bundle, tiles[0])
    with torch.no_grad():
        hf = bundle.model.generate(
            **inputs, max_new_tokens=steps, do_sample=False, output_logits=True, return_dict_in_generate=True
        )
    one = bundle.build_sequence(grids[0].reshape(-1, D), QUESTION)
    logits: list[torch.Tensor] = []
    hook = bundle.model.lm_head.register_forward_hook(lambda _m, _a, out: logits.append(out[0, -1]))
    try:
        assert bundle.generate_ids(one, steps) == hf.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    finally:
        hook.remove()
    # same logits at every step: the decoded tokens sit where generate's rope_deltas put them
    torch.testing.assert_close(torch.stack(logits), torch.cat(hf.logits))
    keep = torch.arange(1, 3 * G * G, 3)
    seq = bundle.build_sequence(grids.reshape(-1, D)[keep], QUESTION, positions=full_tile_positions(3, G)[keep])
    ids = bundle.generate_ids(seq, steps)
    assert len(ids) == steps and not set(ids) & bundle._eos_ids()  # a non-trivial comparison
    assert ids == _greedy_without_cache(bundle, seq, steps)
    assert bundle.generate(seq, steps) == bundle.tokenizer.decode(ids, skip_special_tokens=True).strip()
    with pytest.raises(InputError, match="max_new_tokens"):
        bundle.generate(seq, 0)


def test_load_qwen_vl_tiles_round_trip_and_errors(bundle, tiles, grids, tmp_path):
    with pytest.raises(InputError):
        load_qwen_vl_tiles(tmp_path / "missing")
    bundle.model.save_pretrained(tmp_path / "m")
    bundle.processor.save_pretrained(tmp_path / "m")
    loaded = load_qwen_vl_tiles(tmp_path / "m", tile_size=TILE)
    assert loaded.real_weights is True and loaded.name == str(tmp_path / "m") and loaded.grid_size == G
    torch.testing.assert_close(loaded.encode_tiles(tiles[:1]), grids[:1])
    with pytest.raises(InputError, match="tile_size"):
        load_qwen_vl_tiles(tmp_path / "m", tile_size=100)
