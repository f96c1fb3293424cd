"""RSVG-ZeroOV: training-free referring grounding from attention (Overview -> Focus -> Evolve).

An expression's cross-attention in a frozen VLM (Qwen2.5-VL) says roughly *where*; the
self-attention of a frozen diffusion UNet (or the feature affinity of the packaged EfficientNet-
Lite0) says *what belongs together*; their fusion is grown from the strongest cross-attention
cells into a mask and a box, optionally refined by SAM with the box as prompt. Nothing is trained.

* :mod:`~rsvl.methods.zeroov.config`: settings (paper defaults);
* :mod:`~rsvl.methods.zeroov.providers`: provider protocols and registries;
* :mod:`~rsvl.methods.zeroov.overview_qwen`, :mod:`~rsvl.methods.zeroov.focus_sd`,
  :mod:`~rsvl.methods.zeroov.focus_lite0`, :mod:`~rsvl.methods.zeroov.refine_sam`: the models;
* :mod:`~rsvl.methods.zeroov.fusion`, :mod:`~rsvl.methods.zeroov.evolve`: the training-free stages;
* :mod:`~rsvl.methods.zeroov.pipeline`: :class:`ZeroOVGrounder`;
* :mod:`~rsvl.methods.zeroov.infer`: files, datasets, outputs, resume (``rsvl ground``).

Import the submodules you need: this package imports nothing heavy on its own.
"""
