"""Open-Det recipes and training: targets from any detection format, checkpoints, exact resume."""

from __future__ import annotations

import pytest
import torch

from rsvl.errors import InputError
from rsvl.methods.opendet.recipe import OpenDetRecipe, load_recipe
from rsvl.methods.opendet.train import CHECKPOINT, MODEL_FILE, natural_name, prepare_batch, train
from rsvl.synth import generate_dataset
from rsvl.utils.checkpoint import read_torch_file

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("opendet") / "coco"
    generate_dataset("coco", root, 4, seed=3, size=128, progress=False)
    return root


def _recipe(root, **optim) -> OpenDetRecipe:
    from rsvl.methods.opendet.config import OpenDetConfig

    settings = {"steps": 4, "batch_size": 2, "image_size": 96, "checkpoint_every": 2, "log_every": 1, **optim}
    return OpenDetRecipe(
        data={"format": "coco", "root": str(root), "crop_size": 96},
        model=OpenDetConfig.tiny(text_dim=32).model_dump(),
        names={"tiny": True, "head_steps": 2},
        text={"tiny": True},
        optim=settings,
    )


def test_natural_names():
    assert natural_name("small-vehicle") == "small vehicle"
    assert natural_name("ground_track-field") == "ground track field"


def test_prepare_batch_normalises_boxes_by_the_crop():
    image = torch.rand(3, 50, 100)
    targets = [{"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1])}]
    text = torch.eye(2, 4)
    pixels, batch = prepare_batch([image], targets, 80, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), ["a", "b"], text)
    assert pixels.shape == (1, 3, 80, 80)
    assert torch.allclose(batch[0].boxes, torch.tensor([[0.2, 0.3, 0.2, 0.4]]))
    assert batch[0].names == ["b"] and torch.equal(batch[0].text, text[1:])


def test_training_writes_a_model_and_resumes_exactly(coco_root, tmp_path):
    recipe = _recipe(coco_root)
    full = train(recipe, tmp_path / "full", progress=False)
    assert (tmp_path / "full" / MODEL_FILE).is_file() and len(full.history) == 4
    assert {"bce", "align", "bbox", "giou", "distill", "lm", "lm_denoise", "total"} <= set(full.history[0])
    saved = read_torch_file(full.model_path)
    assert saved["format"] == "rsvl.opendet/1" and saved["classes"]

    def stop(step, _values):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(recipe, tmp_path / "split", progress=False, on_step=stop)
    assert read_torch_file(tmp_path / "split" / CHECKPOINT)["step"] == 3
    resumed = train(recipe, tmp_path / "split", progress=False)
    a = read_torch_file(full.model_path)["state_dict"]
    b = read_torch_file(resumed.model_path)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert [h["total"] for h in resumed.history] == pytest.approx([h["total"] for h in full.history])


def test_a_changed_recipe_does_not_resume(coco_root, tmp_path):
    train(_recipe(coco_root, steps=2), tmp_path / "run", progress=False)
    with pytest.raises(InputError, match="different recipe"):
        train(_recipe(coco_root, steps=2, lr=1e-3), tmp_path / "run", progress=False)


def test_recipe_errors_name_the_problem(coco_root, tmp_path):
    bad = _recipe(coco_root).model_dump(mode="json")
    bad["model"]["text_dim"] = 48
    with pytest.raises(InputError, match="text_dim"):
        train(OpenDetRecipe(**bad), tmp_path / "x", progress=False)
    config = tmp_path / "r.yaml"
    config.write_text("data: {format: coco, root: x}\nnames: {tiny: true, path: /nowhere}\n")
    with pytest.raises(InputError, match="names"):
        load_recipe(config)
