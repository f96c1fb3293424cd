"""The joint training model (detector + optional Florence-2 branch) and the inference export.

The detector runs unchanged; a forward hook on ``detector.backbone`` hands the five FPN maps of the
same forward pass to the VLM branch, so ``L = L_cls + L_reg + L_ctr + alpha * L_llm`` back-propagates
into one shared backbone + FPN (the paper's "dual-branch shared backbone"). Nothing of the branch is
inside the detector: :func:`export_detector` returns the detector module itself, which is exactly
what :func:`rsvl.methods.vlm4rsdet.detector.build_detector` builds for the baseline.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["VLM4RSDet", "export_detector"]


class VLM4RSDet(nn.Module):
    """A detector trained with (or, when ``vlm`` is None, without) the VLM branch.

    Args:
        detector: a detector from :func:`build_detector` (``.backbone`` returns the FPN maps).
        vlm: a :class:`rsvl.methods.vlm4rsdet.vlm_branch.VLMBranch`, or None for the baseline.
        class_names: names of the detector's labels ``0..K-1`` (the text the VLM learns to write).
        alpha: weight of the language-model loss (0.05 in the paper).
    """

    def __init__(
        self, detector: nn.Module, vlm: nn.Module | None, class_names: Sequence[str], alpha: float = 0.05
    ) -> None:
        super().__init__()
        self.detector = detector
        self.vlm = vlm
        self.class_names = list(class_names)
        self.alpha = float(alpha)
        self._captured: OrderedDict[str, Tensor] | None = None
        self._canvas: tuple[int, int] = (0, 0)
        self._hook = detector.backbone.register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, inputs: Any, output: OrderedDict[str, Tensor]) -> None:
        if self.vlm is not None and self.training:
            self._captured = output
            # the padded batch the FPN saw: the VLM's loc bins must span this canvas, not each image
            self._canvas = (int(inputs[0].shape[-2]), int(inputs[0].shape[-1]))

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        """Training: dict of losses incl. ``llm`` (unweighted) and ``loss`` (the weighted total).

        Eval: the detector's detections (the VLM branch is not run).
        """
        if not self.training:
            return self.detector(images)
        if targets is None:
            raise ValueError("training needs targets")
        self._captured = None
        losses = dict(self.detector(images, targets))
        total = sum(losses.values())
        if self.vlm is not None:
            if self._captured is None:
                raise RuntimeError("the detector's backbone did not run: cannot feed the VLM branch")
            features = list(self._captured.values())
            self._captured = None
            vlm_targets = [self._vlm_target(tgt) for tgt in targets]
            llm = self.vlm(features, vlm_targets)
            losses["llm"] = llm
            total = total + self.alpha * llm
        losses["loss"] = total
        return losses

    def _vlm_target(self, target: dict[str, Tensor]) -> dict[str, Any]:
        """Boxes as the VLM writes them: relative to the padded canvas the visual tokens cover.

        The detectors do not resize, and pad at the bottom / right only, so input pixels are canvas
        pixels and only the size used for ``<loc_k>`` quantisation changes.
        """
        labels = target["labels"].tolist()
        return {
            "boxes": target["boxes"].detach(),
            "names": [self.class_names[k] for k in labels],
            "image_size": self._canvas,
        }


def export_detector(model: VLM4RSDet | nn.Module) -> nn.Module:
    """The deployable detector: the joint model's detector module, VLM branch and hook dropped.

    The returned module is the same object the joint model trained (no copy; the joint model's
    feature hook is removed, so do not train the joint model afterwards); its parameters, FLOPs
    and outputs are those of a baseline detector with the same weights.
    """
    if isinstance(model, VLM4RSDet):
        model._hook.remove()
        return model.detector
    return model
