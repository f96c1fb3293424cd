"""Evaluation metrics that equal the official protocols and report which protocol they used.

Every evaluator returns an :class:`EvalReport` (``metrics`` + ``protocol`` + ``details`` +
``warnings``); :func:`rsvl.metrics.evaluate.evaluate_files` resolves files for ``rsvl eval``.
"""

from rsvl.metrics.caption import captions_from_samples, evaluate_captions
from rsvl.metrics.classification import evaluate_classification, labels_from_samples
from rsvl.metrics.detection import PRESETS as DETECTION_PRESETS
from rsvl.metrics.detection import evaluate_detection
from rsvl.metrics.dota import evaluate_dota
from rsvl.metrics.grounding import GROUNDING_PRESETS, evaluate_grounding, grounding_from_samples
from rsvl.metrics.lvis_eval import evaluate_lvis
from rsvl.metrics.report import EvalReport, reference
from rsvl.metrics.visdrone_eval import evaluate_visdrone
from rsvl.metrics.vqa import VQA_PRESETS, evaluate_vqa, vqa_from_samples
from rsvl.metrics.wordnet import WordNetUnavailableError, load_wordnet

__all__ = [
    "DETECTION_PRESETS",
    "GROUNDING_PRESETS",
    "VQA_PRESETS",
    "EvalReport",
    "WordNetUnavailableError",
    "captions_from_samples",
    "evaluate_captions",
    "evaluate_classification",
    "evaluate_detection",
    "evaluate_dota",
    "evaluate_grounding",
    "evaluate_lvis",
    "evaluate_visdrone",
    "evaluate_vqa",
    "grounding_from_samples",
    "labels_from_samples",
    "load_wordnet",
    "reference",
    "vqa_from_samples",
]
