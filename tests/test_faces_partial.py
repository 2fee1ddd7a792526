"""``python -m benchmarks faces-partial`` on a tiny Yale B setting (3 identities, 1 epoch): the rows
and their metrics, and that the ``-one`` training set differs from the clean one exactly on the
protected person's images. No statistical claims: one epoch learns next to nothing."""
from __future__ import annotations

import json

import torch
from conftest import require_data

from benchmarks.__main__ import main
from benchmarks.faces_partial import METRICS, protect_only
from recognition.datasets import ImageTensorDataset


def test_protect_only_replaces_exactly_one_identity():
    clean = ImageTensorDataset(torch.zeros(6, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2, 1, 0, 1]),
                               ["a", "b", "c"])
    protected = ImageTensorDataset(torch.full((6, 1, 4, 4), 9, dtype=torch.uint8), clean.labels, clean.classes)
    mixed = protect_only(clean, protected, 1)
    changed = (mixed.images != clean.images).flatten(1).any(1)
    assert changed.tolist() == [False, True, False, True, False, True]
    assert torch.equal(mixed.labels, clean.labels) and mixed.classes == clean.classes
    assert not clean.images.any()  # the clean set is left as it was


def test_tiny_run_writes_every_training_set_with_its_metrics(tmp_path, monkeypatch):
    require_data("yaleb_cropped.npz")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    argv = ["faces-partial", "--identities", "3", "--seeds", "2", "--set", "victim_epochs=1", "surrogate_epochs=1",
            "orl_pairs=0", "--out", str(tmp_path)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "faces-partial-synthetic.json").read_text())
    assert result["command"] == "python -m benchmarks " + " ".join(argv)
    rows = {row["method"]: row for row in result["rows"]}
    assert set(rows) == {"clean", "synthetic-one", "synthetic-all"}
    for row in rows.values():
        assert row["seeds"] == [2] and all(0 <= row[m] <= 100 for m in METRICS)
        assert [run["identity"] for run in row["runs"]] == [rows["clean"]["runs"][0]["identity"]]
    assert rows["synthetic-one"]["eps"] == 16 and rows["clean"]["eps"] == 0
    assert "| synthetic-one | 16 | 2 |" in (tmp_path / "faces-partial-synthetic.md").read_text()
