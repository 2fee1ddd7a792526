"""benchmarks.crafting_costs: per-member timings and the bf16 gradient check, on a tiny network."""
import torch
from torch import nn

from benchmarks.crafting_costs import markdown_report, member_rows
from faceguard.protect.evasion import Member, arcface_view


def _tiny_member() -> Member:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 16 * 16, 4)).eval()
    return Member("tiny", network, arcface_view(16))


def test_member_rows_time_every_variant_and_compare_the_bf16_gradient():
    rows = member_rows([_tiny_member()], torch.device("cpu"), repeats=2, compile_too=False)
    (row,) = rows
    assert row["member"] == "tiny" and row["view"] == 16
    assert row["ms_fp32"] > 0 and row["ms_bf16"] > 0
    # bf16 keeps 8 bits of mantissa: the input gradient of a 2-layer net keeps most signs, not all
    assert 0.5 < row["bf16_sign_agreement"] <= 1 and 0.9 < row["bf16_gradient_cosine"] <= 1.0001
    config = {"device": "cpu", "threads": 1, "repeats": 2, "steps": 33,
              "split": {"photos": 1, "faces": 2, "craft_seconds_per_face": 1.0, "craft_ms_per_face_step": 30.3}}
    text = markdown_report({"config": config, "command": "python -m benchmarks crafting-costs", "rows": rows})
    assert "| tiny | 16² |" in text and "30.3 ms per face-step" in text and "compiled" not in text
