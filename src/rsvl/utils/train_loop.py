"""The step loop the detectors' trainers share: resume, progress, logged means, checkpoints, Ctrl-C.

A run folder holds ``last.pt`` (:func:`~rsvl.utils.checkpoint.save_training_state`) and
``history.json`` (one entry per ``log_every`` steps: the step, the learning rate and the mean of
each loss term since the previous entry). :func:`resume_run` restores both; :func:`run_steps`
calls the trainer's ``step_fn`` for every remaining step, writes both files every
``checkpoint_every`` steps, at the end and when interrupted (the step in flight is dropped and
redone on resume, so a resumed run continues exactly where the interrupted one stopped, provided
``step_fn`` is a function of the step and the restored state).

Under several processes (:class:`~rsvl.utils.distributed.Distributed`) every rank runs the loop;
``step_fn`` returns values already averaged over ranks, and only rank 0 shows progress and writes
the files (the others wait at a barrier so that no rank runs ahead of a checkpoint).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rsvl.utils.atomic import write_json
from rsvl.utils.checkpoint import load_training_state, save_training_state
from rsvl.utils.distributed import Distributed
from rsvl.utils.progress import progress_bar

__all__ = ["CHECKPOINT", "HISTORY", "resume_run", "run_steps"]

logger = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
HISTORY = "history.json"


def resume_run(
    out: Path,
    model: Any,
    optimizer: Any,
    config_yaml: str,
    resumable_changes: Iterable[tuple[str, ...]] = (),
    resume: bool = True,
) -> tuple[int, list[dict[str, float]]]:
    """The step to start from and the history so far (0 and [] for a new run or ``resume=False``)."""
    ckpt = out / CHECKPOINT
    if not (resume and ckpt.is_file()):
        return 0, []
    start = load_training_state(ckpt, model, optimizer, config_yaml, resumable_changes)
    history = []
    if (out / HISTORY).is_file():
        history = [h for h in json.loads((out / HISTORY).read_text()) if h["step"] <= start]
    logger.info("resuming %s from step %d", out, start)
    return start, history


def run_steps(
    out: Path,
    model: Any,
    optimizer: Any,
    config_yaml: str,
    *,
    start: int,
    steps: int,
    history: list[dict[str, float]],
    step_fn: Callable[[int], dict[str, float]],
    lr_of: Callable[[int], float],
    loss_key: str,
    log_every: int,
    checkpoint_every: int,
    label: str,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    dist: Distributed | None = None,
    seed: int | None = None,
) -> float:
    """Run ``step_fn(step)`` (one optimiser step, returning its loss values) for ``start .. steps - 1``.

    ``seed``: reseed torch before every step from ``(seed, rank, step)``
    (:meth:`~rsvl.utils.distributed.Distributed.seed_step`).

    Returns the seconds spent; ``history`` is extended in place and ``last.pt`` holds step ``steps``.
    """
    dist = dist or Distributed()
    ckpt = out / CHECKPOINT

    def save(step: int, entries: list[dict[str, float]]) -> None:
        if dist.is_main:
            save_training_state(ckpt, model, optimizer, step, config_yaml)
            write_json(out / HISTORY, entries)

    running: dict[str, float] = {}
    count, done = 0, start
    t0 = time.perf_counter()
    try:
        with progress_bar(progress and dist.is_main) as bar:
            task = bar.add_task(label, total=steps, completed=start)
            for step in range(start, steps):
                if seed is not None:
                    dist.seed_step(seed, step)
                values = step_fn(step)
                done = step + 1
                for k, v in values.items():
                    running[k] = running.get(k, 0.0) + v
                count += 1
                if done % log_every == 0 or done == steps:
                    entry = {"step": done, "lr": lr_of(step), **{k: v / count for k, v in running.items()}}
                    history.append(entry)
                    running, count = {}, 0
                    bar.update(task, description=f"{label} loss {entry[loss_key]:.3f}")
                bar.advance(task)
                if done % checkpoint_every == 0 and done < steps:
                    save(done, history)
                    dist.barrier()
                if on_step is not None:
                    on_step(step, values)
    except KeyboardInterrupt:
        save(done, [h for h in history if h["step"] <= done])
        logger.warning("interrupted: checkpoint at step %d in %s; run again to resume", done, ckpt)
        raise
    seconds = time.perf_counter() - t0
    save(steps, history)
    dist.barrier()
    return seconds
