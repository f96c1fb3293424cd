"""Captioning metrics as the COCO caption evaluation computes them: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

The numbers come from ``pycocoevalcap`` (the reference implementation, run in-process) on text
tokenised by the same Stanford PTB tokenizer call as ``pycocoevalcap.tokenizer.PTBTokenizer``:
``java -cp stanford-corenlp-3.4.1.jar edu.stanford.nlp.process.PTBTokenizer -preserveLines
-lowerCase`` on the jar shipped with pycocoevalcap, then its punctuation tokens removed. Unlike
``PTBTokenizer.tokenize`` this call writes its temporary file to the system temp folder rather
than into the installed package (which may be read-only) and captures the tokenizer's stderr;
the tokens are the same (a test checks it against ``PTBTokenizer``). References and predictions
are tokenised separately, as ``COCOEvalCap.evaluate`` does.

Scorers: ``Bleu(4)`` (corpus BLEU, "closest" reference length), ``Meteor()`` (METEOR 1.5 jar,
``-l en -norm``), ``Rouge()`` (ROUGE-L, beta 1.2), ``Cider()`` (CIDEr-D: n = 4, sigma = 6, document
frequencies from this set's references, so it needs more than one image to be meaningful).
SPICE is not computed (its jar downloads models). Java is required (PTB tokenizer, METEOR).

Input rules: every ground-truth image needs at least one non-empty reference; each prediction is
one string (or a one-element list). A missing prediction raises with the counts (the COCO
evaluation has no rule for it); a prediction for an unknown image raises; an empty prediction is
scored (0 on every metric) and counted in a warning.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, TypeVar

from rsvl.datasets.sample import Sample
from rsvl.errors import DatasetError, InputError
from rsvl.metrics.records import id_key, keyed, read_json_records, split_ids
from rsvl.metrics.report import EvalReport, reference

__all__ = [
    "CAPTION_METRICS",
    "captions_from_samples",
    "evaluate_captions",
    "load_coco_captions",
    "ptb_tokenize",
]

logger = logging.getLogger(__name__)

Id = int | str
K = TypeVar("K")

#: Metric keys, in report order, and the scorer family each belongs to.
CAPTION_METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_FAMILIES = {
    "BLEU": ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"),
    "METEOR": ("METEOR",),
    "ROUGE-L": ("ROUGE-L",),
    "CIDEr": ("CIDEr",),
}


def _require_backend() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise InputError("captioning metrics need pycocoevalcap: `pip install pycocoevalcap`") from None
    if shutil.which("java") is None:
        raise InputError(
            "captioning metrics need Java for the PTB tokenizer and METEOR "
            "(e.g. `apt-get install default-jre-headless`)"
        )


def ptb_tokenize(captions: Mapping[K, Sequence[str]]) -> dict[K, list[str]]:
    """PTB-tokenise, lowercase and strip punctuation tokens, exactly as pycocoevalcap's PTBTokenizer.

    Args:
        captions: ``key -> list of caption strings``.

    Returns:
        ``key -> list of tokenised captions`` (tokens joined by single spaces), same order.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    order = [(k, i) for k, caps in captions.items() for i in range(len(caps))]
    if not order:
        return {k: [] for k in captions}
    sentences = "\n".join(c.replace("\n", " ") for caps in captions.values() for c in caps)
    jar = Path(ptb.__file__).resolve().parent / ptb.STANFORD_CORENLP_3_4_1_JAR
    fd, name = tempfile.mkstemp(prefix="rsvl-ptb-", suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(sentences.encode())
        cmd = ["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", name]
        done = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    if done.returncode != 0:
        raise RuntimeError(
            f"the PTB tokenizer failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[-500:]}"
        )
    lines = done.stdout.decode().split("\n")
    if len(lines) < len(order):
        raise RuntimeError(f"the PTB tokenizer returned {len(lines)} lines for {len(order)} captions")
    out: dict[K, list[str]] = {k: [] for k in captions}
    for (k, _), line in zip(order, lines, strict=False):
        out[k].append(" ".join(w for w in line.rstrip().split(" ") if w not in ptb.PUNCTUATIONS))
    return out


def _references(value: Any, key: str) -> list[str]:
    refs = [value] if isinstance(value, str) else value
    if not isinstance(refs, list | tuple) or not refs:
        raise InputError(f"ground truth {key!r}: expected a caption or a non-empty list of captions, got {value!r:.80}")
    for ref in refs:
        if not isinstance(ref, str):
            raise InputError(f"ground truth {key!r}: captions must be strings, got {type(ref).__name__} {ref!r:.60}")
        if not ref.strip():
            raise InputError(f"ground truth {key!r}: empty reference caption")
    return list(refs)


def _prediction(value: Any, key: str) -> str:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise InputError(f"prediction {key!r}: expected one caption, got {len(value)}")
        value = value[0]
    if not isinstance(value, str):
        raise InputError(f"prediction {key!r}: expected a caption string, got {type(value).__name__} {value!r:.60}")
    return value


def _families(metrics: Iterable[str]) -> list[str]:
    chosen = []
    for name in metrics:
        family = next((f for f, keys in _FAMILIES.items() if name == f or name in keys), None)
        if family is None:
            raise InputError(f"unknown caption metric {name!r}; known: BLEU, {', '.join(CAPTION_METRICS)}")
        if family not in chosen:
            chosen.append(family)
    if not chosen:
        raise InputError("no caption metric selected")
    return chosen


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, scores = scorer.compute_score(gts, res)
    except (ValueError, BrokenPipeError) as exc:
        err = scorer.meteor_p.stderr.read(2000).decode(errors="replace") if scorer.meteor_p.poll() is not None else ""
        raise RuntimeError(f"METEOR (Java) failed: {exc}; {err}") from None
    finally:
        # Stop the Java process now rather than whenever the scorer is garbage-collected.
        with contextlib.suppress(OSError):
            scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
        if scorer.lock.locked():  # left held by a failed compute_score; Meteor.__del__ would block on it
            scorer.lock.release()
    return float(score), [float(s) for s in scores]


def evaluate_captions(
    gt: Mapping[Id, str | Sequence[str]],
    pred: Mapping[Id, str | Sequence[str]],
    *,
    metrics: Sequence[str] = ("BLEU", "METEOR", "ROUGE-L", "CIDEr"),
    per_image: bool = False,
) -> EvalReport:
    """COCO caption metrics of one predicted caption per image against its references.

    Args:
        gt: ``image id -> reference caption(s)``.
        pred: ``image id -> predicted caption`` (a string or a one-element list).
        metrics: the scorer families to run (``BLEU``, ``METEOR``, ``ROUGE-L``, ``CIDEr``; a key such
            as ``BLEU-4`` selects its family). Leaving out METEOR saves its ~5-10 s Java start-up.
        per_image: include each image's scores in ``details["per_image"]``.

    Returns:
        metrics ``BLEU-1`` .. ``BLEU-4``, ``METEOR``, ``ROUGE-L``, ``CIDEr`` (pycocoevalcap's scale:
        BLEU/METEOR/ROUGE-L in [0, 1], CIDEr in [0, 10]).
    """
    families = _families(metrics)
    _require_backend()
    g = {k: _references(v, k) for k, v in keyed(gt, "ground truth").items()}
    p = {k: _prediction(v, k) for k, v in keyed(pred, "predictions").items()}
    if not g:
        raise InputError("ground truth is empty")
    missing_ids = split_ids(g, p, "captions")
    if missing_ids:
        shown = ", ".join(repr(k) for k in missing_ids[:5])
        raise InputError(
            f"captions: {len(missing_ids)} of {len(g)} images have no predicted caption ({shown}"
            f"{', ...' if len(missing_ids) > 5 else ''}); every ground-truth image needs one"
        )
    ids = sorted(g)
    gts = ptb_tokenize({k: g[k] for k in ids})
    res = ptb_tokenize({k: [p[k]] for k in ids})
    for k in ids:
        if not all(ref.strip() for ref in gts[k]):
            raise InputError(f"ground truth {k!r}: a reference caption has no words after PTB tokenization")
    warnings: list[str] = []
    empty = [k for k in ids if not res[k][0].strip()]
    if empty:
        warnings.append(f"{len(empty)} empty predicted caption(s) (e.g. {empty[0]!r}); scored 0")
    if len(ids) < 2 and "CIDEr" in families:
        warnings.append("CIDEr's document frequencies come from the references of one image: CIDEr is 0")

    out: dict[str, float] = {}
    per: dict[str, dict[str, float]] = {k: {} for k in ids}
    for family in families:
        if family == "BLEU":
            from pycocoevalcap.bleu.bleu import Bleu

            with contextlib.redirect_stdout(io.StringIO()) as chatter:  # Bleu prints its n-gram stats
                scores, per_img = Bleu(4).compute_score(gts, res)
            logger.debug("pycocoevalcap Bleu: %s", chatter.getvalue().strip())
            for n in range(4):
                out[f"BLEU-{n + 1}"] = float(scores[n])
                for k, s in zip(ids, per_img[n], strict=True):
                    per[k][f"BLEU-{n + 1}"] = float(s)
        elif family == "METEOR":
            score, per_img = _meteor(gts, res)
            out["METEOR"] = score
            for k, s in zip(ids, per_img, strict=True):
                per[k]["METEOR"] = s
        else:
            if family == "ROUGE-L":
                from pycocoevalcap.rouge.rouge import Rouge as Scorer
            else:
                from pycocoevalcap.cider.cider import Cider as Scorer
            score, per_img = Scorer().compute_score(gts, res)
            out[family] = float(score)
            for k, s in zip(ids, per_img, strict=True):
                per[k][family] = float(s)

    metrics_out = {name: out[name] for name in CAPTION_METRICS if name in out}
    details: dict[str, Any] = {
        "n_images": len(ids),
        "n_references": sum(len(v) for v in g.values()),
        "n_empty_predictions": len(empty),
    }
    if per_image:
        details["per_image"] = per
    protocol = {
        "tokenizer": "Stanford PTBTokenizer 3.4.1 (-preserveLines -lowerCase), pycocoevalcap punctuation removed",
        "scorers": {
            "BLEU": "pycocoevalcap Bleu(4), corpus level, option='closest'",
            "METEOR": "pycocoevalcap Meteor (meteor-1.5.jar -l en -norm)",
            "ROUGE-L": "pycocoevalcap Rouge (beta=1.2)",
            "CIDEr": "pycocoevalcap Cider (CIDEr-D, n=4, sigma=6, IDF from this set's references)",
        },
        "computed": families,
        "missing_predictions": "error",
        "empty_predictions": "scored (0)",
        "reference": reference("pycocoevalcap (COCO caption evaluation)", "pycocoevalcap"),
    }
    return EvalReport("caption", "coco", metrics_out, protocol, details, warnings)


# --------------------------------------------------------------------------- adapters


def captions_from_samples(samples: Iterable[Sample]) -> dict[str, list[str]]:
    """``image id -> reference captions`` (``Sample.image_id``, else ``Sample.image``)."""
    out: dict[str, list[str]] = {}
    for sample in samples:
        key = id_key(sample.image_id if sample.image_id is not None else sample.image, "sample id")
        if key in out:
            raise InputError(f"two samples share the id {key!r}")
        if not sample.captions:
            raise InputError(f"sample {sample.image!r} has no captions")
        out[key] = list(sample.captions)
    return out


def load_coco_captions(path: str | PathLike[str]) -> dict[str, list[str]]:
    """``image id -> captions`` from a COCO caption file.

    Accepts the annotation file (``{"annotations": [{"image_id", "caption"}, ...], ...}``, several
    captions per image) and the results file (``[{"image_id", "caption"}, ...]`` or ``.jsonl``).
    """
    p = Path(path)
    data, is_lines = read_json_records(p)
    if is_lines:
        rows = [(f"line {n}", n, rec) for n, rec in data]
    elif isinstance(data, dict) and isinstance(data.get("annotations"), list):
        rows = [(f"annotations[{i}]", None, rec) for i, rec in enumerate(data["annotations"])]
    elif isinstance(data, list):
        rows = [(f"[{i}]", None, rec) for i, rec in enumerate(data)]
    else:
        raise DatasetError("expected COCO captions: {'annotations': [...]} or a list of {image_id, caption}", p)
    out: dict[str, list[str]] = {}
    for where, line, record in rows:
        if not isinstance(record, dict) or "image_id" not in record or "caption" not in record:
            raise DatasetError(f"{where}: expected an object with 'image_id' and 'caption'", p, line)
        if not isinstance(record["caption"], str):
            raise DatasetError(f"{where}.caption: expected a string, got {record['caption']!r:.60}", p, line)
        try:
            key = id_key(record["image_id"], f"{where}.image_id")
        except InputError as exc:
            raise DatasetError(exc.message, p, line) from None
        out.setdefault(key, []).append(record["caption"])
    return out
