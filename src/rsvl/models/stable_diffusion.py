"""Stable Diffusion components for attention probing: tiny random ones for tests, local real ones.

Only what DDIM inversion needs is loaded (no pipeline, no safety checker): the real diffusers
``UNet2DConditionModel`` and ``AutoencoderKL``, the real transformers ``CLIPTextModel`` and
``CLIPTokenizer``, and the scheduler's configuration.

* :func:`tiny_stable_diffusion` builds the SD-1.4 *layout* (CrossAttnDownBlock2D x3 + DownBlock2D,
  a cross-attention mid block, UpBlock2D + CrossAttnUpBlock2D x3, a VAE with 4 latent channels that
  downsamples by 8) with a few channels, random weights and an in-memory CLIP tokenizer, so a 64 px
  image gives an 8x8 latent and self-attention at 8x8, 4x4, 2x2 and 1x1 in well under a second.
* :func:`load_stable_diffusion` loads a local diffusers folder (``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/``, ``scheduler/``), as the SD-1.4 repository lays it out.
* :meth:`StableDiffusionParts.null_text_embedding` is the text encoder's output for the empty prompt,
  tokenised the way Stable Diffusion's pipeline does for its unconditional branch: ``""`` padded
  to the tokenizer's ``model_max_length`` (77 for SD-1.4), i.e. ``[bos, eos, eos, ...]`` because
  SD's pad token is ``<|endoftext|>``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel
from tokenizers import pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from rsvl.errors import InputError

logger = logging.getLogger(__name__)

__all__ = [
    "SD14_SCHEDULER_CONFIG",
    "SD_SUBFOLDERS",
    "StableDiffusionParts",
    "load_stable_diffusion",
    "null_text_ids",
    "tiny_clip_tokenizer",
    "tiny_stable_diffusion",
]

#: The subfolders of a diffusers Stable Diffusion folder that :func:`load_stable_diffusion` reads.
SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")

#: The noise schedule of SD-1.4's ``scheduler/scheduler_config.json`` (a PNDM config; DDIM reads the same keys).
SD14_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class StableDiffusionParts:
    """The components of a Stable Diffusion model that attention probing needs.

    Attributes:
        unet, vae, text_encoder: the real diffusers / transformers modules (eval mode).
        tokenizer: the CLIP tokenizer; it produces ``null_text_ids``.
        scheduler_config: the noise schedule (a scheduler config dict); build schedulers with
            :meth:`ddim_scheduler` / :meth:`inverse_scheduler`.
        null_text_ids: ``(1, L)`` token ids of the empty prompt padded to ``L = model_max_length``.
        real_weights: True for weights loaded from a folder, False for the tiny random model.
        source: a short description recorded in attention maps.
    """

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer | None
    scheduler_config: dict[str, Any]
    null_text_ids: torch.Tensor
    real_weights: bool = False
    source: str = "tiny random stable diffusion"
    _null_embedding: torch.Tensor | None = field(default=None, init=False, repr=False)

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent cell along each axis (8 for SD-1.4)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> StableDiffusionParts:
        """Move the three networks (in place) and forget the cached null-text embedding; returns self."""
        # only the arguments given: diffusers warns about fp32 modules whenever a dtype keyword is present
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        for module in (self.unet, self.vae, self.text_encoder):
            module.to(**moves)
        self._null_embedding = None
        return self

    def ddim_scheduler(self) -> DDIMScheduler:
        """A fresh DDIM (denoising) scheduler with this model's noise schedule."""
        return DDIMScheduler.from_config(self.scheduler_config)

    def inverse_scheduler(self) -> DDIMInverseScheduler:
        """A fresh DDIM inversion scheduler with this model's noise schedule."""
        return DDIMInverseScheduler.from_config(self.scheduler_config)

    @torch.inference_mode()
    def null_text_embedding(self) -> torch.Tensor:
        """``(1, L, D)``: the text encoder's last hidden state for the empty prompt (cached)."""
        if self._null_embedding is None:
            ids = self.null_text_ids.to(self.text_encoder.device)
            hidden = self.text_encoder(input_ids=ids).last_hidden_state
            self._null_embedding = hidden.to(self.unet.dtype)
        return self._null_embedding

    def save_pretrained(self, path: str | PathLike[str]) -> Path:
        """Write a diffusers folder that :func:`load_stable_diffusion` reads back (tests, exports)."""
        if self.tokenizer is None:
            raise InputError("these parts have no tokenizer to save; a Stable Diffusion folder needs tokenizer/")
        root = Path(path)
        self.unet.save_pretrained(root / "unet")
        self.vae.save_pretrained(root / "vae")
        self.text_encoder.save_pretrained(root / "text_encoder")
        self.tokenizer.save_pretrained(root / "tokenizer")
        self.ddim_scheduler().save_pretrained(root / "scheduler")
        return root


def null_text_ids(tokenizer: CLIPTokenizer) -> torch.Tensor:
    """``(1, L)`` ids of ``""`` padded to ``tokenizer.model_max_length``, as SD's pipeline tokenises it."""
    ids = tokenizer(
        "", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return ids.long()


def tiny_clip_tokenizer(max_length: int = 16) -> CLIPTokenizer:
    """A real ``CLIPTokenizer`` built in memory: the 256 byte-level characters, each also with CLIP's
    ``</w>`` end-of-word suffix, no merges, then ``<|startoftext|>`` and ``<|endoftext|>`` as the
    last two ids (as in CLIP's 49,408-token vocabulary). Any text tokenises, character by character.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def _tiny_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=32,
        attention_head_dim=2,  # diffusers reads SD's legacy "attention_head_dim" as the number of heads
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def tiny_stable_diffusion(seed: int = 0) -> StableDiffusionParts:
    """Random SD-1.4-layout parts with a few channels (tests): deterministic for a given ``seed``.

    The VAE downsamples by 8 (four encoder blocks), so a 64 px image gives an 8x8 latent; the UNet
    has self-attention at the latent grid and each of its three halvings (8, 4, 2 and the 1x1 mid
    block at 64 px). The text encoder reads the tiny tokenizer's 16-token prompts.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        tokenizer = tiny_clip_tokenizer()
        unet, vae, text_encoder = _tiny_unet(), _tiny_vae(), _tiny_text_encoder(tokenizer)
    finally:
        torch.random.set_rng_state(generator_state)
    for module in (unet, vae, text_encoder):
        module.eval()
    return StableDiffusionParts(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=dict(SD14_SCHEDULER_CONFIG),
        null_text_ids=null_text_ids(tokenizer),
        real_weights=False,
        source=f"tiny random stable diffusion (seed {seed})",
    )


def _check_folder(root: Path) -> None:
    if not root.is_dir():
        raise InputError("Stable Diffusion folder not found (expected a local diffusers folder)", root)
    missing = [name for name in SD_SUBFOLDERS if not (root / name).is_dir()]
    if missing:
        raise InputError(
            f"not a diffusers Stable Diffusion folder: missing {', '.join(s + '/' for s in missing)} "
            f"(needs {', '.join(s + '/' for s in SD_SUBFOLDERS)})",
            root,
        )
    tokenizer = root / "tokenizer"
    has_vocab = (tokenizer / "tokenizer.json").is_file() or all(
        (tokenizer / name).is_file() for name in ("vocab.json", "merges.txt")
    )
    if not has_vocab:  # CLIPTokenizer would silently fall back to a 3-token vocabulary
        raise InputError("tokenizer/ holds neither tokenizer.json nor vocab.json + merges.txt", root)


def load_stable_diffusion(
    path: str | PathLike[str], device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> StableDiffusionParts:
    """Load UNet, VAE, text encoder, tokenizer and noise schedule from a local diffusers folder.

    Nothing is downloaded (``local_files_only``). A missing folder or subfolder, a tokenizer folder
    without vocabulary files, or a subfolder the libraries cannot read, is an :class:`InputError`
    naming the path.
    """
    root = Path(path).expanduser()
    _check_folder(root)
    if isinstance(dtype, str) and dtype not in _DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
    torch_dtype = _DTYPES[dtype] if isinstance(dtype, str) else dtype
    try:
        local = {"torch_dtype": torch_dtype, "local_files_only": True}
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **local)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **local)
        text_encoder = CLIPTextModel.from_pretrained(
            root, subfolder="text_encoder", dtype=torch_dtype, local_files_only=True
        )
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", local_files_only=True)
        scheduler_config = dict(DDIMScheduler.load_config(root, subfolder="scheduler", local_files_only=True))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load Stable Diffusion components: {exc}", root) from exc
    ids = null_text_ids(tokenizer)
    if int(ids.max()) >= text_encoder.config.vocab_size:
        raise InputError(
            f"tokenizer/ ids reach {int(ids.max())} but text_encoder/ has {text_encoder.config.vocab_size} tokens", root
        )
    parts = StableDiffusionParts(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        null_text_ids=ids,
        real_weights=True,
        source=f"stable diffusion {root.name}",
    )
    return parts.to(device=device)
