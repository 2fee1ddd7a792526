"""Protection profiles: fit writes tensors + JSON that load back without code execution, the stored
target gradient is the surrogate's reverse-CE gradient, and malformed profiles are refused."""
from __future__ import annotations

import json

import pytest
import torch

from test_protect_support import build_tiny_profile, one_thread, require_data  # noqa: F401 (autouse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_profile(tmp_path_factory.mktemp("profile"))


def test_profile_round_trip_and_target_gradient(tiny):
    from faceguard.gradients import target_gradient
    from faceguard.losses import make_loss
    from faceguard.profile.store import load_profile
    from recognition.files import file_sha256
    from faceguard.profile.fit import FitSettings, load_corpus

    profile = load_profile(tiny)
    config = json.loads(tiny.with_suffix(".json").read_text())
    assert config["format"] == "faceguard-profile" and config["input_size"] == 32
    assert len(profile.classes) == 39 and profile.head.weight.shape[0] == 39
    (source,) = config["provenance"]["corpus"]
    assert source["sha256"] == file_sha256(require_data("orl_faces.npz")) and source["faces"] == 390
    assert config["provenance"]["command"] == "test" and profile.sha256 == file_sha256(tiny)
    # T is the reverse-CE gradient of the loaded surrogate over its own training crops
    dataset, _ = load_corpus([require_data("orl_faces.npz")], FitSettings(size=32, aligned=True))
    recomputed = target_gradient(profile.model, dataset, params=profile.target_params(),
                                 loss_fn=make_loss("rce", label_in_forward=True))
    assert len(recomputed) == len(profile.target)
    for stored, fresh in zip(profile.target, recomputed):
        torch.testing.assert_close(stored, fresh, rtol=1e-3, atol=1e-5)
    assert sum(float(t.abs().sum()) for t in profile.target) > 0


def test_malformed_profiles_are_refused(tiny, tmp_path):
    from faceguard.profile.store import load_profile

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(tiny.read_bytes())
    config = json.loads(tiny.with_suffix(".json").read_text())
    broken.with_suffix(".json").write_text(json.dumps({**config, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a faceguard-profile"):
        load_profile(broken)
    with pytest.raises(FileNotFoundError, match="needs both"):
        load_profile(tmp_path / "missing.safetensors")


def test_default_profile_is_shipped_small_and_loads():
    from faceguard.profile.store import DEFAULT_PROFILE, load_profile

    assert DEFAULT_PROFILE.stat().st_size <= 25 * 2**20
    profile = load_profile()
    assert profile.input_size == 64 and len(profile.classes) >= 70
    assert "faceguard fit" in profile.config["provenance"]["command"]
