"""LRS-VQA: visual question answering on very large remote-sensing images.

A Dynamic Image Pyramid (:mod:`~rsvl.methods.lrsvqa.dip`) over the core's lazy raster reader; a
coarse-to-fine search (:mod:`~rsvl.methods.lrsvqa.selection`) that, at each level, ranks the vision
tokens by their relevance to the question, fetches the children of the best tiles at the next level
and prunes the rest; relevance from the language model's own text-to-image attention or from the
Region Focus Module distilled from it (:mod:`~rsvl.methods.lrsvqa.rfm`). Only the global view and the
surviving tokens enter the language model. See ``docs/lrsvqa.md``.
"""
