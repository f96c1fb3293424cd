"""VLM4RSDet: a detector (HBB or le90 OBB) trained together with a Florence-2 branch.

The branch reads the detector's five FPN maps, turns them into visual tokens (1x1 conv, 32x32
resize, projector), enhances them with GLCA, and learns to write the image's boxes as Florence-2
``<loc_k>`` text, the objects split over the levels by size (LHPS). Its language-model loss,
weighted by ``alpha`` (0.05), flows back into the shared backbone and FPN. At inference the branch
is dropped: :func:`export_detector` returns the plain detector, with the baseline's parameters,
FLOPs and outputs.

Modules: :mod:`.config` (YAML recipe), :mod:`.detector` (HBB FCOS / rotated FCOS on an FPN),
:mod:`.vlm_branch` (tokens, GLCA, LHPS, Florence-2 loss), :mod:`.model` (the joint model and the
export), :mod:`.data` (training crops from any detection dataset format), :mod:`.train` (loop with
checkpoints and resume), :mod:`.infer` (loading an exported detector, sliced prediction, writers).
"""
