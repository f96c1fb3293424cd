"""Attention maps as data: cross-attention of text to image regions and self-attention among regions.

* :mod:`~rsvl.attention.maps`: :class:`CrossAttention` / :class:`SelfAttention` containers and the
  multi-scale aggregation of self-attention matrices (resizing an ``(r*r, r*r)`` matrix to another grid).
* :mod:`~rsvl.attention.diffusers_capture`: an attention processor that records self-attention
  probabilities inside a diffusers UNet.
* :mod:`~rsvl.attention.qwen_vl`: where Qwen2-VL/Qwen2.5-VL put an image's tokens, and the map of one
  text position's attention over them.
"""

from __future__ import annotations

from rsvl.attention.maps import CrossAttention, SelfAttention, merge_self_attention, resize_self_attention

__all__ = ["CrossAttention", "SelfAttention", "merge_self_attention", "resize_self_attention"]
