"""python -m benchmarks frontier: points per protection and ε from recognizers results files, seeds joined."""
from __future__ import annotations

import json

import numpy as np

from benchmarks.__main__ import main
from benchmarks.frontier import collect


def _results(path, method_values: dict) -> None:
    rows = []
    for (method, eps), (ratio, match) in method_values.items():
        rows.append({"method": method, "eps": eps, "threat_model": "quality", "metric": "ratio_jpeg75_face_median",
                     "recognizer": "none", "defense": "none", "value": ratio})
        for defense, value in (("none", match), ("jpeg75", 0.9)):
            rows.append({"method": method, "eps": eps, "threat_model": "gallery", "metric": "match_rate",
                         "recognizer": "dlib-resnet", "defense": defense, "value": value})
    path.write_text(json.dumps({"config": {}, "command": f"python -m benchmarks recognizers --name {path.stem}",
                                "rows": rows}))


def test_seeds_of_a_label_are_one_point_and_the_plot_is_written(tmp_path):
    _results(tmp_path / "a.json", {("evade-x", 16): (2.0, 0.10), ("evade-x-seed1", 16): (2.4, 0.20),
                                   ("clean", 0): (None, 0.99)})
    _results(tmp_path / "b.json", {("evade-x-seed2", 16): (2.2, 0.30), ("evade-x", 8): (1.1, 0.6)})
    points = collect([tmp_path / "a.json", tmp_path / "b.json"], "match_rate", "none")
    assert sorted(points) == [("evade-x", 8), ("evade-x", 16)]  # clean has no visibility row
    assert sorted(points[("evade-x", 16)]["ratio"]) == [2.0, 2.2, 2.4]
    assert sorted(points[("evade-x", 16)]["dlib-resnet"]) == [0.1, 0.2, 0.3]
    out = tmp_path / "out"
    assert main(["frontier", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    text = (out / "frontier.md").read_text()
    assert (out / "frontier.png").stat().st_size > 0
    assert "| evade-x | 16 | 3 | 2.20 (2.00–2.40) | 0.20 (0.10–0.30) |" in text
    assert "python -m benchmarks recognizers --name b" in text
    assert "the least visible point here, `evade-x` at ε = 8, is 1.10×." in text


def test_equal_seeds_plot_without_negative_error_bars(tmp_path):
    # three equal floats whose mean lands an ulp above them: matplotlib refuses a negative bar length
    value = 0.09
    assert np.asarray([value] * 3).mean() > value
    _results(tmp_path / "a.json", {("evade-x", 16): (2.0, value), ("evade-x-seed1", 16): (2.1, value),
                                   ("evade-x-seed2", 16): (2.2, value)})
    assert main(["frontier", str(tmp_path / "a.json"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "frontier.png").stat().st_size > 0
