"""Open-Det: the detector, the aligner, the distiller and the name generator as one model.

Training (``forward(pixels, targets)``) returns the weighted loss terms:

* per stage (encoder proposals + every decoder layer, :func:`~.criterion.stage_losses`): ``bce``,
  ``align``, ``bbox``, ``giou``, summed over stages (the encoder stage and the one-to-one layers
  score their queries against the names with their own aligners, as the authors' code does);
* ``distill``: VLD-M's VL-prompts of the matched queries of the last ``vl_layers`` (2: layers 5
  and 6) decoder layers against the names' text embeddings (cosine);
* ``lm``: FlanT5 names those prompts (teacher-forced cross-entropy);
* ``lm_denoise``: FlanT5 names the *noised* text embeddings of every ground truth (text denoising);
* ``total``: their sum.

Inference (:meth:`OpenDet.predict`) needs no vocabulary: the final layer's boxes, their objectness
and the names the generator writes for their VL-prompts (beam search). The aligner is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from rsvl.errors import InputError
from rsvl.methods.opendet.align import BidirectionalAligner
from rsvl.methods.opendet.config import OpenDetConfig
from rsvl.methods.opendet.criterion import ImageTargets, stage_losses
from rsvl.methods.opendet.detector import OpenDetDetector
from rsvl.methods.opendet.losses import distillation_loss
from rsvl.methods.opendet.names import NameGenerator
from rsvl.methods.opendet.vld import VLDistiller

__all__ = ["OpenDet", "OpenDetections"]

#: Decoder layers (counted from the last) whose matched queries train VLD-M and the generator.
VL_LAYERS = 2


@dataclass
class OpenDetections:
    """One image's detections: normalised ``xyxy`` boxes, objectness scores, generated names."""

    boxes: Tensor  # (N, 4) in [0, 1]
    scores: Tensor  # (N,)
    names: list[list[str]]  # beam candidates per box, best first
    prompts: Tensor  # (N, T) the VL-prompts the names were generated from


class OpenDet(nn.Module):
    """Open-ended detector: boxes + generated names (see the module docstring)."""

    def __init__(self, config: OpenDetConfig, names: NameGenerator) -> None:
        super().__init__()
        if names.prompt_dim != config.text_dim:
            raise InputError(
                f"the name generator reads {names.prompt_dim}-d prompts, the config's text_dim is {config.text_dim}"
            )
        self.config = config
        self.detector = OpenDetDetector(config)
        self.aligner = BidirectionalAligner(config.hidden, config.text_dim)
        self.encoder_aligner = BidirectionalAligner(config.hidden, config.text_dim)
        self.distiller = VLDistiller(config, self.detector.hf_config)
        self.names = names

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.detector.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.detector.std

    def forward(
        self, pixels: Tensor, targets: list[ImageTargets], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Weighted training losses of a normalised ``(B, 3, H, W)`` batch and its targets."""
        if len(targets) != pixels.shape[0]:
            raise InputError(f"{pixels.shape[0]} images but {len(targets)} targets")
        cfg, lc = self.config, self.config.loss
        out = self.detector(pixels)
        terms: dict[str, Tensor] = {}
        stages = [(out.encoder, self.encoder_aligner, False)]
        stages += [(layer, self.aligner, layer.one_to_many) for layer in out.layers]
        per_stage = []
        for stage, aligner, one_to_many in stages:
            logits = [aligner(stage.hidden[b], t.text.to(stage.hidden)) for b, t in enumerate(targets)]
            result = stage_losses(stage, logits, targets, lc, one_to_many)
            per_stage.append(result)
            for name, value in result.terms.items():
                terms[name] = terms.get(name, 0) + value
        prompts_all, text_all, names_all = [], [], []
        first_vl = max(cfg.one_to_many_layers if lc.decoupled_matching else 0, cfg.decoder_layers - VL_LAYERS)
        for i in range(first_vl, cfg.decoder_layers):
            layer, matches = out.layers[i], per_stage[1 + i].matches
            prompts = self.distiller(layer.hidden, layer.boxes, out.maps)
            for b, (tgt, match) in enumerate(zip(targets, matches, strict=True)):
                prompts_all.append(prompts[b, match.query_idx.to(prompts.device)])
                text_all.append(tgt.text[match.gt_idx].to(prompts))
                names_all.extend(tgt.names[j] for j in match.gt_idx.tolist())
        prompts_cat = torch.cat(prompts_all) if prompts_all else out.final.hidden.new_zeros(0, cfg.text_dim)
        text_cat = torch.cat(text_all) if text_all else prompts_cat.detach()
        terms["distill"] = lc.distill * distillation_loss(prompts_cat, text_cat.detach())
        terms["lm"] = lc.lm * self.names.loss(prompts_cat, names_all)
        gt_text = torch.cat([t.text for t in targets]).to(prompts_cat) if targets else prompts_cat
        gt_names = [n for t in targets for n in t.names]
        terms["lm_denoise"] = lc.lm_denoise * self.names.denoise_loss(gt_text.detach(), gt_names, generator=generator)
        terms["total"] = sum(terms.values())  # type: ignore[assignment]
        return terms

    @torch.no_grad()
    def predict(
        self,
        pixels: Tensor,
        score_threshold: float = 0.05,
        max_detections: int = 100,
        name: bool = True,
        num_beams: int = 3,
        max_new_tokens: int = 30,
    ) -> list[OpenDetections]:
        """Boxes (normalised ``xyxy``), objectness and generated names for each image of the batch.

        Per image the ``max_detections`` best final-layer queries with objectness ``>= score_threshold``
        are kept and named (``name=False`` skips the generator: ``names`` are empty lists).
        """
        was_training = self.training
        self.eval()
        try:
            out = self.detector(pixels)
            final = out.final
            probs = final.objectness.sigmoid()
            prompts = self.distiller(final.hidden, final.boxes, out.maps)
            results = []
            for b in range(pixels.shape[0]):
                order = probs[b].argsort(descending=True)[:max_detections]
                order = order[probs[b, order] >= score_threshold]
                boxes = box_convert(final.boxes[b, order], "cxcywh", "xyxy").clamp(0, 1)
                p = prompts[b, order]
                names = (
                    self.names.generate(
                        p, num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=max_new_tokens
                    )
                    if name and len(order)
                    else [[] for _ in range(len(order))]
                )
                results.append(OpenDetections(boxes, probs[b, order], names, p))
            return results
        finally:
            self.train(was_training)
