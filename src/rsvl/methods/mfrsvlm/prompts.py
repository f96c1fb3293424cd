"""MF-RSVLM task prompts, conversation rendering and exactly masked training examples.

Three layers, each usable on its own:

* **Task prompts** -- :func:`caption_prompt`, :func:`vqa_prompt` (open or closed),
  :func:`classification_prompt` (the answer constrained to a class list) and :func:`match_class`
  (map a free-text answer back to a class).
* **Rendering** -- :func:`render_conversation` / :func:`render_generation_prompt` turn a
  conversation into the text the language model reads, with one image placeholder in front of the
  first user message (the authors' ``preprocess_multimodal``: any ``<image>`` in the text is moved
  there). Two templates:

  - ``vicuna_v1``: LLaVA-1.5's ``conv_vicuna_v1`` (github.com/Yunkaidang/RSVLM,
    ``mfrsvlm/conversation.py``; the authors' fine-tuning runs ``--version v1``):
    ``"{system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>"``, the
    generation prompt ending in ``"ASSISTANT:"``. ``</s>`` is the tokenizer's EOS token (``</s>``
    for Vicuna/Llama, whatever the tokenizer names otherwise).
  - ``chat``: the tokenizer's own chat template (e.g. SmolLM2's ChatML), string content first,
    then llava-hf style structured content.

  ``template="auto"`` uses ``chat`` when the tokenizer has a chat template that renders each
  assistant answer followed directly by a special end-of-turn token (ChatML's ``<|im_end|>``);
  otherwise ``vicuna_v1``. llava-hf's LLaVA-1.5 template renders no end-of-turn token after the
  answer (it cannot teach the model to stop), so ``auto`` trains and prompts such models in the
  vicuna_v1 format they were trained in.
* **Training examples** -- :func:`build_training_example` tokenises the rendered conversation in
  one go (so tokens are exactly what inference sees) and supervises only the assistant answers
  plus their end-of-turn/EOS token; every other token (BOS, system, user turns, the image
  placeholder, role names, separators) gets label ``-100``.

Masking differs from the authors' ``preprocess_v1`` on purpose: they count tokens of each round's
text pieces and subtract a hand-tuned 2 (a SentencePiece quirk), which silently masks the whole
example on a tokenizer mismatch. Here the answers' character spans are known from rendering and the
token ↔ character map (``return_offsets_mapping``, fast tokenizers) marks a token supervised when it
overlaps an answer, plus the one special token that must follow each answer; any inconsistency
raises instead of training on a wrong mask. An answer's span starts where the generation prompt of
its prefix ends (``"...ASSISTANT:"``), so the separating space (``" ship"``, or a lone ``" "`` token
in byte-level BPEs) is supervised: the inference prompt is token for token the masked prefix, and
every token the model must generate after it is trained (the authors' masking drops a lone space
token, which a Vicuna SentencePiece tokenizer never produces).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from rsvl.errors import InputError

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_PLACEHOLDER",
    "MFRSVLM_V1_SYSTEM",
    "VICUNA_V1_SYSTEM",
    "Message",
    "RenderedConversation",
    "Template",
    "TrainingExample",
    "build_training_example",
    "caption_prompt",
    "classification_prompt",
    "match_class",
    "normalise_messages",
    "pad_batch",
    "render_conversation",
    "render_generation_prompt",
    "resolve_template",
    "tokenize_prompt",
    "vqa_prompt",
]

logger = logging.getLogger(__name__)

#: Label of tokens the loss ignores (PyTorch's ``cross_entropy`` default, LLaVA's ``IGNORE_INDEX``).
IGNORE_INDEX = -100
#: The image placeholder of LLaVA checkpoints (one token; the model expands it to the visual tokens).
IMAGE_PLACEHOLDER = "<image>"
#: System text of LLaVA-1.5's ``conv_vicuna_v1`` (the authors' ``--version v1``).
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
#: System text of the authors' ``conv_vhm_v1`` (their ``mfrsvlm_v1`` name): "human" instead of "user".
MFRSVLM_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

#: Default captioning instruction (the short form used by LLaVA-style RS instruction sets).
CAPTION_INSTRUCTION = "Describe the image in detail."
#: LLaVA-1.5's suffix for short-answer VQA.
OPEN_VQA_SUFFIX = "Answer the question using a single word or phrase."

Template = Literal["auto", "chat", "vicuna_v1"]
_ROLES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant", "system": "system"}


# --------------------------------------------------------------------------- task prompts


def caption_prompt(instruction: str = CAPTION_INSTRUCTION) -> str:
    """The captioning instruction (the image placeholder is added by rendering)."""
    return _clean(instruction, "caption instruction")


def vqa_prompt(question: str, choices: Sequence[str] | None = None) -> str:
    """A VQA prompt: open (``choices=None``: LLaVA-1.5's single word/phrase suffix) or closed.

    Closed questions name the allowed answers: ``("yes", "no")`` gives ``"Answer yes or no."``,
    any other list ``"Answer with one of: a, b, c."``.
    """
    q = _clean(question, "question")
    if choices is None:
        return f"{q}\n{OPEN_VQA_SUFFIX}"
    options = _clean_choices(choices, "choices")
    if [c.lower() for c in options] == ["yes", "no"]:
        return f"{q}\nAnswer yes or no."
    return f"{q}\nAnswer with one of: {', '.join(options)}."


def classification_prompt(classes: Sequence[str]) -> str:
    """Scene classification with the answer constrained to ``classes`` (order kept).

    ``"Classify the image into one of: airport, beach, forest. Answer with the class name."``
    Class names must be non-empty, distinct (case-insensitively) and free of commas and newlines.
    """
    names = _clean_choices(classes, "classes")
    return f"Classify the image into one of: {', '.join(names)}. Answer with the class name."


def match_class(answer: str, classes: Sequence[str]) -> str | None:
    """The class a free-text answer names, or None.

    Exact match (case- and surrounding-punctuation-insensitive, ``_``/``-`` = space) first; else the
    single class whose name occurs as whole words in the answer (the longest when names nest,
    e.g. ``"dense residential"`` over ``"residential"``); None when nothing or several unrelated
    classes match.
    """
    names = _clean_choices(classes, "classes")
    text = _norm(answer)
    for name in names:
        if _norm(name) == text:
            return name
    hits = [n for n in names if re.search(rf"(?<!\w){re.escape(_norm(n))}(?!\w)", text)]
    hits = [h for h in hits if not any(h != o and _norm(h) in _norm(o) for o in hits)]
    return hits[0] if len(hits) == 1 else None


def _norm(text: str) -> str:
    text = re.sub(r"[_\-]+", " ", str(text).lower())
    return re.sub(r"\s+", " ", text).strip(" \t\n.,;:!?\"'")


def _clean(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{what} must be a non-empty string, got {text!r}")
    return text.strip()


def _clean_choices(choices: Sequence[str], what: str) -> list[str]:
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices:
        raise InputError(f"{what} must be a non-empty list of strings, got {choices!r}")
    names = [_clean(c, f"each of {what}") for c in choices]
    bad = [n for n in names if "," in n or "\n" in n]
    if bad:
        raise InputError(f"{what} must not contain commas or newlines (the prompt lists them): {bad}")
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise InputError(f"{what} repeat a name: {names}")
    return names


# --------------------------------------------------------------------------- conversations


@dataclass(frozen=True)
class Message:
    """One conversation turn: ``role`` is ``"user"`` or ``"assistant"``."""

    role: str
    content: str


def normalise_messages(
    messages: Sequence[Mapping[str, Any] | Message], image: bool = True
) -> tuple[str | None, list[Message]]:
    """Validate a conversation; return ``(system or None, user/assistant turns)``.

    Accepts ``{"role", "content"}`` dicts, LLaVA data's ``{"from": "human"/"gpt", "value"}`` dicts
    or :class:`Message`. An optional leading system message is split off. Turns must alternate
    starting with the user. With ``image=True`` every ``<image>`` is removed from the text and one
    ``"<image>\\n"`` is put in front of the first user message (the authors'
    ``preprocess_multimodal``); with ``image=False`` an ``<image>`` in the text is an error.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InputError("a conversation must be a non-empty list of messages")
    turns: list[Message] = []
    system: str | None = None
    for i, raw in enumerate(messages):
        if isinstance(raw, Message):
            role, content = raw.role, raw.content
        elif isinstance(raw, Mapping):
            role = raw.get("role", raw.get("from"))
            content = raw.get("content", raw.get("value"))
        else:
            raise InputError(f"message {i} must be a dict with role/content (or from/value), got {type(raw).__name__}")
        role_name = _ROLES.get(str(role).lower()) if role is not None else None
        if role_name is None:
            raise InputError(f"message {i} has an unknown role {role!r} (user/human, assistant/gpt, system)")
        if not isinstance(content, str):
            raise InputError(f"message {i} content must be a string, got {type(content).__name__}")
        if role_name == "system":
            if i != 0:
                raise InputError(f"a system message may only come first (message {i})")
            system = content.strip()
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role_name != expected:
            raise InputError(f"message {i} is from the {role_name}, expected the {expected} (turns must alternate)")
        if IMAGE_PLACEHOLDER in content and (not image or role_name == "assistant"):
            raise InputError(f"message {i} holds an {IMAGE_PLACEHOLDER} placeholder where none is allowed")
        text = content.replace(IMAGE_PLACEHOLDER, "").strip()
        if not text:
            raise InputError(f"message {i} ({role_name}) is empty")
        turns.append(Message(role_name, text))
    if not turns:
        raise InputError("the conversation has no user message")
    if image:
        turns[0] = Message("user", f"{IMAGE_PLACEHOLDER}\n{turns[0].content}")
    return system, turns


@dataclass(frozen=True)
class RenderedConversation:
    """Rendered text and where each assistant answer sits in it (character spans ``[start, end)``)."""

    text: str
    answer_spans: tuple[tuple[int, int], ...]
    template: str


def resolve_template(tokenizer: Any, template: Template = "auto") -> str:
    """``"chat"`` or ``"vicuna_v1"`` for this tokenizer (see the module docstring for ``auto``)."""
    if template not in ("auto", "chat", "vicuna_v1"):
        raise InputError(f"template must be 'auto', 'chat' or 'vicuna_v1', got {template!r}")
    if template != "auto":
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise InputError("template 'chat' asked for, but the tokenizer has no chat template")
        return template
    if not getattr(tokenizer, "chat_template", None):
        return "vicuna_v1"
    probe = [Message("user", f"{IMAGE_PLACEHOLDER}\nq"), Message("assistant", "probe answer")]
    try:
        rendered = _render_chat(tokenizer, None, probe)
        _supervised_mask(tokenizer, rendered)
    except InputError as exc:
        logger.info("chat template unsuitable for training (%s): using vicuna_v1", exc.message)
        return "vicuna_v1"
    return "chat"


def render_conversation(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any] | Message],
    template: Template = "auto",
    system: str | None = None,
    image: bool = True,
) -> RenderedConversation:
    """Render a complete conversation (ending with an assistant answer) and locate the answers.

    ``system`` (or a leading system message) overrides the default: :data:`VICUNA_V1_SYSTEM` for
    vicuna_v1, the chat template's own default (if any) for chat.
    """
    own_system, turns = normalise_messages(messages, image=image)
    if turns[-1].role != "assistant":
        raise InputError("a training conversation must end with an assistant answer")
    system = system if system is not None else own_system
    kind = resolve_template(tokenizer, template)
    if kind == "vicuna_v1":
        return _render_vicuna(tokenizer, system, turns, generation=False)
    return _render_chat(tokenizer, system, turns)


def render_generation_prompt(
    tokenizer: Any,
    messages: str | Sequence[Mapping[str, Any] | Message],
    template: Template = "auto",
    system: str | None = None,
    image: bool = True,
) -> str:
    """The prompt text that asks for the next assistant answer.

    ``messages`` is a user message (a string) or a conversation ending with a user turn. The text
    equals the training rendering of the same turns up to and including the assistant cue, so a
    model trained on :func:`build_training_example` sees the same prompt at inference.
    """
    if isinstance(messages, str):
        messages = [Message("user", messages)]
    own_system, turns = normalise_messages(messages, image=image)
    if turns[-1].role != "user":
        raise InputError("a generation prompt must end with a user message")
    system = system if system is not None else own_system
    kind = resolve_template(tokenizer, template)
    if kind == "vicuna_v1":
        return _render_vicuna(tokenizer, system, turns, generation=True).text
    return _apply_chat(tokenizer, system, turns, generation=True)


def _eos(tokenizer: Any) -> str:
    eos = getattr(tokenizer, "eos_token", None)
    if not eos:
        raise InputError("the tokenizer has no EOS token: the vicuna_v1 template ends every answer with it")
    return str(eos)


def _render_vicuna(tokenizer: Any, system: str | None, turns: list[Message], generation: bool) -> RenderedConversation:
    """``conv_vicuna_v1.get_prompt()``: ``system + " "``, then ``role + ": " + text + sep``, seps ``" "``/EOS."""
    eos = _eos(tokenizer) if not generation else None
    text = (VICUNA_V1_SYSTEM if system is None else system) + " "
    spans: list[tuple[int, int]] = []
    for turn in turns:
        if turn.role == "user":
            text += f"USER: {turn.content} "
        else:
            text += "ASSISTANT:"  # the generation prompt ends here; " answer" + EOS is what the model must produce
            spans.append((len(text), len(text) + 1 + len(turn.content)))
            text += f" {turn.content}{eos}"
    if generation:
        text += "ASSISTANT:"
    return RenderedConversation(text, tuple(spans), "vicuna_v1")


def _chat_messages(system: str | None, turns: list[Message], structured: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system is not None:
        out.append({"role": "system", "content": [{"type": "text", "text": system}] if structured else system})
    for turn in turns:
        if not structured:
            out.append({"role": turn.role, "content": turn.content})
            continue
        parts: list[dict[str, Any]] = []
        content = turn.content
        if content.startswith(f"{IMAGE_PLACEHOLDER}\n"):
            parts.append({"type": "image"})
            content = content[len(IMAGE_PLACEHOLDER) + 1 :]
        parts.append({"type": "text", "text": content})
        out.append({"role": turn.role, "content": parts})
    return out


def _apply_chat(tokenizer: Any, system: str | None, turns: list[Message], generation: bool) -> str:
    """The chat template's text; string content first, structured content if that does not fit."""
    images = sum(t.content.count(IMAGE_PLACEHOLDER) for t in turns)
    failures = []
    for structured in (False, True):
        try:
            text = tokenizer.apply_chat_template(
                _chat_messages(system, turns, structured), tokenize=False, add_generation_prompt=generation
            )
        except Exception as exc:  # a template that rejects this content shape
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        plain = [t.content.replace(f"{IMAGE_PLACEHOLDER}\n", "") for t in turns]
        if isinstance(text, str) and text.count(IMAGE_PLACEHOLDER) == images and all(p in text for p in plain):
            return text
        failures.append("rendering lost a message or the image placeholder")
    raise InputError(f"the tokenizer's chat template cannot render this conversation ({'; '.join(failures)})")


def _render_chat(tokenizer: Any, system: str | None, turns: list[Message]) -> RenderedConversation:
    """Render with the chat template; each answer is located after the generation prompt of its prefix."""
    full = _apply_chat(tokenizer, system, turns, generation=False)
    spans: list[tuple[int, int]] = []
    for i, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        prefix = _apply_chat(tokenizer, system, turns[:i], generation=True)
        if not full.startswith(prefix):
            raise InputError("the chat template renders a conversation prefix differently from the whole conversation")
        start = full.find(turn.content, len(prefix))
        if start < 0:
            raise InputError(f"the chat template does not render assistant answer {len(spans)} verbatim")
        if full[len(prefix) : start].strip():
            raise InputError("the chat template puts text between the assistant cue and the answer")
        spans.append((len(prefix), start + len(turn.content)))  # from the end of the generation prompt
    return RenderedConversation(full, tuple(spans), "chat")


# --------------------------------------------------------------------------- training examples


@dataclass(frozen=True)
class TrainingExample:
    """Token ids and labels of one conversation (``labels[i] == -100`` where the loss ignores ``i``)."""

    input_ids: list[int]
    labels: list[int]
    text: str
    template: str

    def supervised_runs(self) -> list[list[int]]:
        """Contiguous runs of supervised token ids (one per assistant answer)."""
        runs: list[list[int]] = []
        previous = False
        for tok, lab in zip(self.input_ids, self.labels, strict=True):
            on = lab != IGNORE_INDEX
            if on and not previous:
                runs.append([])
            if on:
                runs[-1].append(tok)
            previous = on
        return runs


def _tokenize(tokenizer: Any, text: str, offsets: bool) -> dict[str, Any]:
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    try:
        return tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=offsets)
    except NotImplementedError as exc:  # slow (Python) tokenizers have no offsets
        raise InputError(f"exact label masking needs a fast tokenizer (offsets): {exc}") from exc


def tokenize_prompt(tokenizer: Any, text: str) -> list[int]:
    """Token ids of a rendered prompt, with the tokenizer's special tokens unless the text starts with BOS."""
    return list(_tokenize(tokenizer, text, offsets=False)["input_ids"])


def _is_special(tokenizer: Any, token_id: int) -> bool:
    if token_id in set(getattr(tokenizer, "all_special_ids", []) or []):
        return True
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    token = added.get(token_id)
    return bool(token is not None and getattr(token, "special", False))


def _supervised_mask(tokenizer: Any, rendered: RenderedConversation) -> tuple[list[int], list[bool]]:
    """Token ids and the supervised flag per token: tokens overlapping an answer, plus the special token after it."""
    enc = _tokenize(tokenizer, rendered.text, offsets=True)
    ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    supervised = [False] * len(ids)
    for k, (start, end) in enumerate(rendered.answer_spans):
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
        if not inside:
            raise InputError(f"assistant answer {k} maps to no token")
        last = inside[-1]
        if offsets[last][1] > end:
            raise InputError(f"assistant answer {k}'s last token runs past the answer into the template text")
        if last + 1 >= len(ids) or not _is_special(tokenizer, ids[last + 1]):
            raise InputError(f"assistant answer {k} is not followed by a special end-of-turn/EOS token")
        for i in range(inside[0], last + 2):
            supervised[i] = True
    return ids, supervised


def build_training_example(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any] | Message],
    template: Template = "auto",
    system: str | None = None,
    image: bool = True,
    max_length: int | None = None,
) -> TrainingExample:
    """``input_ids`` and ``labels`` for one (single- or multi-turn) conversation.

    Only the assistant answers and the end-of-turn/EOS token after each are supervised; labels of
    everything else are ``-100``. ``max_length`` truncates from the right (an example whose image
    placeholder would be cut raises). Raises :class:`InputError` for malformed conversations, a
    template that does not mark answer ends, or a slow tokenizer.
    """
    rendered = render_conversation(tokenizer, messages, template=template, system=system, image=image)
    ids, supervised = _supervised_mask(tokenizer, rendered)
    labels = [t if s else IGNORE_INDEX for t, s in zip(ids, supervised, strict=True)]
    if max_length is not None:
        if max_length < 1:
            raise InputError(f"max_length must be >= 1, got {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
        if image:
            image_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
            if image_id not in ids:
                raise InputError(f"max_length {max_length} cuts off the image placeholder")
    return TrainingExample(ids, labels, rendered.text, rendered.template)


def pad_batch(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    labels: Sequence[Sequence[int]] | None = None,
    side: Literal["left", "right"] = "right",
) -> dict[str, torch.Tensor]:
    """Pad token lists to ``input_ids``/``attention_mask`` (and ``labels``, padded with -100) tensors."""
    if side not in ("left", "right"):
        raise InputError(f"padding side must be 'left' or 'right', got {side!r}")
    if not sequences:
        raise InputError("cannot pad an empty batch")
    if labels is not None and [len(s) for s in sequences] != [len(s) for s in labels]:
        raise InputError("labels and input_ids differ in length")
    width = max(len(s) for s in sequences)
    rows, masks, label_rows = [], [], []
    for i, seq in enumerate(sequences):
        pad = width - len(seq)
        fill, ones = [pad_id] * pad, [1] * len(seq)
        rows.append([*fill, *seq] if side == "left" else [*seq, *fill])
        masks.append([0] * pad + ones if side == "left" else ones + [0] * pad)
        if labels is not None:
            ign = [IGNORE_INDEX] * pad
            label_rows.append([*ign, *labels[i]] if side == "left" else [*labels[i], *ign])
    out = {
        "input_ids": torch.tensor(rows, dtype=torch.long),
        "attention_mask": torch.tensor(masks, dtype=torch.long),
    }
    if labels is not None:
        out["labels"] = torch.tensor(label_rows, dtype=torch.long)
    return out
