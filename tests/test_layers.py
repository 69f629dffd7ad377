"""The package's imports run one way, down (docs/design.md §9): a room imports only rooms on
lower floors, so there is no cycle and no import back up. Read from the source (imports inside
functions included), so a lazy import cannot hide an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ps_lightning"

# Floors from the bottom; a room is a top-level module or subpackage of `ps_lightning`.
FLOORS = (
    ("files", "distributed", "splits", "metrics", "run_folder", "presets"),
    ("timing",),
    ("console",),
    ("data",),
    ("models",),
    ("unlearning", "evaluation"),
    ("prototype_surgery",),
    ("step_checks", "result_accuracy"),
    ("steps", "api"),
    ("harness", "__init__"),
    ("cli",),
)
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def _room(path: Path, package: Path = PACKAGE) -> str:
    relative = path.relative_to(package)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            parts = name.split(".")
            if parts[0] == "ps_lightning" and len(parts) > 1:
                rooms.add(parts[1])
    return rooms


def arrows_not_down(package: Path = PACKAGE) -> list[str]:
    """Every import from one room into another that is not on a lower floor."""
    wrong = []
    for path in sorted(package.rglob("*.py")):
        room = _room(path, package)
        for target in sorted(_imported_rooms(path) - {room}):
            if FLOOR[target] >= FLOOR[room]:
                wrong.append(f"{path.relative_to(package)} ({room}) imports {target}")
    return wrong


def test_every_room_of_the_package_has_a_floor() -> None:
    rooms = {_room(path) for path in PACKAGE.rglob("*.py")}
    assert rooms == set(FLOOR), "give each new module a floor in FLOORS"


def test_imports_run_only_down() -> None:
    assert arrows_not_down() == []


def test_an_import_back_up_is_found(tmp_path: Path) -> None:
    # The arrow this renovation removed: the table printer asking PS for its sentence.
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "report.py").write_text(
        "def note():\n    from ps_lightning.prototype_surgery.early_stop import x\n"
    )
    assert arrows_not_down(tmp_path) == [
        "evaluation/report.py (evaluation) imports prototype_surgery"
    ]
