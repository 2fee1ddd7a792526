"""benchmarks.crafting_levers: its patched variants on two real photos, and its pure helpers."""
import json

import pytest

from benchmarks.crafting_levers import GOALS, first_past_goals, parse_goals
from tests.conftest import require_data


def test_parse_goals_overrides_the_defaults_and_refuses_unknown_members():
    assert parse_goals(["sface=0.2"]) == {**GOALS, "sface": 0.2}
    with pytest.raises(SystemExit, match="MEMBER=COSINE"):
        parse_goals(["edgeface-s=0.3"])
    with pytest.raises(SystemExit, match="MEMBER=COSINE"):
        parse_goals(["sface"])


def test_first_past_goals_is_the_first_step_with_every_member_below_its_goal():
    # steps x members x faces: face 0 passes both goals at step 1, face 1 only member 0's, ever
    trace = [[[0.9, 0.1], [0.9, 0.9]], [[0.1, 0.1], [0.2, 0.9]], [[0.9, 0.1], [0.1, 0.9]]]
    assert first_past_goals(trace, [0.5, 0.5]) == [1, None]
    assert first_past_goals([], [0.5]) == []


def test_variants_stop_skip_sface_and_leave_base_and_the_engine_as_shipped(tmp_path):
    from benchmarks.__main__ import main
    from faceguard.attacks.base import PGDAttack
    from faceguard.attacks.evasion import EmbeddingAttack
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.manifest import read_manifest
    from faceguard.protect.protector import Protector

    require_data("realfaces")
    shipped = (PGDAttack._descend, EmbeddingAttack.step_gradient, EmbeddingAttack.objective)
    work, out = tmp_path / "work", tmp_path / "results"
    # goals every cosine is below: early-stop crafts one step per photo, then stops
    assert main(["crafting-levers", "--people", "sundar", "marissa", "--steps", "3", "--work", str(work),
                 "--out", str(out), "--goals", *(f"{name}=2" for name in GOALS)]) == 0
    assert (PGDAttack._descend, EmbeddingAttack.step_gradient, EmbeddingAttack.objective) == shipped
    rows = {row["variant"]: row for row in json.loads((out / "crafting-levers.json").read_text())["rows"]}
    assert rows["base"]["photos"] == 2 and rows["base"]["steps_per_photo"] == 3
    assert rows["base"]["passes_per_photo"] == {"profile": 3, "dlib-resnet": 3, "sface": 3}
    assert rows["early-stop"]["steps_per_photo"] == 1
    assert rows["sface-every-2"]["passes_per_photo"] == {"profile": 3, "dlib-resnet": 3, "sface": 2}  # steps 0, 2
    # the base variant only records: the product alone saves the same losses
    protect_folder(work / "released", Protector(method="evade", eps=16, device="cpu", steps=3),
                   FolderOptions(out=tmp_path / "product", progress=False, visibility=False))

    def saved(folder):
        return {rel: [face["loss_saved"] for face in entry["face_details"]]
                for rel, entry in read_manifest(folder)["files"].items()}

    assert saved(tmp_path / "product") == saved(work / "base")
    assert "| sface-every-2 | 3.0 |" in (out / "crafting-levers.md").read_text()
