"""A model trained outside ps-lightning: the README's worked example as written, a timm model
through the CLI, Naive PS and PS, a torchvision network with a non-``fc`` head handed over as
the user's own module, `RecordInitialHead` in a plain Lightning Trainer, and the checks around
them (the head split, the workdir, loading only around the live module); tiny image folders
written here, random weights."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from test_image_folder import train_on_folder, write_folder
from torch import nn
from torchvision.models import efficientnet_b0

from ps_lightning import RecordInitialHead, Unlearner
from ps_lightning.data import ImageFolderDataModule
from ps_lightning.models import InitialHead, TimmClassifier, load_classifier, supplying_network
from ps_lightning.models.head_split import find_head

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ["cat", "dog", "fox"]


def my_images(root: Path) -> Path:
    return write_folder(root / "my_images", CLASSES, {"train": 8, "test": 4}, ".png", "RGB")


class SmallNet(L.LightningModule):
    """A user's own LightningModule: a small convolutional network ending in ``head``."""

    def __init__(self, num_classes: int = 3, scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(8, num_classes)
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(images)) * self.scale

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        return F.cross_entropy(self(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(
    model: L.LightningModule,
    data: ImageFolderDataModule,
    root: Path,
    epochs: int,
    callbacks: list[L.Callback] | None = None,
    ckpt_path: Path | None = None,
) -> None:
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)


def head_of(layer: nn.Linear) -> torch.Tensor:
    return torch.cat([layer.weight, layer.bias[:, None]], dim=1)


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- example: own-model -->\n```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its own-model example"
    return match.group(1)


@pytest.mark.timeout(240)
def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    my_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)

    printed = capsys.readouterr().out
    assert [line.split()[0] for line in printed.splitlines() if " forget " in line] == [
        "naive",
        "ps",
        "retrain",
    ]
    model, naive, ps, unlearner = (namespace[k] for k in ("model", "naive", "ps", "unlearner"))
    assert ps.forget_indices == [1, 2]  # the two named files of class "cat" (label 0)
    for result in (naive, ps):
        network = result.network
        assert type(network).__name__ == "FineTune" and network is not model
        # The body is the original's; the head is the unlearned one, the model's own is intact.
        body = dict(model.net.named_parameters())
        assert all(
            torch.equal(t, body[n]) for n, t in network.net.named_parameters() if "fc" not in n
        )
        assert not torch.equal(head_of(network.net.fc), head_of(model.net.fc))
        # The joined module scores as the unlearned head on the features does.
        joined = unlearner.metrics(network, result.forget_indices)
        for key in ("forget_acc", "retain_acc", "test_acc"):
            assert joined[key] == pytest.approx(result.metrics[key], abs=1e-6)
    saved = torch.load(tmp_path / "resnet18-unlearned.pt", weights_only=True)
    assert torch.equal(saved["net.fc.bias"], ps.network.net.fc.bias)


def test_a_timm_model_trains_by_the_cli_and_forgets_with_naive_ps_and_ps(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "shapes", CLASSES, {"train": 8, "test": 3}, ".png", "RGB")
    checkpoint = train_on_folder(
        folder, tmp_path / "runs", "vit", 1,
        "--model", "TimmClassifier", "--model.network", "test_vit",
        "--model.options", "{img_size: 32}",
    )  # fmt: skip
    model, record = load_classifier(str(checkpoint))
    assert isinstance(model, TimmClassifier) and record["init_args"]["network"] == "test_vit"
    assert model.net.head_name == "head"  # timm's get_classifier(), a ViT's head
    unlearner = Unlearner.from_checkpoint(
        checkpoint, data=ImageFolderDataModule(data_dir=str(folder), name="shapes")
    )
    forget = [8, 9, 10]
    naive = unlearner.forget(forget, method="naive")
    ps = unlearner.forget(forget, method="ps", epochs=3)
    assert not torch.equal(naive.model.prototypes.weight, model.prototypes.weight)
    assert not torch.equal(ps.model.prototypes.bias, model.prototypes.bias)
    assert set(ps.metrics) >= {"forget_acc", "retain_acc", "test_acc", "mia_lira"}


def test_timm_heads_are_found_by_get_classifier_also_inside_a_users_module() -> None:
    import timm

    network = timm.create_model("test_convnext", num_classes=3)
    assert find_head(network, 3) == "head.fc"

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = network
            self.extra = nn.Linear(3, 3)  # the last Linear of 3 outputs, but not the classifier

    assert find_head(Wrapper(), 3) == "backbone.head.fc"


def test_without_recorded_initial_weights_naive_ps_refuses_in_one_line_and_ps_works(
    tmp_path: Path,
) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    network = efficientnet_b0(num_classes=3)  # a plain nn.Module, head classifier[1]
    unlearner = Unlearner.from_module(network, data=data)
    with pytest.raises(ValueError, match="RecordInitialHead") as refused:
        unlearner.forget([0, 1], method="naive")
    assert "\n" not in str(refused.value) and "method 'ps'" in str(refused.value)
    ps = unlearner.forget([0, 1], method="ps", epochs=2, early_stop="off")
    assert type(ps.network).__name__ == "EfficientNet"
    assert not torch.equal(ps.network.classifier[1].bias, network.classifier[1].bias)
    assert ps.metrics["forget_acc"] == pytest.approx(
        unlearner.metrics(ps.network, [0, 1])["forget_acc"]
    )
    # Given its initial head, the same network goes through Naive PS too.
    layer = network.classifier[1]
    recorded = InitialHead("classifier.1", layer.weight.detach() * 0.5, layer.bias.detach())
    naive = Unlearner.from_module(network, data=data, initial_head=recorded).forget(
        [0, 1], method="naive"
    )
    assert not torch.equal(naive.network.classifier[1].weight, layer.weight)
    assert set(naive.metrics) >= {"forget_acc", "retain_acc", "test_acc", "mia_lira"}


def test_the_initial_head_is_recorded_before_the_first_step_and_survives_a_resume(
    tmp_path: Path,
) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    torch.manual_seed(0)
    model = SmallNet()
    initial = model.head.weight.detach().clone()
    recorder = RecordInitialHead()
    fit(model, data, tmp_path, 1, callbacks=[recorder])
    assert recorder.initial_head.head == "head"
    assert torch.equal(recorder.initial_head.weight, initial)
    assert not torch.equal(model.head.weight, initial)  # it trained; the record did not move

    snapshot = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert torch.equal(RecordInitialHead.read(snapshot).weight, initial)
    resumed_recorder = RecordInitialHead()
    fit(SmallNet(), data, tmp_path / "resumed", 2, callbacks=[resumed_recorder], ckpt_path=snapshot)
    assert torch.equal(resumed_recorder.initial_head.weight, initial)

    # The record makes Naive PS work on the user's model, from the recorder or the file.
    for initial_head in (recorder.initial_head, snapshot):
        unlearner = Unlearner.from_module(model, data=data, initial_head=initial_head)
        naive = unlearner.forget([0, 1], method="naive")
        assert not torch.equal(naive.network.head.weight, model.head.weight)


def test_a_checkpoint_without_the_record_names_the_callback(tmp_path: Path) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    fit(SmallNet(), data, tmp_path, 1)
    snapshot = next((tmp_path / "checkpoints").glob("*.ckpt"))
    with pytest.raises(ValueError, match="RecordInitialHead among its callbacks"):
        RecordInitialHead.read(snapshot)


def test_a_head_that_is_not_the_last_operation_is_refused(tmp_path: Path) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    with pytest.raises(ValueError, match="'head' of SmallNet is not its last operation"):
        Unlearner.from_module(SmallNet(scale=2.0), data=data)
    with pytest.raises(ValueError, match=r"head='body\.1' names ReLU"):
        Unlearner.from_module(SmallNet(), data=data, head="body.1")


def test_a_workdir_keeps_its_model_and_refuses_another(tmp_path: Path) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    model = SmallNet()
    workdir = tmp_path / "unlearning"
    Unlearner.from_module(model, data=data, workdir=workdir).forget([0], method="ps", epochs=1)
    before = (workdir / "original" / "checkpoints" / "model.ckpt").stat().st_mtime_ns
    Unlearner.from_module(model, data=data, workdir=workdir)  # the same model: kept
    assert (workdir / "original" / "checkpoints" / "model.ckpt").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="holds another model"):
        Unlearner.from_module(SmallNet(), data=data, workdir=workdir)
    head = model.head
    recorded = InitialHead("head", head.weight.detach() * 0, head.bias.detach())
    with pytest.raises(FileExistsError, match="this model with another initial head"):
        Unlearner.from_module(model, data=data, workdir=workdir, initial_head=recorded)


class BuiltLate(SmallNet):
    """A module whose network is built in `configure_model`, as large models are."""

    def __init__(self) -> None:
        L.LightningModule.__init__(self)
        self.scale = 1.0

    def configure_model(self) -> None:
        if not hasattr(self, "head"):
            torch.manual_seed(1)
            built = SmallNet()
            self.body, self.head = built.body, built.head


def test_the_initial_head_of_a_module_built_in_configure_model_is_recorded(tmp_path: Path) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    torch.manual_seed(1)
    expected = SmallNet().head.weight.detach().clone()
    recorder = RecordInitialHead()
    fit(BuiltLate(), data, tmp_path, 1, callbacks=[recorder])
    assert torch.equal(recorder.initial_head.weight, expected)


def test_a_saved_result_loads_only_around_the_users_live_module(tmp_path: Path) -> None:
    data = ImageFolderDataModule(str(my_images(tmp_path)), image_size=32)
    model = SmallNet()
    result = Unlearner.from_module(model, data=data).forget(
        [0, 1], method="ps", epochs=2, save_to=tmp_path / "request"
    )
    with pytest.raises(ValueError, match="never rebuilds"):
        load_classifier(str(result.checkpoint))
    with supplying_network(nn.Linear(2, 3)), pytest.raises(ValueError, match=r"holds a .*SmallNet"):
        load_classifier(str(result.checkpoint))
    with supplying_network(model):
        loaded, _ = load_classifier(str(result.checkpoint))
    assert torch.equal(loaded.prototypes.bias, result.model.prototypes.bias)


def test_training_files_map_to_their_ids_and_other_files_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = my_images(tmp_path)
    data = ImageFolderDataModule(str(root), image_size=32)
    monkeypatch.chdir(root)  # a name relative to here is the same file
    files = [root / "train/dog/0003.png", "train/cat/0000.png"]
    assert data.train_ids(files) == [8 + 3, 0]
    labels = data.samples("train").tensors[1]
    assert labels[[11, 0]].tolist() == [1, 0]
    with pytest.raises(ValueError, match="not training images"):
        data.train_ids([root / "test/cat/0000.png"])
