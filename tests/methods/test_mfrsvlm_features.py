"""MF-RSVLM multi-scale features: window geometry, Hann scatter, stack order, real-CLIP references."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.nn import functional
from transformers import CLIPVisionConfig

from rsvl.errors import InputError
from rsvl.methods.mfrsvlm.features import (
    MultiScaleConfig,
    StackLabel,
    extract,
    hann_weights,
    layers_for_depth,
    scaled_config,
    scatter_windows,
    split_stacks,
    tiny_clip_vision,
    window_positions,
)

P = 14


class PatchMeanTower(torch.nn.Module):
    """Stub tower: token (r, c) of hidden state l = (patch means of the 3 channels, l, 0, ...).

    It reads the pixels it is given, so whatever the extractor crops, resizes and scatters can be
    traced back to canvas coordinates planted in the image.
    """

    def __init__(self, image_size: int, layers: int, hidden: int = 8):
        super().__init__()
        self.config = CLIPVisionConfig(
            hidden_size=hidden, num_hidden_layers=layers, image_size=image_size, patch_size=P, num_attention_heads=1
        )
        self.calls: list[int] = []

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> SimpleNamespace:
        assert output_hidden_states
        self.calls.append(pixel_values.shape[0])
        n = pixel_values.shape[0]
        means = functional.avg_pool2d(pixel_values, P).flatten(2).transpose(1, 2)  # (n, T*T, 3)
        states = []
        for layer in range(self.config.num_hidden_layers + 1):
            tok = torch.zeros(n, means.shape[1] + 1, self.config.hidden_size, dtype=pixel_values.dtype)
            tok[:, 1:, :3] = means
            tok[:, :, 3] = layer
            tok[:, 0, :3] = -1.0  # CLS: must be dropped
            states.append(tok)
        return SimpleNamespace(hidden_states=tuple(states))


def coordinate_image(side: int, batch: int = 1) -> torch.Tensor:
    """Channel 0 = x + 1/2, channel 1 = y + 1/2 (pixel centres), channel 2 = 7."""
    centres = torch.arange(side, dtype=torch.float64) + 0.5
    img = torch.empty(batch, 3, side, side, dtype=torch.float64)
    img[:, 0] = centres[None, :]
    img[:, 1] = centres[:, None]
    img[:, 2] = 7.0
    return img.float()


def loop_scatter(feats: torch.Tensor, stride: int, grid: int) -> torch.Tensor:
    """Reference for scatter_windows: explicit per-window accumulation."""
    b, n, _, t, _, d = feats.shape
    h = hann_weights(t)
    w2 = torch.outer(h, h).to(feats.dtype)
    acc = torch.zeros(b, grid, grid, d, dtype=feats.dtype)
    wsum = torch.zeros(grid, grid, dtype=feats.dtype)
    for r in range(n):
        for c in range(n):
            acc[:, r * stride : r * stride + t, c * stride : c * stride + t] += feats[:, r, c] * w2[..., None]
            wsum[r * stride : r * stride + t, c * stride : c * stride + t] += w2
    return acc / wsum[None, :, :, None]


# ---------------------------------------------------------------- geometry


def test_default_window_grids_and_stack_counts():
    cfg = MultiScaleConfig()
    assert cfg.window_grid(0) == [0, 168, 336]  # 3 x 3 windows of 336
    assert cfg.window_grid(1) == [0, 84, 168, 252, 336, 420, 504]  # authors: 168 windows at stride 84 -> 7 x 7
    brief = MultiScaleConfig(strides=168)
    assert brief.strides == (168, 168)
    assert brief.window_grid(1) == [0, 168, 336, 504]  # (672 - 168) / 168 + 1 = 4
    assert (cfg.canvas_tokens, cfg.phase_factor, cfg.num_stacks, cfg.stack_tokens) == (48, 2, 24, 576)
    assert MultiScaleConfig(stack_mode="pool").num_stacks == 6
    labels = cfg.labels()
    assert labels[0] == StackLabel(336, 8, (0, 0)) and labels[3] == StackLabel(336, 8, (1, 1))
    assert labels[4] == StackLabel(336, 16, (0, 0)) and labels[12] == StackLabel(168, 8, (0, 0))
    assert labels[-1] == StackLabel(168, 24, (1, 1))


def test_scaled_config_and_layer_rule():
    assert scaled_config(336) == MultiScaleConfig()
    tiny = scaled_config(56, num_layers=4)
    assert (tiny.canvas_size, tiny.window_sizes, tiny.strides, tiny.stack_grid) == (112, (56, 28), (28, 14), 4)
    assert tiny.layers == (1, 3, 4) and (tiny.num_stacks, tiny.stack_tokens) == (24, 16)
    assert tiny.window_grid(0) == [0, 28, 56] and len(tiny.window_grid(1)) == 7
    assert layers_for_depth(24) == (8, 16, 24)
    with pytest.raises(InputError, match="patch size"):
        scaled_config(84)  # the small windows' stride would be 21 px


def test_hann_weights_are_positive_symmetric_hann():
    for n in (1, 2, 12, 24):
        w = hann_weights(n)
        assert bool((w > 0).all()) and torch.allclose(w, w.flip(0))
        assert torch.allclose(w, torch.hann_window(2 * n + 1, periodic=False, dtype=torch.float64)[1::2])
    assert hann_weights(1).tolist() == [1.0]


# ---------------------------------------------------------------- scatter


@pytest.mark.parametrize(("n", "t", "s"), [(3, 24, 12), (7, 12, 6), (4, 3, 3)])
def test_scatter_of_identical_features_is_that_feature_everywhere(n, t, s):
    grid = (n - 1) * s + t
    v = torch.randn(2, 1, 1, 1, 1, 5, dtype=torch.float64)
    out = scatter_windows(v.expand(2, n, n, t, t, 5), s, grid)
    assert out.shape == (2, grid, grid, 5)
    assert torch.allclose(out, v.reshape(2, 1, 1, 5).expand_as(out), rtol=0, atol=1e-12)  # borders included


def test_scatter_matches_loop_reference_and_places_windows():
    feats = torch.randn(2, 3, 3, 4, 4, 3, dtype=torch.float64)
    assert torch.allclose(scatter_windows(feats, 2, 8), loop_scatter(feats, 2, 8), atol=1e-12)
    # stride == window: no overlap, so each cell holds exactly its window's token (position-coded)
    n, t = 3, 2
    codes = torch.zeros(1, n, n, t, t, 4, dtype=torch.float64)
    for r in range(n):
        for c in range(n):
            for i in range(t):
                for j in range(t):
                    codes[0, r, c, i, j] = torch.tensor([r, c, i, j], dtype=torch.float64)
    out = scatter_windows(codes, t, n * t)[0]
    for y in range(n * t):
        for x in range(n * t):
            assert out[y, x].tolist() == [y // t, x // t, y % t, x % t]


def test_split_stacks_phase_and_pool():
    m = torch.arange(2 * 4 * 4 * 1, dtype=torch.float32).reshape(2, 4, 4, 1)
    phases = split_stacks(m, 2, "phase")
    assert len(phases) == 4
    assert torch.equal(phases[1].reshape(2, 2, 2), m[:, 0::2, 1::2, 0])  # phase (0, 1)
    (pooled,) = split_stacks(m, 2, "pool")
    assert torch.allclose(pooled.reshape(2, 2, 2), functional.avg_pool2d(m.permute(0, 3, 1, 2), 2)[:, 0])


# ---------------------------------------------------------------- extract with a planted stub tower


def test_planted_coordinates_land_on_their_canvas_cells():
    cfg = scaled_config(56, layers=(1, 2))
    tower = PatchMeanTower(56, layers=3)
    img = coordinate_image(cfg.canvas_size, batch=2)  # already canvas-sized: no canvas resampling
    out = extract(tower, img, cfg)
    g, f, grid = cfg.stack_grid, cfg.phase_factor, cfg.canvas_tokens
    assert out.detail.shape == (2, 2 * 2 * f * f, g * g, 8)
    centre = (torch.arange(grid, dtype=torch.float32) + 0.5) * P  # canvas cell centres, canvas px
    for k, label in enumerate(out.labels):
        a, b = label.phase
        stack = out.detail[:, k].reshape(2, g, g, 8)
        want_x = centre[b::f].expand(g, g)
        want_y = centre[a::f][:, None].expand(g, g)
        tol = 1e-4 if label.window_size == 56 else 0.02  # upsampled small windows: bilinear edge clamp
        assert torch.allclose(stack[..., 0], want_x.expand(2, g, g), atol=tol), label
        assert torch.allclose(stack[..., 1], want_y.expand(2, g, g), atol=tol), label
        assert torch.allclose(stack[..., 2], torch.tensor(7.0))
        assert torch.allclose(stack[..., 3], torch.tensor(float(label.layer)))
    # global view: layer -2 of a depth-3 tower is hidden state 2; patch (r, c) centre in canvas px
    glob = out.global_tokens.reshape(2, 4, 4, 8)
    gc = (torch.arange(4, dtype=torch.float32) + 0.5) * 2 * P
    assert torch.all(glob[..., 3] == 2)
    assert torch.allclose(glob[..., 0], gc.expand(2, 4, 4), atol=1e-4)
    assert torch.allclose(glob[..., 1], gc[:, None].expand(2, 4, 4), atol=1e-4)


def test_pool_mode_stacks_average_their_blocks():
    cfg = scaled_config(56, layers=(3,), window_sizes=(56,), strides=(28,), stack_mode="pool", stack_grid=2)
    out = extract(PatchMeanTower(56, layers=3), coordinate_image(112), cfg)
    assert out.detail.shape == (1, 1, 4, 8)
    block_centre = torch.tensor([28.0, 84.0])  # 4 x 4 cells of 14 px average to the block centre
    stack = out.detail[0, 0].reshape(2, 2, 8)
    assert torch.allclose(stack[..., 0], block_centre.expand(2, 2), atol=1e-4)
    assert torch.allclose(stack[..., 1], block_centre[:, None].expand(2, 2), atol=1e-4)


def test_constant_image_gives_constant_stacks_at_default_geometry():
    cfg = MultiScaleConfig(chunk_size=64)
    tower = PatchMeanTower(336, layers=24)
    out = extract(tower, torch.full((1, 3, 200, 300), 0.25), cfg)
    assert out.global_tokens.shape == (1, 576, 8)
    assert out.detail.shape == (1, 24, 576, 8)
    assert torch.allclose(out.detail[..., :3], torch.tensor(0.25), atol=1e-6)  # borders too: no zero weight
    assert [round(float(v)) for v in out.detail[0, :, 0, 3]] == [label.layer for label in cfg.labels()]
    assert sum(tower.calls) == 1 + 9 + 49 and max(tower.calls) <= 64  # one pass for all layers, chunked


# ---------------------------------------------------------------- the real (tiny) CLIPVisionModel


def test_real_clip_matches_manual_reference():
    vision = tiny_clip_vision()
    cfg = scaled_config(56, num_layers=4)
    img = torch.randn(2, 3, 70, 90)
    with torch.no_grad():
        out = extract(vision, img, cfg)
        assert out.global_tokens.shape == (2, 16, 32) and out.detail.shape == (2, 24, 16, 32)
        g_ref = vision(
            pixel_values=functional.interpolate(img, size=(56, 56), mode="bilinear"), output_hidden_states=True
        )
        assert torch.allclose(out.global_tokens, g_ref.hidden_states[-2][:, 1:], atol=1e-5)
        # small windows (28 px at stride 14, upsampled to 56), layer 3, phase (1, 0): stack index 12 + 4 + 2
        canvas = functional.interpolate(img, size=(112, 112), mode="bilinear")
        crops = torch.stack(
            [canvas[:, :, r * 14 : r * 14 + 28, c * 14 : c * 14 + 28] for r in range(7) for c in range(7)], dim=1
        )  # (2, 49, 3, 28, 28), windows row-major
        crops = functional.interpolate(crops.reshape(98, 3, 28, 28), size=(56, 56), mode="bilinear")
        hs = vision(pixel_values=crops, output_hidden_states=True).hidden_states[3][:, 1:]
        pooled = functional.avg_pool2d(hs.reshape(98, 4, 4, 32).permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        feats = pooled.reshape(2, 7, 7, 2, 2, 32)
        ref = loop_scatter(feats.double(), 1, 8)[:, 1::2, 0::2].reshape(2, 16, 32)
    assert out.labels[18] == StackLabel(28, 3, (1, 0))
    assert torch.allclose(out.detail[:, 18].double(), ref, atol=1e-5)


def test_chunked_encoding_equals_unchunked_and_numpy_input():
    vision = tiny_clip_vision(seed=3)
    img = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        whole = extract(vision, img, scaled_config(56, num_layers=4, chunk_size=None))
        chunked = extract(vision, img.numpy(), scaled_config(56, num_layers=4, chunk_size=5))
    assert torch.allclose(whole.global_tokens, chunked.global_tokens, atol=1e-5)
    assert torch.allclose(whole.detail, chunked.detail, atol=1e-5)


def test_gradients_flow_to_the_tower():
    vision = tiny_clip_vision()
    out = extract(vision, torch.randn(1, 3, 56, 56), scaled_config(56, num_layers=4))
    out.detail.sum().backward()
    grads = {name: p.grad for name, p in vision.named_parameters()}
    patch = [g for name, g in grads.items() if name.endswith("patch_embedding.weight")]
    assert len(patch) == 1 and patch[0] is not None and bool(patch[0].abs().sum() > 0)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strides": (200, 84)}, "patch size"),
        ({"strides": (154, 84)}, "do not tile"),
        ({"window_sizes": (336, 170)}, "patch size"),
        ({"strides": (168,)}, "1 strides for 2"),
        ({"window_sizes": (168,), "strides": (252,)}, "gaps"),
        ({"layers": (0, 8)}, "layers"),
        ({"layers": ()}, "layers"),
        ({"window_sizes": (224,), "strides": (224,)}, "divide the tower input"),
        ({"stack_grid": 20}, "does not divide"),
        ({"stack_grid": 96, "stack_mode": "pool"}, "finer"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"windows": (336,)}, "windows"),
    ],
)
def test_bad_configs_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        MultiScaleConfig(**kwargs)


def test_window_positions_rejects_untiled_canvas():
    assert window_positions(672, 336, 168) == [0, 168, 336]
    with pytest.raises(InputError, match="do not tile"):
        window_positions(672, 336, 112 * 2)


def test_config_must_fit_the_tower_and_image_must_be_well_formed():
    vision = PatchMeanTower(56, layers=4)
    with pytest.raises(InputError, match="input size"):
        extract(vision, torch.zeros(1, 3, 56, 56))  # default 336 geometry on a 56 px tower
    with pytest.raises(InputError, match="exceed"):
        extract(vision, torch.zeros(1, 3, 56, 56), scaled_config(56, layers=(1, 8)))
    with pytest.raises(InputError, match="global_layer"):
        extract(vision, torch.zeros(1, 3, 56, 56), scaled_config(56, num_layers=4, global_layer=-6))
    cfg = scaled_config(56, num_layers=4)
    for bad in (np.zeros((1, 3, 56, 56), np.uint8), torch.zeros(1, 1, 56, 56), torch.zeros(3, 56, 56)):
        with pytest.raises(InputError):
            extract(vision, bad, cfg)
    with pytest.raises(InputError, match="NaN"):
        extract(vision, torch.full((1, 3, 56, 56), float("nan")), cfg)
