"""Verification: .bin reading (restricted unpickler) and writing, pairs lists, 10-fold metrics."""
from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch
from conftest import require_data
from torch import nn

from recognition.verification import best_threshold, evaluate_pair_set, pair_scores, verification_metrics
from recognition.verification_bin import PairSet, encode_image, read_bin, read_pairs_list, sample_pairs, write_bin


@pytest.fixture(scope="module")
def orl():
    with np.load(require_data("orl_faces.npz"), allow_pickle=False) as data:
        return data["images"], data["labels"]


@pytest.fixture(scope="module")
def orl_pairs(orl):
    images, labels = orl
    return [(images[i], images[j], same) for i, j, same in sample_pairs(labels, 60, 60, seed=1)]


def test_bin_round_trip_on_real_orl_faces(tmp_path, orl, orl_pairs) -> None:
    path = write_bin(tmp_path / "orl.bin", orl_pairs)
    pairs = read_bin(path)
    assert pairs.name == "orl" and len(pairs.images) == 240
    np.testing.assert_array_equal(pairs.issame, [same for _, _, same in orl_pairs])
    decoded = pairs.decode(None, channels=1)  # PNG is lossless: the exact original pixels
    np.testing.assert_array_equal(decoded[0::2, 0], np.stack([a for a, _, _ in orl_pairs]))
    np.testing.assert_array_equal(decoded[1::2, 0], np.stack([b for _, b, _ in orl_pairs]))
    assert pairs.decode(32, channels=3).shape == (240, 3, 32, 32)
    # the file is the insightface layout: a plain pickle of (list of bytes, list of bool)
    bins, issame = pickle.loads(path.read_bytes())
    assert all(isinstance(b, bytes) for b in bins) and all(type(s) is bool for s in issame)


def test_reads_python2_pickles_as_written_by_insightface(tmp_path, orl_pairs) -> None:
    """Python 2 pickled the encoded images as ``str`` (BINSTRING opcodes), flags as NEWTRUE/NEWFALSE."""
    source = read_bin(write_bin(tmp_path / "a.bin", orl_pairs[:10] + orl_pairs[-10:]))
    body = b"".join(b"T" + struct.pack("<I", len(b)) + b for b in source.images)
    flags = b"".join(b"\x88" if s else b"\x89" for s in source.issame)
    (tmp_path / "py2.bin").write_bytes(b"\x80\x02](" + body + b"e](" + flags + b"e\x86.")
    pairs = read_bin(tmp_path / "py2.bin")
    assert pairs.images == source.images
    np.testing.assert_array_equal(pairs.issame, source.issame)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_malicious_bin_is_refused_without_running_code(tmp_path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (0, 2, 4, 5):
        path = tmp_path / f"evil{protocol}.bin"
        path.write_bytes(pickle.dumps(([b"x", b"y"], [_Exploit(marker)]), protocol=protocol))
        with pytest.raises(ValueError, match=rf"evil{protocol}\.bin.*refusing global"):
            read_bin(path)
    assert not marker.exists()
    # sanity check of the exploit itself: the standard unpickler does run it
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


def test_refuses_numpy_objects_and_malformed_content(tmp_path) -> None:
    cases = {
        "numpy.bin": ([b"a", b"b"], [np.bool_(True)]),  # needs numpy's reconstructor: a global
        "py3proto2.bin": ([b"a", b"b"], [True]),  # bytes pickled by Python 3 at protocol 2: _codecs.encode
        "shape.bin": [b"a", b"b", b"c"],
        "odd.bin": ([b"a", b"b", b"c"], [True]),
        "flags.bin": ([b"a", b"b"], [1]),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(pickle.dumps(content, protocol=2 if name == "py3proto2.bin" else 4))
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_bin(tmp_path / name)
    (tmp_path / "truncated.bin").write_bytes(pickle.dumps(([b"a"], [True]), protocol=4)[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_bin(tmp_path / "truncated.bin")


def test_pairs_list_and_image_folder(tmp_path, orl_pairs) -> None:
    from PIL import Image

    (tmp_path / "faces" / "p").mkdir(parents=True)
    lines = ["# image A, image B, same"]
    for k, (a, b, same) in enumerate(orl_pairs[:10] + orl_pairs[-10:]):
        Image.fromarray(a).save(tmp_path / "faces" / "p" / f"{k}a.png")
        Image.fromarray(b).save(tmp_path / "faces" / "p" / f"{k}b.png")
        lines.append(f"p/{k}a.png p/{k}b.png {int(same)}")
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n\n")
    pairs = read_pairs_list(tmp_path / "pairs.txt", tmp_path / "faces")
    np.testing.assert_array_equal(pairs.issame, [True] * 10 + [False] * 10)
    np.testing.assert_array_equal(pairs.decode(None, 1)[0, 0], orl_pairs[0][0])
    (tmp_path / "bad.txt").write_text("p/0a.png ../pairs.txt 1\n")
    with pytest.raises(ValueError, match=r"bad\.txt line 1: \.\./pairs\.txt is not a file under"):
        read_pairs_list(tmp_path / "bad.txt", tmp_path / "faces")
    (tmp_path / "bad2.txt").write_text("p/0a.png p/0b.png yes\n")
    with pytest.raises(ValueError, match=r"bad2\.txt line 1"):
        read_pairs_list(tmp_path / "bad2.txt", tmp_path / "faces")


def test_sample_pairs_are_distinct_and_labelled(orl) -> None:
    _, labels = orl
    pairs = sample_pairs(labels, 50, 70, seed=3)
    assert len(set((i, j) for i, j, _ in pairs)) == 120
    assert all(i != j and (labels[i] == labels[j]) == same for i, j, same in pairs)
    assert sum(same for *_, same in pairs) == 50
    assert pairs == sample_pairs(labels, 50, 70, seed=3) != sample_pairs(labels, 50, 70, seed=4)


def brute_force_ten_fold(scores: np.ndarray, issame: np.ndarray) -> float:
    """Reference: for each of 10 consecutive folds try every midpoint between sorted scores of
    the other folds (and ±inf) as the threshold (ties: lowest), apply the best to the fold."""
    folds = np.array_split(np.arange(len(scores)), 10)
    accuracies = []
    for fold in folds:
        train = np.setdiff1d(np.arange(len(scores)), fold)
        distinct = sorted(set(scores[train]))
        grid = [-np.inf] + [(a + b) / 2 for a, b in zip(distinct, distinct[1:])] + [np.inf]
        train_acc = [np.mean((scores[train] >= t) == issame[train]) for t in grid]
        threshold = grid[int(np.argmax(train_acc))]
        accuracies.append(np.mean((scores[fold] >= threshold) == issame[fold]))
    return 100 * float(np.mean(accuracies))


def test_ten_fold_accuracy_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    issame = rng.random(613) < 0.5
    scores = np.where(issame, rng.normal(0.5, 0.2, 613), rng.normal(0.2, 0.2, 613)).round(3)  # with ties
    result = verification_metrics(scores, issame)
    assert result.accuracy == pytest.approx(brute_force_ten_fold(scores, issame), abs=1e-9)
    assert 65 < result.accuracy < 85 and 0.7 < result.auc < 0.9 and 0 <= result.tar_at_far < 0.1
    separable = verification_metrics(np.where(issame, 1.0, 0.0) + 0.01 * rng.random(613), issame)
    assert separable.accuracy == 100 and separable.auc == 1 and separable.tar_at_far == 1
    assert best_threshold(np.array([0.1, 0.2, 0.9]), np.array([False, False, True])) == (0.55, 1.0)
    with pytest.raises(ValueError, match="both"):
        verification_metrics(scores, np.ones(613, bool))


class _Pixels(nn.Module):
    """Raw pixels as the 'embedding' (one fixed unit scale as its only weight): a known backbone."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * (x.flatten(1) - 0.5)


def test_evaluate_pair_set_with_flip_fusion(orl_pairs) -> None:
    encoded = [encode_image(image) for a, b, _ in orl_pairs for image in (a, b)]
    pairs = PairSet("orl", encoded, np.array([same for *_, same in orl_pairs]))
    plain = evaluate_pair_set(_Pixels(), pairs, size=32, channels=1)
    fused = evaluate_pair_set(_Pixels(), pairs, size=32, channels=1, flip=True)
    images = torch.from_numpy(pairs.decode(32, 1)).float() / 255
    manual = torch.nn.functional.normalize(images.flatten(1) - 0.5 + images.flip(-1).flatten(1) - 0.5, dim=1)
    assert fused.accuracy == pytest.approx(verification_metrics(pair_scores(manual), pairs.issame).accuracy)
    assert plain.accuracy > 60 and fused.accuracy > 60  # raw ORL pixels carry identity
