"""Visual question answering accuracy under the rules of RSVQA, LRS-VQA, VRSBench, or plain exact match.

Every preset scores one predicted answer string per question, then reports ``OA`` (correct /
questions), per-type accuracy ``acc/<type>`` and ``AA`` (mean of the per-type accuracies), and
per group ``<group>/OA`` and ``<group>/AA`` when groups are given. Which answers count as
correct is the preset's rule:

``exact`` (rsvl's default): both answers normalised, then compared. :func:`normalize_answer`:
lowercase; trim; ``,`` between digits dropped (``1,000`` -> ``1000``) and ``.`` between digits kept
(``2.5``); every other ASCII punctuation mark becomes a space; the articles ``a``, ``an``, ``the``
are dropped; number words ``zero`` .. ``twenty`` become digits; whitespace collapses.

``rsvqa`` / ``rsvqa_lr``: the answer encoding of RSVQA's own code (``syvlo/RSVQA``,
``VQA_model/VocabEncoder.py``): drop one final ``?`` or ``.``, split on whitespace, lowercase each
token; area tokens ``<n>m2`` become RSVQA's bins (``0m2``, ``between 0m2 and 10m2``, ... ``more than
1000m2``); ``rsvqa_lr`` (RSVQA-LR, ``range_numbers=True``) also bins counts (``0``, ``between 0 and
10``, ``between 10 and 100``, ``between 100 and 1000``, ``more than 1000``). Correct when the encodings
are equal. RSVQA's ``computeStats.py`` reports per type (LR: rural_urban, presence, count, comp;
HR: area, presence, count, comp), ``AA`` = their mean and ``OA`` = all correct / all questions.

``lrsvqa``: LRS-VQA's scorer (``VisionXLab/LRS-VQA``, ``Script/evaluation_LRSVQA.py``): both
strings only lowercased (no trimming, no punctuation removal); correct when equal, or when
``are_synonyms(gt, answer)``: some pair of ``wn.synsets(gt)`` x ``wn.synsets(answer)`` (all parts of
speech, the whole lowercased string as the lemma, so multi-word strings with spaces have no
synsets) has NLTK ``path_similarity > 0.8``. Per-category accuracy over its 8 categories (count,
color, category, shape, status, reasoning, rural/urban, background), ``AA`` over the categories
present. The official script crashes (KeyError) on records without a category; here a question
without type, or with a type outside the 8, gets its own bucket and a warning. WordNet comes from
:mod:`rsvl.metrics.wordnet` (offline); ``wordnet=False`` keeps only the lowercase exact match (a
lower bound of the official score), which the protocol block records.

``vrsbench``: the deterministic part of VRSBench's VQA scoring (``lx709/VRSBench``,
``eval_fianl/eval_vqa_gpt.ipynb``): both lowercased; correct when the ground truth is a
*substring* of the prediction (so ``"2"`` is found in ``"12"``, as in the notebook); otherwise, for
ground truths ``yes``/``no``/``0``-``99``, correct only when equal; every other answer goes to a
GPT-4o-mini judge in the notebook, which rsvl cannot run: those are counted wrong (a lower bound)
and reported in ``details["judge_needed"]`` and a warning. Types are lowercased, ``image`` and
``rural or urban`` merge into ``scene type``; ``AA`` averages the notebook's known types only.

``count_tolerance=k`` (any preset) also accepts a numeric answer within ``k`` of a numeric ground
truth (both read after :func:`normalize_answer`); it changes the official rule and is recorded.

A question without prediction counts wrong (with a warning) unless ``missing="error"``; a
prediction for an unknown question id raises.
"""

from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any

from rsvl.datasets.sample import QA, Sample
from rsvl.errors import DatasetError, InputError
from rsvl.metrics.records import (
    check_missing_policy,
    id_key,
    keyed,
    missing_message,
    read_json_records,
    split_ids,
)
from rsvl.metrics.report import EvalReport, reference

__all__ = [
    "LRSVQA_CATEGORIES",
    "VQA_PRESETS",
    "VQAProtocol",
    "VQAResults",
    "evaluate_vqa",
    "load_vqa_results",
    "normalize_answer",
    "normalize_rsvqa",
    "vqa_from_samples",
    "wordnet_synonyms",
]

Id = int | str
NO_TYPE = "(none)"

#: LRS-VQA's eight question categories (paper, Sec. "The Construction of LRS-VQA Benchmark").
LRSVQA_CATEGORIES = ("count", "color", "category", "shape", "status", "reasoning", "rural/urban", "background")
_LRSVQA_ALIASES = {
    "ruralurban": "rural/urban",
    "ruralorurban": "rural/urban",
    "ruralurbanclassification": "rural/urban",
    "targetbackground": "background",
    "objectbackground": "background",
    "colour": "color",
    "counting": "count",
}
#: VRSBench's question types (eval_vqa_gpt.ipynb ``all_types``), after its merges.
VRSBENCH_TYPES = (
    "object category",
    "object existence",
    "object quantity",
    "object color",
    "object shape",
    "object size",
    "object position",
    "object direction",
    "scene type",
    "reasoning",
)
_VRSBENCH_MERGE = {"image": "scene type", "rural or urban": "scene type"}
_VRSBENCH_CLOSED = frozenset(["yes", "no", *map(str, range(100))])
RSVQA_TYPES = ("presence", "comp", "comparison", "count", "rural_urban", "area")


@dataclass(frozen=True)
class VQAProtocol:
    """One VQA scoring rule.

    Attributes:
        rule: ``exact``, ``rsvqa``, ``lrsvqa`` or ``vrsbench``.
        normalization: one-line description recorded in the report.
        count_bins: RSVQA-LR count binning (``rsvqa`` rule only).
        known_types: the benchmark's question types (others get a bucket and a warning).
        aa_over: ``all`` buckets, or only the ``known`` types (VRSBench).
        source, reference: where the rule comes from.
    """

    rule: str
    normalization: str
    count_bins: bool = False
    known_types: tuple[str, ...] | None = None
    aa_over: str = "all"
    source: str = ""
    reference: str = ""


VQA_PRESETS: dict[str, VQAProtocol] = {
    "exact": VQAProtocol(
        rule="exact",
        normalization="lowercase, trim, punctuation -> space (keep '.' and drop ',' between digits), "
        "drop a/an/the, number words zero..twenty -> digits, collapse whitespace",
        source="rsvl (VQAv2-style normalisation)",
        reference="rsvl exact match",
    ),
    "rsvqa": VQAProtocol(
        rule="rsvqa",
        normalization="RSVQA VocabEncoder: drop one final '?' or '.', lowercase tokens, bin '<n>m2' areas",
        known_types=RSVQA_TYPES,
        source="syvlo/RSVQA VQA_model/VocabEncoder.py (range_numbers=False, HR) + computeStats.py (AA, OA)",
        reference="syvlo/RSVQA VocabEncoder.py + computeStats.py",
    ),
    "rsvqa_lr": VQAProtocol(
        rule="rsvqa",
        normalization="RSVQA VocabEncoder: drop one final '?' or '.', lowercase tokens, bin counts and '<n>m2' areas",
        count_bins=True,
        known_types=RSVQA_TYPES,
        source="syvlo/RSVQA VQA_model/VocabEncoder.py (range_numbers=True, LR) + computeStats.py (AA, OA)",
        reference="syvlo/RSVQA VocabEncoder.py + computeStats.py",
    ),
    "lrsvqa": VQAProtocol(
        rule="lrsvqa",
        normalization="str.lower() only; equal, or WordNet path_similarity > 0.8 between any synsets of the two",
        known_types=LRSVQA_CATEGORIES,
        source="VisionXLab/LRS-VQA Script/evaluation_LRSVQA.py (are_synonyms, evaluate_dataset)",
        reference="VisionXLab/LRS-VQA Script/evaluation_LRSVQA.py",
    ),
    "vrsbench": VQAProtocol(
        rule="vrsbench",
        normalization="str.lower(); ground truth contained in the prediction, else exact for yes/no/0-99, "
        "else GPT judge (not run: counted wrong)",
        known_types=VRSBENCH_TYPES,
        aa_over="known",
        source="lx709/VRSBench eval_fianl/eval_vqa_gpt.ipynb (match rule, per-type accuracy)",
        reference="lx709/VRSBench eval_fianl/eval_vqa_gpt.ipynb (without the GPT judge)",
    ),
}


# --------------------------------------------------------------------------- normalisation

_NUMBER_WORDS_LIST = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(_NUMBER_WORDS_LIST)}
_ARTICLES = frozenset({"a", "an", "the"})
_DIGIT_COMMA = re.compile(r"(?<=\d),(?=\d)")
_DIGIT_DOT = re.compile(r"(?<=\d)\.(?=\d)")
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def normalize_answer(text: str) -> str:
    """rsvl's exact-match normalisation (see the module docstring)."""
    s = text.lower().strip()
    s = _DIGIT_COMMA.sub("", s)
    s = _DIGIT_DOT.sub("\x00", s)
    s = _PUNCT.sub(" ", s).replace("\x00", ".")
    tokens = [_NUMBER_WORDS.get(t, t) for t in s.split() if t not in _ARTICLES]
    return " ".join(tokens)


def _rsvqa_bin(token: str, count_bins: bool) -> str:
    if count_bins and token.isdigit():
        num = int(token)
        if 0 < num <= 10:
            return "between 0 and 10"
        if 10 < num <= 100:
            return "between 10 and 100"
        if 100 < num <= 1000:
            return "between 100 and 1000"
        if num > 1000:
            return "more than 1000"
        return token
    if token[-2:] == "m2" and token[:-2].isdigit():
        num = int(token[:-2])
        if 0 < num <= 10:
            return "between 0m2 and 10m2"
        if 10 < num <= 100:
            return "between 10m2 and 100m2"
        if 100 < num <= 1000:
            return "between 100m2 and 1000m2"
        if num > 1000:
            return "more than 1000m2"
    return token


def normalize_rsvqa(text: str, count_bins: bool = False) -> str:
    """RSVQA's answer encoding as a string: drop one final ``?``/``.``, lowercase the whitespace
    tokens, bin ``<n>m2`` areas (and counts when ``count_bins``), join with single spaces."""
    s = text[:-1] if text and text[-1] in "?." else text
    return " ".join(_rsvqa_bin(t.lower(), count_bins) for t in s.split())


def wordnet_synonyms(word1: str, word2: str, wn: Any) -> bool:
    """LRS-VQA's ``are_synonyms``: any synset pair with ``path_similarity > 0.8``."""
    synsets2 = wn.synsets(word2)
    for s1 in wn.synsets(word1):
        for s2 in synsets2:
            sim = s1.path_similarity(s2)
            if sim is not None and sim > 0.8:
                return True
    return False


def _as_number(text: str) -> float | None:
    s = normalize_answer(text)
    return float(s) if _NUMBER.match(s) else None


# --------------------------------------------------------------------------- type buckets


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _bucket(proto: VQAProtocol, qtype: str | None) -> tuple[str, bool]:
    """``(bucket name, is a known type)`` of a question type under a preset."""
    if qtype is None:
        return NO_TYPE, proto.known_types is None
    if proto.rule == "vrsbench":
        name = qtype.lower()
        name = _VRSBENCH_MERGE.get(name, name)
        return name, name in VRSBENCH_TYPES
    if proto.rule == "lrsvqa":
        squashed = _squash(qtype)
        known = {_squash(c) for c in LRSVQA_CATEGORIES} | set(_LRSVQA_ALIASES)
        return qtype, squashed in known
    if proto.known_types is None:
        return qtype, True
    return qtype, qtype in proto.known_types


# --------------------------------------------------------------------------- scoring


Scorer = Callable[[str, str], tuple[bool, str]]


def _make_scorer(proto: VQAProtocol, wn: Any) -> Scorer:
    if proto.rule == "exact":
        return lambda g, p: (normalize_answer(g) == normalize_answer(p), "exact")
    if proto.rule == "rsvqa":
        bins = proto.count_bins
        return lambda g, p: (normalize_rsvqa(g, bins) == normalize_rsvqa(p, bins), "exact")
    if proto.rule == "lrsvqa":

        @lru_cache(maxsize=65536)
        def synonyms(g: str, p: str) -> bool:
            return wordnet_synonyms(g, p, wn)

        def lrsvqa(g: str, p: str) -> tuple[bool, str]:
            gl, pl = g.lower(), p.lower()
            if gl == pl:
                return True, "exact"
            if wn is not None and synonyms(gl, pl):
                return True, "wordnet"
            return False, "wrong"

        return lrsvqa

    def vrsbench(g: str, p: str) -> tuple[bool, str]:
        gl, pl = g.lower(), p.lower()
        if gl in pl:
            return True, "contained"
        if gl in _VRSBENCH_CLOSED:
            return gl == pl, "exact"
        return False, "judge_needed"

    return vrsbench


@dataclass
class _Tally:
    correct: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.total += 1
        self.correct += int(ok)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else -1.0


@dataclass
class _Group:
    overall: _Tally = field(default_factory=_Tally)
    buckets: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))

    def summary(self, known: set[str], aa_over: str) -> tuple[float, float | None, dict[str, Any]]:
        per = {
            name: {"correct": t.correct, "total": t.total, "accuracy": t.accuracy} for name, t in self.buckets.items()
        }
        use = [t.accuracy for name, t in self.buckets.items() if aa_over == "all" or name in known]
        aa = sum(use) / len(use) if use else None
        return self.overall.accuracy, aa, per


def _ground_truth(
    gt: Mapping[Id, str | QA], types: Mapping[Id, str | None] | None
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Checked ``id -> answer`` and ``id -> type`` (``types`` overrides the QA objects' types)."""
    g_raw = keyed(gt, "ground truth")
    if not g_raw:
        raise InputError("ground truth is empty")
    answers: dict[str, str] = {}
    qtypes: dict[str, str | None] = {}
    for k, v in g_raw.items():
        text = v.answer if isinstance(v, QA) else v
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"ground truth {k!r}: expected a non-empty answer string, got {text!r:.60}")
        answers[k] = text
        qtypes[k] = v.type if isinstance(v, QA) else None
    if types is not None:
        given = keyed(types, "types")
        extra = [k for k in given if k not in answers]
        if extra:
            raise InputError(f"types: {len(extra)} id(s) absent from the ground truth (e.g. {extra[0]!r})")
        qtypes.update(given)
    for k, t in qtypes.items():
        if t is not None and not isinstance(t, str):
            raise InputError(f"question {k!r}: type must be a string or None, got {t!r:.60}")
    return answers, qtypes


def evaluate_vqa(
    gt: Mapping[Id, str | QA],
    pred: Mapping[Id, str],
    preset: str = "exact",
    *,
    types: Mapping[Id, str | None] | None = None,
    groups: Mapping[Id, str] | None = None,
    count_tolerance: int = 0,
    wordnet: bool = True,
    nltk_data: str | PathLike[str] | None = None,
    missing: str = "wrong",
    per_item: bool = False,
) -> EvalReport:
    """Accuracy of predicted answers under a benchmark's rule (see the module docstring).

    Args:
        gt: ``question id -> answer`` (a string, or a :class:`~rsvl.datasets.sample.QA` whose
            ``type`` is used when ``types`` is not given).
        pred: ``question id -> predicted answer``.
        preset: ``exact``, ``rsvqa``, ``rsvqa_lr``, ``lrsvqa`` or ``vrsbench`` (:data:`VQA_PRESETS`).
        types: ``question id -> type`` for per-type accuracy and ``AA``.
        groups: ``question id -> group`` (LRS-VQA scores each source dataset separately).
        count_tolerance: also accept numeric answers within this distance of a numeric ground truth.
        wordnet: ``lrsvqa`` only; False disables the WordNet synonym rule (recorded in the protocol).
        nltk_data: an ``nltk_data`` folder with ``corpora/wordnet`` (see :func:`rsvl.metrics.wordnet.load_wordnet`).
        missing: ``"wrong"`` (default, with a warning) or ``"error"``.
        per_item: include every question's verdict in ``details["correct"]``.

    Raises:
        rsvl.metrics.wordnet.WordNetUnavailableError: ``lrsvqa`` with ``wordnet=True`` and no WordNet.
    """
    if preset not in VQA_PRESETS:
        raise InputError(f"unknown VQA preset {preset!r}; known: {', '.join(VQA_PRESETS)}")
    check_missing_policy(missing)
    if isinstance(count_tolerance, bool) or not isinstance(count_tolerance, int) or count_tolerance < 0:
        raise InputError(f"count_tolerance must be a non-negative integer, got {count_tolerance!r}")
    proto = VQA_PRESETS[preset]

    answers, qtypes = _ground_truth(gt, types)
    p = keyed(pred, "predictions")
    for k, v in p.items():
        if not isinstance(v, str):
            raise InputError(f"prediction {k!r}: expected an answer string, got {type(v).__name__} {v!r:.60}")
    group_of = keyed(groups, "groups") if groups is not None else None
    if group_of is not None:
        lacking = [k for k in answers if k not in group_of]
        if lacking:
            raise InputError(f"groups: {len(lacking)} question(s) have no group (e.g. {lacking[0]!r})")
    missing_ids = split_ids(answers, p, "vqa")

    warnings: list[str] = []
    if missing_ids:
        if missing == "error":
            raise InputError(missing_message(missing_ids, len(answers), "pass missing='wrong' to count them as wrong"))
        warnings.append(missing_message(missing_ids, len(answers), "counted as wrong"))

    wn = None
    wordnet_origin = None
    if proto.rule == "lrsvqa" and wordnet:
        from rsvl.metrics.wordnet import load_wordnet

        wn = load_wordnet(nltk_data)
        wordnet_origin = getattr(wn, "rsvl_origin", None)
    score = _make_scorer(proto, wn)

    use_types = any(t is not None for t in qtypes.values())
    total = _Group()
    by_group: dict[str, _Group] = defaultdict(_Group)
    how_counts: Counter[str] = Counter()
    unknown_types: Counter[str] = Counter()
    verdicts: dict[str, bool] = {}
    for k in sorted(answers):
        g = answers[k]
        if k in p:
            ok, how = score(g, p[k])
            if not ok and count_tolerance:
                gn, pn = _as_number(g), _as_number(p[k])
                if gn is not None and pn is not None and abs(gn - pn) <= count_tolerance:
                    ok, how = True, "tolerance"
        else:
            ok, how = False, "missing"
        # Correct answers are tallied by the rule that accepted them, wrong ones as wrong /
        # judge_needed (VRSBench's GPT step) / missing.
        how_counts[how if ok or how in ("judge_needed", "missing") else "wrong"] += 1
        verdicts[k] = ok
        total.overall.add(ok)
        bucket, known = _bucket(proto, qtypes[k]) if use_types else (None, True)
        if bucket is not None:
            total.buckets[bucket].add(ok)
            if not known and bucket != NO_TYPE:
                unknown_types[bucket] += 1
        if group_of is not None:
            grp = by_group[group_of[k]]
            grp.overall.add(ok)
            if bucket is not None:
                grp.buckets[bucket].add(ok)

    known_set = set(proto.known_types or ())
    oa, aa, per_type = total.summary(known_set, proto.aa_over)
    metrics: dict[str, float] = {"OA": oa}
    if use_types:
        metrics["AA"] = aa if aa is not None else -1.0
        metrics.update({f"acc/{name}": info["accuracy"] for name, info in sorted(per_type.items())})
    details: dict[str, Any] = {"n_questions": len(answers), "n_missing": len(missing_ids), "verdicts": dict(how_counts)}
    if use_types:
        details["per_type"] = dict(sorted(per_type.items()))
    if group_of is not None:
        details["groups"] = {}
        for name in sorted(by_group):
            g_oa, g_aa, g_per = by_group[name].summary(known_set, proto.aa_over)
            metrics[f"{name}/OA"] = g_oa
            if use_types:
                metrics[f"{name}/AA"] = g_aa if g_aa is not None else -1.0
            details["groups"][name] = {"OA": g_oa, "AA": g_aa, "n": by_group[name].overall.total, "per_type": g_per}
    if per_item:
        details["correct"] = verdicts

    if unknown_types:
        shown = ", ".join(f"{t!r} x{c}" for t, c in unknown_types.most_common(5))
        scope = "kept out of AA" if proto.aa_over == "known" else "included in AA"
        warnings.append(f"question types outside the {preset} list, each scored in its own bucket ({shown}); {scope}")
    if use_types and NO_TYPE in total.buckets:
        scope = "kept out of AA" if proto.aa_over == "known" else "included in AA"
        warnings.append(
            f"{total.buckets[NO_TYPE].total} question(s) without a type, scored in the bucket {NO_TYPE!r}; {scope}"
        )
    if how_counts.get("judge_needed"):
        warnings.append(
            f"{how_counts['judge_needed']} open-ended answer(s) go to a GPT judge in VRSBench's notebook; "
            "counted wrong here (the score is a lower bound)"
        )
    if proto.rule == "lrsvqa" and not wordnet:
        warnings.append("WordNet synonym rule disabled: lowercase exact match only (a lower bound of LRS-VQA's score)")

    protocol: dict[str, Any] = {
        "rule": proto.rule,
        "normalization": proto.normalization,
        "OA": "correct / questions",
        "AA": "mean per-type accuracy over "
        + ("the benchmark's known types" if proto.aa_over == "known" else "all types present"),
        "count_tolerance": count_tolerance,
        "missing_predictions": "error" if missing == "error" else "counted wrong",
        "unknown_types": "own bucket + warning",
        "source": proto.source,
        "reference": reference(proto.reference, "nltk" if proto.rule == "lrsvqa" and wordnet else None),
    }
    if proto.rule == "lrsvqa":
        if wordnet:
            protocol["wordnet"] = {
                "enabled": True,
                "threshold": "path_similarity > 0.8",
                "synsets": "wn.synsets(text) of the whole lowercased string, all parts of speech",
                "corpus": wordnet_origin,
            }
        else:
            protocol["wordnet"] = {"enabled": False, "note": "disabled by the user: lowercase exact match only"}
    if proto.rule == "vrsbench":
        protocol["judge"] = "not run: open-ended answers not contained in the prediction count wrong"
    return EvalReport("vqa", preset, metrics, protocol, details, warnings)


# --------------------------------------------------------------------------- adapters


def vqa_from_samples(samples: Iterable[Sample]) -> dict[str, QA]:
    """``question id -> QA`` from dataset samples (``QA.id``, else ``"<image>#<index>"``)."""
    out: dict[str, QA] = {}
    for sample in samples:
        for i, qa in enumerate(sample.qas):
            key = id_key(qa.id, "QA.id") if qa.id is not None else f"{sample.image}#{i}"
            if key in out:
                raise InputError(f"two questions share the id {key!r}")
            out[key] = qa
    return out


@dataclass
class VQAResults:
    """Ground truth, predictions and groups read from a benchmark's answer file."""

    gt: dict[str, QA]
    pred: dict[str, str]
    groups: dict[str, str] | None = None


#: Field names of the answer files the official pipelines write.
VQA_LAYOUTS: dict[str, dict[str, str]] = {
    # LRS-VQA llava_eval_LRSVQA.py: {"question_id", "prompt", "category", "text", "ground_truth", ...}
    "lrsvqa": {"id": "question_id", "pred": "text", "gt": "ground_truth", "type": "category", "question": "prompt"},
    # VRSBench outputs as read by eval_vqa_gpt.ipynb: {"question_id", "question", "ground_truth", "answer", "type"}
    "vrsbench": {"id": "question_id", "pred": "answer", "gt": "ground_truth", "type": "type", "question": "question"},
}


def load_vqa_results(path: str | PathLike[str], layout: str = "lrsvqa") -> VQAResults:
    """Read an answer file (JSON Lines, or a JSON list) holding ground truth and prediction per line.

    ``layout`` names the fields (:data:`VQA_LAYOUTS`). For ``lrsvqa``, a record's ``id`` field
    (when every record has one) gives its group like the official script: ``id.split('_')[0]``.
    """
    if layout not in VQA_LAYOUTS:
        raise InputError(f"unknown VQA file layout {layout!r}; known: {', '.join(VQA_LAYOUTS)}")
    keys = VQA_LAYOUTS[layout]
    p = Path(path)
    data, is_lines = read_json_records(p)
    if is_lines:
        rows = data
    elif isinstance(data, list):
        rows = [(None, r) for r in data]
    else:
        raise DatasetError(f"expected JSON Lines or a JSON list of records, got {type(data).__name__}", p)
    gt: dict[str, QA] = {}
    pred: dict[str, str] = {}
    groups: dict[str, str] = {}
    for i, (line, record) in enumerate(rows):
        where = f"line {line}" if line is not None else f"[{i}]"
        if not isinstance(record, dict):
            raise DatasetError(f"{where}: expected an object", p, line)
        for name in ("id", "gt"):
            if keys[name] not in record:
                raise DatasetError(f"{where}: missing field {keys[name]!r}", p, line)
        try:
            key = id_key(record[keys["id"]], f"{where}.{keys['id']}")
        except InputError as exc:
            raise DatasetError(exc.message, p, line) from None
        if key in gt:
            raise DatasetError(f"{where}: duplicate question id {key!r}", p, line)
        answer = record[keys["gt"]]
        if not isinstance(answer, str):
            raise DatasetError(f"{where}.{keys['gt']}: expected a string, got {answer!r:.60}", p, line)
        qtype = record.get(keys["type"])
        if qtype is not None and not isinstance(qtype, str):
            raise DatasetError(f"{where}.{keys['type']}: expected a string, got {qtype!r:.60}", p, line)
        question = record.get(keys["question"])
        gt[key] = QA(question=question if isinstance(question, str) else "", answer=answer, type=qtype, id=key)
        if keys["pred"] in record and record[keys["pred"]] is not None:
            value = record[keys["pred"]]
            if not isinstance(value, str):
                raise DatasetError(f"{where}.{keys['pred']}: expected a string, got {value!r:.60}", p, line)
            pred[key] = value
        if "id" in record and layout == "lrsvqa":
            groups[key] = str(record["id"]).split("_")[0]
    return VQAResults(gt, pred, groups if groups and len(groups) == len(gt) else None)
