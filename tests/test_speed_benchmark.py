"""`python -m benchmarks speed` writes the documented results format with sane numbers."""
import json

from benchmarks.__main__ import main
from faceguard.registry import BACKENDS


def test_speed_benchmark_writes_rows_for_each_backend(tmp_path):
    out = tmp_path / "speed"
    assert main(["speed", "--models", "cifar-resnet18", "--backends", "fd-frozen", "fd-frozen-lag", "--width", "0.125",
                 "--batch-size", "4", "--repeats", "1", "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["command"].startswith("python -m benchmarks speed")
    assert result["default_backend"] in BACKENDS
    rows = {row["backend"]: row for row in result["rows"]}
    assert set(rows) == {"double", "fd-frozen", "fd-frozen-lag"}
    for row in rows.values():
        assert {"model", "backend", "ratio_to_floor", "seconds_per_step", "peak_mb", "cosine",
                "sign_agreement"} <= set(row)
        # a ratio, not a timing claim: on a loaded machine a 4-image floor can take longer than a step
        assert row["ratio_to_floor"] > 0 and row["seconds_per_step"] > 0 and row["peak_mb"] >= 0
    assert rows["double"]["cosine"] > 0.9999 and rows["double"]["sign_agreement"] == 1.0
    assert rows["fd-frozen"]["cosine"] >= 0.999 and rows["fd-frozen"]["sign_agreement"] >= 0.99
    # a G from a random start in the ε-ball: close to, but not, the exact gradient
    assert 0.9 <= rows["fd-frozen-lag"]["cosine"] < 0.99999
    assert "| cifar-resnet18 | fd-frozen |" in out.with_suffix(".md").read_text()


def test_protect_speed_splits_the_time_of_protecting_a_folder(tmp_path):
    """`protect-speed` protects copies of the bundle's photos in its scratch folder, removes them,
    and writes one row whose stages add up to the total."""
    out, work = tmp_path / "results", tmp_path / "work"
    assert main(["protect-speed", "--photos", "2", "--method", "alignment", "--steps", "3", "--work", str(work),
                 "--out", str(out)]) == 0
    result = json.loads((out / "protect-speed-s3.json").read_text())
    assert result["config"]["steps"] == 3
    row, = result["rows"]
    assert row["photos"] == 2 and row["faces"] >= 2 and row["errors"] == 0 and result["config"]["processes"] == 1
    stages = sum(row[f"seconds_{s}_per_photo"] for s in ("detect", "craft", "measure_saved", "visibility", "other"))
    assert abs(stages - row["seconds_per_photo"]) <= 0.003 + 1e-9  # six numbers, each rounded to 1 ms
    assert row["seconds_craft_per_photo"] > 0 and row["seconds_visibility_per_photo"] > 0 and not work.exists()
    assert 100 < row["peak_rss_mb"] < 64 * 1024  # this process's peak, in MB (torch alone takes more than 100)
    assert "| total (wall) |" in (out / "protect-speed-s3.md").read_text()


def test_protect_speed_report_shares_process_seconds_among_several_processes():
    """Under torchrun the stages are process-seconds: their shares are of wall time × processes."""
    from benchmarks.protect_speed import markdown_report

    row = {"photos": 10, "faces": 12, "seconds_total": 70.0, "seconds_per_photo": 7.0, "seconds_detect_per_photo": 0.7,
           "seconds_craft_per_photo": 12.6, "seconds_measure_saved_per_photo": 0.0, "seconds_other_per_photo": 0.7}
    config = {"method": "evade", "strength": "mid", "steps": 40, "eps": 16, "ensemble": ["sface"], "processes": 2,
              "threads": 1, "device": "cpu"}
    text = markdown_report({"config": config, "command": "torchrun ...", "rows": [row]})
    assert "| craft | 12.600 | 90 % |" in text and "| detect | 0.700 | 5 % |" in text
    assert "2 processes" in text and "| total (wall) | 7.000 | – |" in text
    assert "--method evade --strength mid defaults, 40 steps, ensemble sface" in text


def test_memory_of_protect_is_measured_per_corpus_size(tmp_path):
    """`memory --command protect` protects cycled bundle photos in a fresh process per size and
    reports each one's peak resident memory."""
    out = tmp_path / "results"
    assert main(["memory", "--command", "protect", "--sizes", "1", "2", "--steps", "1", "--out", str(out)]) == 0
    result = json.loads((out / "memory-protect.json").read_text())
    assert [row["images"] for row in result["rows"]] == [1, 2]
    assert all(200 < row["peak_rss_mb"] < 64 * 1024 and row["seconds"] > 0 for row in result["rows"])
    assert result["config"]["command"] == "protect"
    assert "| photos | peak RSS (MB) |" in (out / "memory-protect.md").read_text()
