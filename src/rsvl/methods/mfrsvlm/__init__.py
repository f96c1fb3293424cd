"""MF-RSVLM (FUSE-RSVLM): a LLaVA-1.5-style remote-sensing VLM with multi-scale detail injection.

The model keeps the LLaVA-1.5 pipeline (CLIP ViT-L/14-336, MLP projector, Vicuna-7B) and adds two
pieces, one module each:

* :mod:`~rsvl.methods.mfrsvlm.features`: the multi-scale, multi-layer feature extractor. Beside
  the ordinary 336 px global view, the image is resized to a 672 px canvas, cut into overlapping
  336 px and 168 px sliding windows, each window encoded by the same CLIP tower; hidden states of
  ViT layers 8, 16 and 24 are scattered back onto a canvas-resolution token map with Hann-window
  weights (overlaps blend smoothly) and the map is sampled into ordered *detail stacks* of 24 x 24
  tokens, the size of the global view.
* :mod:`~rsvl.methods.mfrsvlm.injection`: the recurrent visual injection. At LLM layers 2, 4, 6
  and 8 a router conditioned on the current visual hidden states mixes the detail stacks and a
  sigmoid gate decides how much of the mixture is added (with a learnt residual scale) to the
  visual positions, so the visual evidence is refreshed during decoding instead of being a one-time
  prefix.

Around them: :mod:`~rsvl.methods.mfrsvlm.model` (the ``MFRSVLM`` module over the real
``LlavaForConditionalGeneration``: baseline / fusion / fusion + injection variants, generation,
the two LLaVA training stages with LoRA), :mod:`~rsvl.methods.mfrsvlm.prompts` (task prompts,
conversation templates, exact loss masking), :mod:`~rsvl.methods.mfrsvlm.data` (caption, VQA and
classification datasets as a seeded task mix) and :mod:`~rsvl.methods.mfrsvlm.train` (resumable
training and evaluation).

The authors' implementation is ``github.com/Yunkaidang/RSVLM`` (``mfrsvlm/model/deepstack.py`` and
``mfrsvlm/model/language_model/vhm_llama.py``); where our choices differ from it, the module that
makes the choice says so.
"""
