"""The five methods, one subpackage each, built on the shared core (geometry, io, datasets, metrics).

- :mod:`rsvl.methods.vlm4rsdet` — detection trained together with a Florence-2 branch (VLM4RSDet).
"""
