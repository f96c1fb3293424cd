"""rsvl.utils.distributed: batch shares, precision, and real 2-process gloo runs (DDP, FSDP2, a trainer)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rsvl.errors import InputError
from rsvl.utils.distributed import Distributed, batch_slots, step_seed

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(*args: str, launcher: str = "torchrun") -> subprocess.CompletedProcess[str]:
    """Run ``args`` on 2 CPU processes (gloo) with torchrun or ``accelerate launch``."""
    if shutil.which(launcher) is None:
        pytest.skip(f"{launcher} is not on PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if launcher == "torchrun":
        cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", *args]
    else:  # accelerate's multi-process mode is --multi_gpu, also on CPU-only machines
        port = str(29500 + os.getpid() % 1000)
        cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", port, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.parametrize(("world", "accum"), [(1, 1), (2, 1), (2, 2), (4, 3)])
def test_batch_slots_cover_the_batch_once(world: int, accum: int) -> None:
    batch = 12
    taken = [s for m in range(accum) for r in range(world) for s in batch_slots(batch, accum, m, r, world)]
    assert sorted(taken) == list(range(batch))
    sizes = {len(batch_slots(batch, accum, m, r, world)) for m in range(accum) for r in range(world)}
    assert sizes == {batch // (world * accum)}


def test_batch_that_does_not_split_is_refused() -> None:
    with pytest.raises(InputError, match="multiple of 4"):
        batch_slots(6, 2, 0, 0, 2)


def test_single_process_is_the_identity() -> None:
    dist = Distributed("cpu")
    model = torch.nn.Linear(2, 2)
    assert not dist.distributed and dist.is_main and dist.wrap(model) is model
    assert dist.slots(4, 2, 1) == [2, 3] and dist.mean({"a": 1.5}) == {"a": 1.5}
    assert dist.full_state_dict(model).keys() == model.state_dict().keys()


def test_precision_choices() -> None:
    with pytest.raises(InputError, match="fp16 needs a CUDA"):
        Distributed("cpu", "fp16")
    assert Distributed("cpu", "auto").dtype is None  # CPU: full precision
    dist = Distributed("cpu", "bf16")
    with dist.autocast():
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    with pytest.raises(InputError, match="strategy"):
        Distributed("cpu", strategy="zero3")


def test_step_seeds_differ_by_rank_and_step() -> None:
    seeds = {step_seed(0, r, s) for r in range(4) for s in range(100)}
    assert len(seeds) == 400 and step_seed(1, 0, 0) != step_seed(0, 0, 0)


def _read(prefix: Path, ranks: int) -> list[dict]:
    return [json.loads(Path(f"{prefix}.{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.parametrize(("launcher", "strategy"), [("torchrun", "ddp"), ("torchrun", "fsdp"), ("accelerate", "ddp")])
def test_two_processes_match_one_process_with_the_whole_batch(tmp_path: Path, launcher: str, strategy: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(WORKER), str(tmp_path / "one"), "ddp", "1"], check=True, env=env, timeout=120)
    _torchrun(str(WORKER), str(tmp_path / "two"), strategy, "2", launcher=launcher)
    (one,) = _read(tmp_path / "one", 1)
    two = _read(tmp_path / "two", 2)
    assert one["world"] == 1 and two[0]["world"] == 2
    for rank in two:  # every rank logs the same (reduced) loss curve
        assert rank["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two[0]["state"].keys() == one["state"].keys()  # no DDP "module." prefix
    for key, value in one["state"].items():
        assert two[0]["state"][key] == pytest.approx(value, rel=1e-5, abs=1e-6)
    if strategy == "ddp":  # replicas stay identical
        assert two[1]["state"] == two[0]["state"]


def test_vlm4rsdet_trainer_under_torchrun_follows_the_single_process_curve(tmp_path: Path) -> None:
    from rsvl.synth import generate_dataset

    generate_dataset("aitod", tmp_path / "data", n=6, seed=0, size=128, progress=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"data: {{format: aitod, root: {tmp_path / 'data'}, crop_size: 96}}\n"
        "detector: {backbone_weights: false, detections_per_img: 20}\n"
        "vlm: {enabled: true, tiny: {d_model: 32, layers: 1, heads: 2, ffn: 64}, grid: 4, visual_dim: 32}\n"
        "optim: {steps: 4, batch_size: 4, checkpoint_every: 2, log_every: 1, warmup_steps: 1}\n"
    )
    from rsvl.methods.vlm4rsdet.config import load_recipe
    from rsvl.methods.vlm4rsdet.train import train

    one = train(load_recipe(recipe), tmp_path / "one", progress=False, evaluate=False)
    _torchrun("-m", "rsvl", "-q", "train", "vlm4rsdet", "-c", str(recipe), "-o", str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    assert [h["step"] for h in two] == [1, 2, 3, 4]
    # equal up to the detector's loss normalisation (positives are counted per process)
    assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one.history], rel=0.05)
    exported = torch.load(tmp_path / "two" / "detector.pt", weights_only=True)
    assert exported["classes"] == torch.load(one.detector_path, weights_only=True)["classes"]
    assert torch.load(tmp_path / "two" / "last.pt", weights_only=True)["step"] == 4


def test_mfrsvlm_fsdp_under_torchrun_follows_the_single_process_curve(tmp_path: Path) -> None:
    import yaml

    from rsvl.methods.mfrsvlm.recipe import MFRSVLMRecipe, build_model
    from rsvl.methods.mfrsvlm.train import train
    from rsvl.synth import generate_dataset
    from rsvl.utils.config import load_config

    sources = []
    for fmt, task in (("captions", "caption"), ("classification", "classification")):
        generate_dataset(fmt, tmp_path / fmt, 4, seed=0, size=112, progress=False)
        sources.append({"format": fmt, "root": str(tmp_path / fmt), "task": task})
    data = {
        "name": "mini",
        "model": {"tiny": True, "tile_size": 56, "variant": "fusion_injection"},
        "sources": sources,
        "train": {"stage": 1, "steps": 3, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 2, "strategy": "fsdp"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_config(MFRSVLMRecipe, path)
    one = train(build_model(recipe.model, seed=recipe.train.seed), recipe.sources, recipe.train, tmp_path / "one",
                progress=False)  # fmt: skip
    _torchrun("-m", "rsvl", "-q", "train", "mfrsvlm", "-c", str(path), "-o", str(tmp_path / "two"), "--no-eval")
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    # equal up to each process averaging over its own supervised tokens
    assert [h["loss"] for h in two] == pytest.approx([h["loss"] for h in one.history], rel=0.01)
    assert (tmp_path / "two" / "trainable.safetensors").is_file()


def test_rfm_distillation_under_torchrun_equals_one_process_and_resumes_across_world_sizes(tmp_path: Path) -> None:
    from rsvl.synth import generate_dataset

    generate_dataset("lrsvqa", tmp_path / "lrs", 2, seed=3, size=1024, progress=False)
    args = ["train", "lrsvqa-rfm", "--root", str(tmp_path / "lrs"), "--steps", "3", "--batch-size", "2", "--tiny"]
    args += ["--set", "rfm.teacher_layers=[2,3]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "rsvl", "-q", *args, "-o", str(tmp_path / "one")], check=True, env=env)
    _torchrun("-m", "rsvl", "-q", *args, "-o", str(tmp_path / "two"))
    one, two = (json.loads((tmp_path / r / "state.json").read_text()) for r in ("one", "two"))
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5) and len(two["losses"]) == 3
    # 2 steps on one process, then resumed by 2 processes from rank 0's checkpoint: the same run
    first = [a if a != "3" else "2" for a in args]
    subprocess.run([sys.executable, "-m", "rsvl", "-q", *first, "-o", str(tmp_path / "cut")], check=True, env=env)
    _torchrun("-m", "rsvl", "-q", *args, "-o", str(tmp_path / "cut"))
    cut = json.loads((tmp_path / "cut" / "state.json").read_text())
    assert cut["losses"] == pytest.approx(one["losses"], rel=1e-5)


def test_opendet_trains_under_torchrun_through_its_name_stages(tmp_path: Path) -> None:
    import yaml

    from rsvl.methods.opendet.config import OpenDetConfig
    from rsvl.methods.opendet.infer import load_opendet
    from rsvl.synth import generate_dataset

    generate_dataset("coco", tmp_path / "coco", 4, seed=3, size=128, progress=False)
    recipe = {
        "data": {"format": "coco", "root": str(tmp_path / "coco"), "crop_size": 96},
        "model": OpenDetConfig.tiny(text_dim=32).model_dump(mode="json"),
        "names": {"tiny": True, "head_steps": 2},  # the LoRA head alone, then all of T5: DDP is re-wrapped
        "text": {"tiny": True},
        "optim": {"steps": 4, "batch_size": 4, "image_size": 96, "checkpoint_every": 2, "log_every": 1},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    _torchrun("-m", "rsvl", "-q", "train", "opendet", "-c", str(tmp_path / "r.yaml"), "-o", str(tmp_path / "run"))
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(h["total"])) for h in history)
    assert load_opendet(tmp_path / "run" / "opendet.pt").classes


def test_bf16_autocast_with_accumulation_trains_close_to_full_precision(tmp_path: Path) -> None:
    from rsvl.methods.vlm4rsdet.config import VLM4RSDetConfig
    from rsvl.methods.vlm4rsdet.train import train
    from rsvl.synth import generate_dataset

    generate_dataset("aitod", tmp_path / "data", n=4, seed=0, size=128, progress=False)

    def recipe(**optim: object) -> VLM4RSDetConfig:
        return VLM4RSDetConfig.model_validate({
            "data": {"format": "aitod", "root": str(tmp_path / "data"), "crop_size": 96},
            "detector": {"backbone_weights": False, "detections_per_img": 20},
            "vlm": {"enabled": False},
            "optim": {"steps": 3, "batch_size": 4, "log_every": 1, "warmup_steps": 1, **optim},
        })  # fmt: skip

    full = train(recipe(), tmp_path / "fp32", progress=False, evaluate=False)
    mixed = train(recipe(mixed_precision="bf16", grad_accum=2), tmp_path / "bf16", progress=False, evaluate=False)
    a, b = ([h["loss"] for h in r.history] for r in (full, mixed))
    assert b == pytest.approx(a, rel=0.05) and b != a  # bf16 rounds, so not bit-equal
    with pytest.raises(InputError, match="multiple of 4"):
        train(recipe(batch_size=6, grad_accum=4), tmp_path / "bad", progress=False, evaluate=False)
