"""``faceguard protect --method error-minimizing-classwise``: one perturbation per person, learned
over the whole folder, pasted through the photo warp; saved with the outputs so a resumed run pastes
the same noise, and learned again when the folder changes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from test_protect_support import build_tiny_profile, copy_photos, one_thread  # noqa: F401 (autouse)

METHOD = "error-minimizing-classwise"
PEOPLE = ("kit_harington/john1.jpg", "kit_harington/john2.jpg", "obama/obama1.jpg", "obama/obama2.jpg",
          "group/kit_with_rose.jpg")


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return build_tiny_profile(tmp_path_factory.mktemp("profile"))


def _protect(src, out, profile_path, *extra) -> int:
    from faceguard.cli import main

    return main(["protect", str(src), "--method", METHOD, "--out", str(out), "--profile", str(profile_path),
                 "--format", "png", "--device", "cpu", "--quiet", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory, profile_path):
    src = copy_photos(tmp_path_factory.mktemp("in") / "photos", PEOPLE)
    out = src.parent / "out"
    return src, out, _protect(src, out, profile_path)


def test_every_face_gets_its_persons_noise_within_eps(run, profile_path):
    from faceguard.protect.identity_noise import NOISE_FILE, IdentityNoise
    from faceguard.profile.store import load_profile

    src, out, code = run
    assert code == 0
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {e["status"] for e in files.values()} == {"protected"} and len(files) == len(PEOPLE)
    for rel, entry in files.items():
        original = np.asarray(Image.open(src / rel).convert("RGB")).astype(int)
        saved = np.asarray(Image.open(out / entry["output"])).astype(int)
        assert 0 < np.abs(saved - original).max() <= 16 == entry["eps"]
        # the classifier trained alongside the noise knows each protected face by its shortcut
        assert entry["loss"]["saved"] < 0.5 * max(entry["loss"]["clean"], 0.2), (rel, entry["loss"])
        assert {d["identity"] for d in entry["face_details"]} == {rel.split("/")[0]}
    noise = IdentityNoise.load(out / NOISE_FILE, load_profile(profile_path, "cpu").backbone, "cpu")
    assert noise.names == ["group", "kit_harington", "obama"]
    assert noise.noise.abs().max() <= 16 / 255 + 1e-6 and noise.noise.abs().max() > 8 / 255
    rows = noise.noise.flatten(1)
    assert not torch_equal_any(rows), "two people got the same noise"


def torch_equal_any(rows) -> bool:
    return any(bool((rows[i] == rows[j]).all()) for i in range(len(rows)) for j in range(i + 1, len(rows)))


def test_a_resumed_run_pastes_the_same_noise(run, profile_path):
    from faceguard.protect.identity_noise import NOISE_FILE, IdentityNoise

    src, out, _ = run
    noise_bytes = (out / NOISE_FILE).read_bytes()
    first = (out / "obama/obama1.png").read_bytes()
    (out / "obama/obama1.png").unlink()
    assert _protect(src, out, profile_path) == 0
    assert (out / "obama/obama1.png").read_bytes() == first  # the stored noise, not a new one
    assert (out / NOISE_FILE).read_bytes() == noise_bytes
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    assert _protect(src, out, profile_path) == 0  # nothing left to do
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == before
    (out / NOISE_FILE).write_bytes(b"not a safetensors file")  # damaged: learned again and replaced
    (out / "obama/obama1.png").unlink()
    assert _protect(src, out, profile_path) == 0
    assert (out / "obama/obama1.png").exists() and IdentityNoise.stored_meta(out / NOISE_FILE) is not None


def test_a_changed_folder_protects_everything_again(tmp_path, profile_path):
    from faceguard.protect.identity_noise import NOISE_FILE

    src = copy_photos(tmp_path / "photos", PEOPLE[:4])
    out = tmp_path / "out"
    assert _protect(src, out, profile_path, "--steps", "3") == 0
    noise_bytes = (out / NOISE_FILE).read_bytes()
    copy_photos(src, ("obama/obama3.jpg",))
    assert _protect(src, out, profile_path, "--steps", "3") == 0
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert len(files) == 5 and {e["status"] for e in files.values()} == {"protected"}
    assert (out / NOISE_FILE).read_bytes() != noise_bytes


def test_one_person_or_one_photo_is_refused_with_the_reason(tmp_path, profile_path, capsys):
    from faceguard.protect.protector import Protector

    src = copy_photos(tmp_path / "photos", PEOPLE[:2])
    assert _protect(src, tmp_path / "out", profile_path) != 0
    assert "at least two people" in capsys.readouterr().err
    protector = Protector(profile_path, method=METHOD, device="cpu")
    with pytest.raises(ValueError, match="whole folder"):
        protector.protect(Image.open(src / PEOPLE[0]))


def test_pre_cropped_faces_of_two_people(tmp_path, profile_path):
    """Gray crops learn gray noise (colour noise averaged over channels would mostly cancel)."""
    from conftest import require_data
    from faceguard.protect.identity_noise import NOISE_FILE, IdentityNoise

    with np.load(require_data("yaleb_cropped.npz"), allow_pickle=False) as data:
        faces = data["images"][[0, 1, 70, 71]]  # two photos each of two people
    for k, face in enumerate(faces):
        (tmp_path / "crops" / f"p{k // 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).save(tmp_path / "crops" / f"p{k // 2}" / f"{k}.png")
    assert _protect(tmp_path / "crops", tmp_path / "out", profile_path, "--aligned") == 0
    files = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert {e["status"] for e in files.values()} == {"protected"}
    # gray Δ reaches the saved crops; on 4 faces the fresh classifier soon fits one person's clean faces,
    # and noise that starts at zero then stops moving for them (docs/protect.md says so)
    assert max(e["linf"] for e in files.values()) >= 2 and all(e["linf"] <= 16 for e in files.values())
    noise = IdentityNoise.stored_meta(tmp_path / "out" / NOISE_FILE)
    assert noise is not None and noise["settings"]["aligned"] is True


def test_synthetic_patterns_per_person_pasted_and_named_in_the_saved_photos(tmp_path, profile_path):
    """``--method synthetic``: each person's block pattern times ε, drawn from the seed and the
    number of people (nothing trained); the saved faces carry it (the pattern classifier names
    them: its cross-entropy measured at most 0.009 on every saved face, 1.9 on average over the
    clean ones, where a face may match some pattern by chance), and a resumed run reloads it."""
    import torch

    from faceguard.attacks.synthetic import block_patterns
    from faceguard.cli import main
    from faceguard.profile.store import load_profile
    from faceguard.protect.identity_noise import NOISE_FILE, IdentityNoise

    src = copy_photos(tmp_path / "photos", PEOPLE)
    out = tmp_path / "out"
    args = ["protect", str(src), "--method", "synthetic", "--out", str(out), "--profile", str(profile_path),
            "--format", "png", "--device", "cpu", "--quiet"]
    assert main(args) == 0
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert {e["status"] for e in files.values()} == {"protected"}
    for rel, entry in files.items():
        original = np.asarray(Image.open(src / rel).convert("RGB")).astype(int)
        saved = np.asarray(Image.open(out / entry["output"])).astype(int)
        assert 0 < np.abs(saved - original).max() <= 16
        assert entry["loss"]["saved"] < 0.1, (rel, entry["loss"])
    assert np.mean([e["loss"]["clean"] for e in files.values()]) > 1
    noise = IdentityNoise.load(out / NOISE_FILE, load_profile(profile_path, "cpu").backbone, "cpu")
    size = noise.noise.shape[-1]
    expected = block_patterns(3, 3, (size, size), torch.Generator().manual_seed(0)) * 16 / 255
    assert noise.names == ["group", "kit_harington", "obama"] and torch.allclose(noise.noise, expected)
    first = (out / "obama/obama1.png").read_bytes()
    (out / "obama/obama1.png").unlink()
    assert main(args) == 0
    assert (out / "obama/obama1.png").read_bytes() == first
