"""The benchmark harness without training: the selection rule, failures recorded rather than
fatal, training epochs only where asked, and tables that show what was measured."""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from unlearning_fixtures import init_default

from ps_lightning.harness.chain import Harness, source_commit
from ps_lightning.harness.main import main
from ps_lightning.harness.methods import METHOD_CONFIGS
from ps_lightning.harness.selection import (
    NothingToSelect,
    kept_selection,
    point_name,
    point_overrides,
    read_grid,
    select,
)
from ps_lightning.harness.tables import METRICS, aggregate, markdown
from ps_lightning.prototype_surgery import PSUnlearnModule
from ps_lightning.steps import StepFailed, _step_parser
from ps_lightning.unlearning import SCRUB, SalUn

REPO = Path(__file__).resolve().parents[1]


class FakeSteps:
    """Stands in for `Harness.step`: records every command, fails the methods named in
    ``failing``, and evaluates every listed checkpoint with a made-up avg gap."""

    def __init__(self, root: Path, failing: set[str] = frozenset()) -> None:
        self.root = root
        self.failing = failing
        self.calls: list[tuple[str, str, str, list[str]]] = []

    def __call__(self, subcommand: str, config: str, run: str, args: list[str]) -> Path:
        self.calls.append((subcommand, config, run, args))
        run_dir = self.root / run
        run_dir.mkdir(parents=True, exist_ok=True)
        name = run.split("-", 2)[-1]
        if name.split("__")[0] in self.failing:  # a method fails at every grid point
            raise StepFailed("FloatingPointError: non-finite weights")
        if subcommand == "test":
            listing = args[args.index("--model.init_args.checkpoints") + 1]
            names = [item.split(":")[0] for item in listing.strip("{}").split(", ")]
            models = {
                n: {
                    "metrics": dict.fromkeys(METRICS, 0.5),
                    "gap_to_retrain": {"avg_gap": 0.1, "avg_gap_without_mia": 0.2},
                    "timing": {},
                }
                for n in names
            }
            (run_dir / "metrics.json").write_text(
                json.dumps({"models": models, "retrain": "retrain"})
            )
        return run_dir


def harness_with(
    steps: FakeSteps,
    max_epochs: int | None = None,
    architecture: str | None = None,
    training_extra: list[str] | None = None,
    method_extra: dict[str, list[str]] | None = None,
) -> Harness:
    harness = Harness(
        "digits",
        steps.root,
        isolate=False,
        extra=[],
        max_epochs=max_epochs,
        architecture=architecture,
        training_extra=training_extra,
        method_extra=method_extra,
    )
    harness.step = steps  # type: ignore[method-assign]
    return harness


def test_a_failing_method_is_recorded_and_the_others_are_evaluated(tmp_path: Path) -> None:
    steps = FakeSteps(tmp_path, failing={"gradient_ascent"})
    methods = {name: METHOD_CONFIGS[name] for name in ("gradient_ascent", "ps")}
    summary = harness_with(steps).seed_run(0, "wholeclass", methods)
    assert summary["failed"] == {"gradient_ascent": "FloatingPointError: non-finite weights"}
    assert set(summary["models"]) == {"original", "retrain", "ps"}
    table = aggregate([summary], ["original", "retrain", *methods])
    text = markdown("digits", "wholeclass", [0], table, isolate=False)
    row = next(line for line in text.splitlines() if line.startswith("| gradient_ascent"))
    assert "failed on 1 of 1 seeds" in row and "| failed |" in row
    ps_row = next(line for line in text.splitlines() if line.startswith("| ps "))
    assert "0.100" in ps_row


def test_single_seed_tables_print_no_spread(tmp_path: Path) -> None:
    steps = FakeSteps(tmp_path)
    summary = harness_with(steps).seed_run(0, "random", {"ps": METHOD_CONFIGS["ps"]})
    one = markdown("digits", "random", [0], aggregate([summary], ["ps"]), isolate=False)
    assert "±" not in one
    two = markdown("digits", "random", [0, 1], aggregate([summary, summary], ["ps"]), False)
    assert "0.100 ± 0.000" in two


def test_max_epochs_architecture_and_training_args_reach_only_original_and_retrain(
    tmp_path: Path,
) -> None:
    plain, shortened = FakeSteps(tmp_path), FakeSteps(tmp_path)
    harness_with(plain).seed_run(0, "random", {"ps": METHOD_CONFIGS["ps"]})
    bf16 = ["--trainer.precision=bf16-mixed"]
    harness_with(shortened, max_epochs=2, architecture="ResNet18", training_extra=bf16).seed_run(
        0, "random", {"ps": METHOD_CONFIGS["ps"]}
    )
    # The original's command line as the harness has always built it: cached runs stay valid.
    assert plain.calls[0][3] == ["--seed_everything", "0"]
    extra = ["--model", "ps_lightning.models.ResNet18"]
    extra += ["--trainer.max_epochs", "2", "--lr_scheduler.init_args.T_max", "2", *bf16]
    for before, after in zip(plain.calls, shortened.calls, strict=True):
        if before[1] in ("original.yaml", "retrain.yaml"):
            assert after[3] == [*before[3], *extra]
        else:
            assert after[3] == before[3]


def test_method_args_reach_only_the_method_they_name(tmp_path: Path) -> None:
    plain, peers_bf16 = FakeSteps(tmp_path), FakeSteps(tmp_path)
    methods = {name: METHOD_CONFIGS[name] for name in ("ps", "finetune")}
    harness_with(plain).seed_run(0, "random", methods)
    bf16 = ["--trainer.precision=bf16-mixed"]
    harness = harness_with(peers_bf16, method_extra={"finetune": bf16})
    harness.seed_run(0, "random", methods)
    changed = {
        after[2]: after[3][len(before[3]) :]
        for before, after in zip(plain.calls, peers_bf16.calls, strict=True)
        if after[3] != before[3]
    }
    assert changed == {"s0-random-finetune": bf16}
    # Kept with the table: the committed-results check plans the same steps again.
    assert harness.settings()["method_extra"] == {"finetune": bf16}


def test_a_method_arg_for_a_method_not_run_or_without_its_method_is_refused(
    tmp_path: Path, fake_steps: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    for given, said in [
        ("finetune:--trainer.precision=bf16-mixed", "'finetune' is not among this run's"),
        ("--trainer.precision=bf16-mixed", "expected METHOD:ARG"),
        ("ps:--model.init_args.lr=0.5", "only the Trainer's arguments"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main([*BENCH, "--runs-dir", str(runs), f"--method-arg={given}"])
        assert exited.value.code == 2
        assert said in capsys.readouterr().err
    assert not runs.exists()


def test_selection_takes_the_lowest_mean_gap_and_never_a_point_that_failed() -> None:
    points = {"a": {"lr": 0.1}, "b": {"lr": 0.01}, "c": {"lr": 0.001}}
    scores = {"a": [0.30, 0.10], "b": [0.15, 0.20], "c": [0.01, math.inf]}
    assert select(scores, points) == ("b", pytest.approx(0.175))
    # A run without a gap (NaN) disqualifies its point as a failure does.
    assert select({"a": [math.nan, 0.0], "b": [0.2, 0.2]}, {"a": {}, "b": {}})[0] == "b"
    with pytest.raises(NothingToSelect, match="every grid point"):
        select({"a": [math.inf], "b": [math.nan]}, {"a": {}, "b": {}})


def test_selecting_some_methods_keeps_the_others_entries_or_refuses_other_seeds(
    tmp_path: Path,
) -> None:
    table = tmp_path / "digits-selection.json"
    entries = {"ps": {"chosen": "ps__lr-0p03"}, "scrub": {"chosen": "scrub__lr-0p001"}}
    table.write_text(
        json.dumps({"select_seeds": [0, 1, 2], "scenarios": ["subclass"], "selection": entries})
    )
    args = argparse.Namespace(select_methods=["scrub"], select_seeds=[0, 1, 2])

    kept = kept_selection(table, argparse.Namespace(**vars(args), scenarios=["subclass"]))

    assert kept == {"ps": entries["ps"]}
    with pytest.raises(ValueError, match=r"made on selection seeds \[0, 1, 2\] and scenarios"):
        kept_selection(table, argparse.Namespace(**vars(args), scenarios=["random"]))


def test_a_method_failing_at_every_grid_point_is_reported_as_shipped_and_the_rest_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = FakeSteps(tmp_path / "runs", failing={"scrub"})

    def scored(*args: Any) -> Path:
        # SSD's second point scores better than the first: the choice is not a tie's first.
        run_dir = steps(*args)
        summary_path = run_dir / "metrics.json"
        summary = json.loads(summary_path.read_text()) if args[0] == "test" else {"models": {}}
        if "ssd__alpha-50p0" in summary["models"]:
            summary["models"]["ssd__alpha-50p0"]["gap_to_retrain"]["avg_gap"] = 0.05
            summary_path.write_text(json.dumps(summary))
        return run_dir

    monkeypatch.setattr(Harness, "step", lambda self, *args: scored(*args))
    grid = tmp_path / "grid.yaml"
    grid.write_text("scrub:\n  lr: [0.0001, 0.0005]\nssd:\n  alpha: [10.0, 50.0]\n")
    out = tmp_path / "out"
    request = ["--dataset", "digits", "--scenarios", "subclass", "--seeds", "3"]
    selection_args = ["--grid", str(grid), "--select-seeds", "0"]
    places = ["--out", str(out), "--runs-dir", str(tmp_path / "runs")]
    main([*request, "--methods", "scrub", "ssd", *selection_args, *places])
    text = (out / "digits-selection.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # standard JSON: failures are null
    selection = json.loads(text)["selection"]
    assert selection["scrub"]["chosen"] is None
    assert selection["scrub"]["points"]["scrub__lr-0p0001"]["avg_gaps"] == [None]
    assert selection["ssd"]["chosen"] == "ssd__alpha-50p0"
    selection_table = (out / "digits-selection.md").read_text()
    assert "Every grid point failed on at least one selection run for scrub" in selection_table
    report = [(config, args) for _, config, run, args in steps.calls if run.startswith("s3-")]
    scrub_args = next(args for config, args in report if config == "scrub.yaml")
    assert "--model.init_args.lr" not in scrub_args  # the shipped values
    assert next(args for config, args in report if config == "ssd.yaml")[-2:] == [
        "--model.init_args.alpha",
        "50.0",
    ]
    table = json.loads((out / "digits-subclass.json").read_text())["per_seed"][0]
    assert "scrub" in table["failed"]


def test_a_grid_point_is_a_safe_run_name_and_model_overrides(tmp_path: Path) -> None:
    point = {"lr": 0.0005, "early_stop": "off", "train_augmentation": True}
    assert point_name("scrub", point) == "scrub__lr-0p0005__early_stop-off__train_augmentation-true"
    assert point_overrides(point) == [
        "--model.init_args.lr",
        "0.0005",
        "--model.init_args.early_stop",
        "off",
        "--model.init_args.train_augmentation",
        "true",
    ]
    grid = tmp_path / "grid.yaml"
    grid.write_text("scrub:\n  lr: [0.0005, 0.001]\n  epochs: [3, 5]\n")
    assert len(read_grid(grid, METHOD_CONFIGS)["scrub"]) == 4
    grid.write_text("scrubb:\n  lr: [0.001]\n")
    with pytest.raises(ValueError, match="unknown methods"):
        read_grid(grid, METHOD_CONFIGS)
    # A grid's methods that are not benchmarked now are left out: one method's selection runs.
    grid.write_text("scrub:\n  lr: [0.001]\nssd:\n  alpha: [10.0]\n")
    assert list(read_grid(grid, {"ssd": METHOD_CONFIGS["ssd"]})) == ["ssd"]
    grid.write_text("scrub:\n  lr: 0.001\n")
    with pytest.raises(ValueError, match="non-empty value lists"):
        read_grid(grid, METHOD_CONFIGS)


@pytest.mark.parametrize("name", ["digits.yaml", "fashion_mnist.yaml"])
def test_shipped_grids_name_known_methods_and_init_arguments(name: str) -> None:
    grid = read_grid(
        Path(__file__).resolve().parents[1] / "benchmarks/grids" / name, METHOD_CONFIGS
    )
    assert {"finetune", "salun", "scrub", "ps"} <= set(grid)

    def as_run(point: dict, method: type) -> dict:
        # An axis a grid leaves out runs at the method's default, its reference value.
        return {key: point.get(key, init_default(method, key)) for key in ("lr", "epochs")}

    # The reference values are grid points.
    assert {"lr": 0.013, "epochs": 10} in [as_run(p, SalUn) for p in grid["salun"]]
    assert {"lr": 0.0005, "epochs": 3} in [as_run(p, SCRUB) for p in grid["scrub"]]


def _ps_step_dir(configs: Path, runs: Path) -> Path:
    harness = Harness("digits", runs, False, ["--data.init_args.data_dir=data"], configs=configs)
    original = harness.plan("fit", "original.yaml", "s0-original", ["--seed_everything", "0"])
    checkpoint = ["--model.init_args.original_ckpt", str(original.run_dir / "model.ckpt")]
    return harness.plan("fit", "ps.yaml", "s0-ps", checkpoint).run_dir


def test_a_steps_key_is_its_resolved_configuration_wherever_configs_and_runs_lie(
    tmp_path: Path,
) -> None:
    copied = tmp_path / "copied-configs"
    shutil.copytree(REPO / "configs", copied)
    shipped = _ps_step_dir(REPO / "configs", tmp_path / "runs")
    # Another folder of the same configs, another runs folder: the same key.
    assert _ps_step_dir(copied, tmp_path / "elsewhere" / "runs").name == shipped.name
    assert shipped.parent == (tmp_path / "runs" / "digits").resolve()

    # The step's own config file.
    ps = copied / "digits" / "ps.yaml"
    ps.write_text(ps.read_text().replace("lr: 0.03", "lr: 0.05"))
    edited = _ps_step_dir(copied, tmp_path / "runs")
    assert edited.name != shipped.name
    # A file the original's config includes: the original's key, and so (through the
    # original's run folder in its arguments) the method's.
    trainer = copied / "digits" / "train" / "trainer.yaml"
    trainer.write_text(trainer.read_text().replace("max_epochs: 30", "max_epochs: 29"))
    assert _ps_step_dir(copied, tmp_path / "runs").name not in (shipped.name, edited.name)


def test_a_class_default_is_part_of_a_steps_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = _ps_step_dir(REPO / "configs", tmp_path)
    init = PSUnlearnModule.__init__
    names = init.__code__.co_varnames[: init.__code__.co_argcount][-len(init.__defaults__) :]
    defaults = dict(zip(names, init.__defaults__, strict=True))
    assert defaults["top_k"] == 2  # ps.yaml leaves it to the class
    monkeypatch.setattr(init, "__defaults__", tuple({**defaults, "top_k": 3}.values()))
    # Parsers are built once per process, a class's by jsonargparse too: build them anew.
    monkeypatch.setattr("jsonargparse._typehints._cached_class_parsers", {})
    _step_parser.cache_clear()
    try:
        assert _ps_step_dir(REPO / "configs", tmp_path).name != shipped.name
    finally:
        monkeypatch.undo()
        _step_parser.cache_clear()


def _fake_run_step(command: list[str], in_child: bool) -> None:
    """Stands in for a CLI step: writes what a finished step leaves (a checkpoint, or an
    evaluation's metrics.json with made-up numbers for every listed checkpoint)."""
    save_dir = Path(command[command.index("--trainer.logger.init_args.save_dir") + 1])
    run_dir = save_dir / "digits" / command[command.index("--run") + 1]
    if command[0] == "fit":
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints" / "model.ckpt").write_bytes(b"")
        return
    listing = command[command.index("--model.init_args.checkpoints") + 1]
    names = [item.split(":")[0] for item in listing.strip("{}").split(", ")]
    row = {
        "metrics": dict.fromkeys(METRICS, 0.5),
        "gap_to_retrain": {"avg_gap": 0.1, "avg_gap_without_mia": 0.2},
        "timing": {},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(
        json.dumps({"models": dict.fromkeys(names, row), "retrain": "retrain"})
    )


@pytest.fixture
def fake_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Harness steps that write their results instantly."""
    monkeypatch.setattr("ps_lightning.harness.chain.run_step", _fake_run_step)


BENCH = ["--dataset", "digits", "--seeds", "0", "--methods", "naive_ps", "ps"]
TABLES = ["digits-subclass.json", "digits-subclass.md"]


def test_the_harness_writes_its_tables_into_out_and_nothing_elsewhere(
    tmp_path: Path, fake_steps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    main([*BENCH, "--scenarios", "subclass", "--runs-dir", str(runs)])
    # Without --out, beside the runs.
    assert sorted(p.name for p in (runs / "results").iterdir()) == TABLES
    # From another working directory, with the configs named: the tables in --out, the runs
    # folder with its runs alone, and nothing in the working directory or anywhere else.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out, elsewhere = tmp_path / "out", tmp_path / "runs-out"
    places = ["--runs-dir", str(elsewhere), "--configs", str(REPO / "configs")]
    main([*BENCH, "--scenarios", "subclass", *places, "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == TABLES
    assert [p.name for p in elsewhere.iterdir()] == ["digits"]
    assert list(work.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs", "runs-out", "work"]
    # The committed tables are an --out like any other (make bench): no flag of their own.
    with pytest.raises(SystemExit):
        main([*BENCH, *places, "--update-results"])


def test_without_configs_in_the_working_directory_the_harness_says_where_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([*BENCH, "--runs-dir", str(tmp_path / "runs")])
    assert exited.value.code == 2
    assert "no configs folder 'configs': run from the repository root or pass --configs." in (
        capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_each_step_run_says_which_of_all_planned_steps_it_is(
    tmp_path: Path, fake_steps: None, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = ["--runs-dir", str(tmp_path / "runs")]
    main([*BENCH, "--scenarios", "subclass", "random", *runs])
    lines = [line for line in capsys.readouterr().out.splitlines() if " done, " in line]
    # 2 scenarios x (original, retrain, 2 methods, evaluation); the second scenario finds the
    # seed's original model finished and runs no step for it, but counts it as done.
    assert [line.split("]")[0].split()[0] for line in lines] == [
        f"[{done}/10" for done in (0, 1, 2, 3, 4, 6, 7, 8, 9)
    ]
    assert lines[5].endswith("running s0-random-retrain …")
    # A resumed benchmark: every step is found finished, none runs.
    main([*BENCH, "--scenarios", "subclass", "random", *runs])
    assert [line for line in capsys.readouterr().out.splitlines() if " done, " in line] == []


def test_a_grid_with_no_point_for_the_benchmarked_methods_is_refused_before_any_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = tmp_path / "grid.yaml"
    grid.write_text("scrub:\n  lr: [0.001]\n")
    runs = tmp_path / "runs"
    selecting = ["--grid", str(grid), "--select-seeds", "1"]
    with pytest.raises(SystemExit):
        main([*BENCH[:4], "--runs-dir", str(runs), "--methods", "ssd", *selecting])
    assert "has no point for the methods ['ssd']" in capsys.readouterr().err
    assert not runs.exists()


def test_a_config_edit_reruns_the_steps_it_touches_and_records_say_what_ran(
    tmp_path: Path, fake_steps: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    # The configs in a checkout of their own: the records name its commit, not the package's.
    git = ["git", "-C", str(configs), "-c", "user.name=t", "-c", "user.email=t@t"]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "--no-gpg-sign", "-m", "c"]):
        subprocess.run([*git, *command], check=True)
    committed = source_commit(configs)
    assert committed is not None and re.fullmatch("[0-9a-f]{40}", committed)
    assert committed != source_commit(REPO) and source_commit(tmp_path) is None
    bench = [*BENCH, "--scenarios", "subclass", "--runs-dir", str(tmp_path / "runs")]
    bench += ["--configs", str(configs), "--out", str(tmp_path / "results")]
    main(bench)
    capsys.readouterr()
    ps = configs / "digits" / "ps.yaml"
    ps.write_text(ps.read_text().replace("lr: 0.03", "lr: 0.05"))
    main(bench)
    ran = [
        line.split("running ")[1]
        for line in capsys.readouterr().out.splitlines()
        if "running" in line
    ]
    # PS's step, and the evaluation that lists PS's new checkpoint; nothing else.
    assert ran == ["s0-subclass-ps …", "s0-subclass-evaluate …"]

    record = json.loads((tmp_path / "results" / "digits-subclass.json").read_text())
    # The edit is not committed: this run's commit says so, the original's (run before) not.
    assert record["commit"] == source_commit(configs) == f"{committed}-dirty"
    steps = record["per_seed"][0]["steps"]
    harness = Harness("digits", tmp_path / "runs", False, [], configs=configs)
    planned = harness.plan("fit", "original.yaml", "s0-original", ["--seed_everything", "0"])
    assert steps["original"] == {
        "run": planned.run_dir.name,
        "config_digest": planned.digest,
        "commit": committed,
    }
    assert steps["ps"]["commit"] == f"{committed}-dirty"
    assert set(steps) == {"original", "retrain", "naive_ps", "ps", "evaluate"}
    assert all(len(step["config_digest"]) == 64 for step in steps.values())


def test_merge_keeps_the_other_methods_rows_only_beside_the_same_reference_models(
    tmp_path: Path, fake_steps: None
) -> None:
    out = tmp_path / "results"
    bench = [*BENCH[:4], "--scenarios", "random", "--runs-dir", str(tmp_path / "runs")]
    bf16 = "--trainer.precision=bf16-mixed"
    main([*bench, "--methods", "naive_ps", "ssd", "--out", str(out), f"--method-arg=ssd:{bf16}"])
    first = json.loads((out / "digits-random.json").read_text())
    main([*bench, "--methods", "ps", "ssd", "--out", str(out), "--merge"])
    merged = json.loads((out / "digits-random.json").read_text())
    assert list(merged["methods"]) == ["naive_ps", "ps", "ssd"]
    # A method run again takes this run's arguments; a kept row keeps its own.
    assert first["harness"]["method_extra"] == {"ssd": [bf16]}
    assert merged["harness"]["method_extra"] == {}
    main([*bench, "--methods", "ps", "--out", str(out), "--merge", f"--method-arg=ps:{bf16}"])
    merged = json.loads((out / "digits-random.json").read_text())
    assert merged["harness"]["method_extra"] == {"ps": [bf16]}
    main([*bench, "--methods", "ssd", "--out", str(out), "--merge"])
    assert json.loads((out / "digits-random.json").read_text())["harness"]["method_extra"] == {
        "ps": [bf16]
    }
    assert f"ps ran with {bf16} (`--method-arg`)." in (out / "digits-random.md").read_text()
    main([*bench, "--methods", "ps", "ssd", "--out", str(out), "--merge"])
    merged = json.loads((out / "digits-random.json").read_text())
    assert merged["methods"]["naive_ps"] == first["methods"]["naive_ps"]
    record = merged["per_seed"][0]
    assert set(record["models"]) == {"original", "retrain", "naive_ps", "ps", "ssd"}
    assert record["steps"]["naive_ps"] == first["per_seed"][0]["steps"]["naive_ps"]
    # The evaluation step recorded is this run's: it listed this run's methods alone.
    assert record["methods_run"] == ["ps", "ssd"]
    assert "| naive_ps |" in (out / "digits-random.md").read_text()

    # Rows measured against another original model are not merged.
    first["per_seed"][0]["models"]["original"]["metrics"]["test_acc"] = 0.25
    (out / "digits-random.json").write_text(json.dumps(first))
    with pytest.raises(ValueError, match="original model scores otherwise"):
        main([*bench, "--methods", "ps", "--out", str(out), "--merge"])
