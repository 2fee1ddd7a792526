"""``faceguard poison``: dataset-level protection of an ImageFolder / CIFAR tree on disk."""
from __future__ import annotations

import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceguard.cli import main
from faceguard.attacks import build_attack
from faceguard.poison.craft import craft_batch
from faceguard.settings import CraftSettings
from faceguard.poison.folder import STATE_DIR, FolderImages, FolderIndex, PoisonJob, poison_folder
from faceguard.poison.surrogate import load_surrogate
from recognition.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def cifar_tree(cifar_tar, tmp_path_factory) -> Path:
    """A CIFAR JPEG tree (train/<class>/*.jpg, test/...) with 3 classes × 4 real images."""
    root = tmp_path_factory.mktemp("cifar-tree")
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(cifar_tar) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or parts[1] not in ("airplane", "cat", "ship"):
                continue
            key = (parts[0], parts[1])
            if counts.get(key, 0) >= 4:
                continue
            counts[key] = counts.get(key, 0) + 1
            target = root.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            if len(counts) == 6 and all(v >= 4 for v in counts.values()):
                break
    return root


@pytest.fixture(scope="module")
def surrogate_file(tmp_path_factory) -> Path:
    from recognition.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, width=0.125)
    path = tmp_path_factory.mktemp("surrogate") / "surrogate.safetensors"
    save_checkpoint(model, path, {"model": "resnet18", "num_classes": 3, "width": 0.125})
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_poison_cli_writes_the_tree_within_eps_and_resumes(cifar_tree, surrogate_file, tmp_path):
    out = tmp_path / "out"
    argv = [str(cifar_tree), "--eps", "8", "--out", str(out), "--surrogate", str(surrogate_file), "--steps", "3",
            "--restarts", "1", "--batch-size", "5", "--chunk-size", "7", "--method", "alignment", "--quiet",
            "--backend", "fd-frozen"]
    assert main(["poison", *argv]) == 0
    index = FolderIndex.scan(cifar_tree / "train")
    assert len(index.files) == 12 and index.classes == ["airplane", "cat", "ship"]
    for rel in index.files:
        protected = out / rel.with_suffix(".png")
        diff = np.abs(_pixels(protected) - _pixels(cifar_tree / "train" / rel))
        assert diff.max() <= 8 and diff.max() >= 4, rel       # within ε and actually perturbed
    chunks = sorted((out / STATE_DIR).glob("chunk-*.json"))
    assert len(chunks) == 2                                    # 12 images in chunks of 7
    # Resume after losing one output of the second chunk: only that batch is redone, identically.
    outputs = [out / rel.with_suffix(".png") for rel in index.files]
    before = [p.read_bytes() for p in outputs]
    first_chunk = {p: p.stat().st_mtime_ns for p in outputs[:7]}
    outputs[-1].unlink()
    chunks[1].unlink()
    assert main(["poison", *argv]) == 0
    assert [p.read_bytes() for p in outputs] == before
    assert all(p.stat().st_mtime_ns == t for p, t in first_chunk.items())
    # Other settings into the same folder are refused.
    assert main(["poison", *argv[:-2], "--backend", "double"]) == 2


def test_poison_folder_target_from_all_matches_chunk_when_one_chunk(cifar_tree, surrogate_file, tmp_path):
    from recognition.checkpoint import load_model

    model = load_model(surrogate_file)
    settings = CraftSettings(steps=2, restarts=1, augment=False, batch_size=6, seed=3)
    outs = []
    for target in ("all", "chunk"):
        job = PoisonJob(settings=settings, chunk_size=100, target=target)
        poison_folder(cifar_tree, tmp_path / target, model, job, progress=False)
        outs.append([(tmp_path / target / f).with_suffix(".png").read_bytes()
                     for f in FolderIndex.scan(cifar_tree / "train").files])
    assert outs[0] == outs[1]


def test_independent_variant_protects_each_image_on_its_own(cifar_test_batch, surrogate_file):
    """Batch composition must not change an image's independent perturbation (Proposition 1)."""
    from faceguard.gradients import target_gradient
    from recognition.checkpoint import load_model

    model = load_model(surrogate_file)
    x, y = cifar_test_batch
    images, labels = (x[:6] * 255).round().to(torch.uint8), y[:6] % 3
    target = target_gradient(model, torch.utils.data.TensorDataset(x[:6], labels))
    for backend in ("double", "fd-frozen"):
        settings = CraftSettings(variant="independent", steps=3, restarts=1, augment=False, batch_size=6,
                                 backend=backend)
        attack = build_attack(model, settings, target)
        whole, _ = craft_batch(attack, images, labels, seed=1)
        half, _ = craft_batch(attack, images[:3], labels[:3], seed=1)
        if backend == "double":         # exact: bit for bit
            assert torch.equal(whole[:3], half)
        else:   # the difference quotient amplifies float32 rounding that differs between batch sizes
            assert (whole[:3] == half).float().mean() > 0.99      # measured: 99.95 % of the pixels


def test_lazy_folder_images_decode_like_the_files(cifar_tree):
    index = FolderIndex.scan(cifar_tree / "train")
    images = FolderImages(index, [0, 5])
    image, label = images[1]
    assert image.shape == (3, 32, 32) and label == index.labels[5]
    assert np.array_equal((image * 255).round().permute(1, 2, 0).numpy().astype(int),
                          _pixels(cifar_tree / "train" / index.files[5]))


def test_torchvision_surrogate_from_local_weights_and_no_code_execution(tmp_path):
    import torchvision

    from recognition.models.layers import IMAGENET_MEAN, IMAGENET_STD, Normalize

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=7).eval()
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    loaded = load_surrogate(tmp_path / "weights.pth", arch="torchvision:resnet18")
    assert isinstance(loaded[0], Normalize) and loaded[1].fc.out_features == 7
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(loaded(x), net(Normalize(IMAGENET_MEAN, IMAGENET_STD)(x)), atol=1e-5)

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"fc.weight": Exploit()}))
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        load_surrogate(tmp_path / "evil.pth", arch="torchvision:resnet18")
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(ValueError, match="no .*json beside it"):
        load_surrogate(tmp_path / "weights.pth")


def test_poison_trains_its_own_surrogate_when_none_is_given(cifar_tree, tmp_path):
    out = tmp_path / "out"
    assert main(["poison", str(cifar_tree), "--eps", "4", "--out", str(out), "--width", "0.125",
                 "--surrogate-epochs", "1", "--steps", "2", "--restarts", "1", "--batch-size", "6",
                 "--method", "alignment", "--variant", "independent", "--quiet"]) == 0
    assert (out / STATE_DIR / "surrogate.safetensors").exists()
    summary = json.loads((out / STATE_DIR / "summary.json").read_text())
    assert summary["images"] == 12 and summary["job"]["settings"]["variant"] == "independent"


def test_poison_crafts_error_minimizing_noise_chunk_by_chunk_without_a_surrogate(cifar_tree, tmp_path):
    """A corpus method crafts each chunk whole (no surrogate trained), writes every file within ε,
    and an interrupted chunk is crafted again to the same files."""
    out = tmp_path / "out"
    argv = ["poison", str(cifar_tree), "--eps", "8", "--out", str(out), "--width", "0.125", "--steps", "2",
            "--batch-size", "6", "--chunk-size", "7", "--method", "error-minimizing-classwise", "--quiet"]
    assert main(argv) == 0
    assert not (out / STATE_DIR / "surrogate.safetensors").exists()
    summary = json.loads((out / STATE_DIR / "summary.json").read_text())
    stored = summary["job"]["settings"]
    assert stored["method"] == "error-minimizing-classwise"  # the method's own defaults, not alignment's
    assert (stored["steps"], stored["restarts"], stored["step_size"]) == (2, 1, 0.1)
    index = FolderIndex.scan(cifar_tree / "train")
    outputs = [out / rel.with_suffix(".png") for rel in index.files]
    diffs = [_pixels(p) - _pixels(cifar_tree / "train" / rel) for p, rel in zip(outputs, index.files)]
    assert max(np.abs(d).max() for d in diffs) == 8
    # class-wise: the images of one class (in one chunk, unclipped pixels) share their noise
    same = [(diffs[i] == diffs[0]) | (_pixels(outputs[i]) % 255 == 0) for i in range(1, 4)]
    assert all(s.mean() > 0.8 for s in same)
    before = [p.read_bytes() for p in outputs]
    outputs[-1].unlink()
    sorted((out / STATE_DIR).glob("chunk-*.json"))[1].unlink()
    assert main(argv) == 0
    assert [p.read_bytes() for p in outputs] == before
    with pytest.raises(ValueError, match="without torchrun"):
        from recognition.distributed import DistributedContext

        poison_folder(cifar_tree, tmp_path / "x", torch.nn.Linear(1, 1),
                      PoisonJob(CraftSettings(method="error-minimizing")),
                      context=DistributedContext(rank=0, world_size=2, device=torch.device("cpu")))


def test_poison_crafts_autoregressive_noise_batch_by_batch_without_training_a_surrogate(cifar_tree, tmp_path):
    """Data-free: no surrogate is trained, every batch gets the processes of the folder's 3 classes,
    each image a fresh signal of its class's process, within ε after saving."""
    from faceguard.attacks.autoregressive import ar_response

    out = tmp_path / "out"
    assert main(["poison", str(cifar_tree), "--eps", "8", "--out", str(out), "--width", "0.125",
                 "--batch-size", "5", "--method", "autoregressive", "--quiet"]) == 0
    assert not (out / STATE_DIR / "surrogate.safetensors").exists()
    index = FolderIndex.scan(cifar_tree / "train")
    clean = [_pixels(cifar_tree / "train" / rel) for rel in index.files]
    diffs = torch.tensor(np.stack([_pixels(out / rel.with_suffix(".png")) for rel in index.files])
                         - np.stack(clean)).permute(0, 3, 1, 2).double()
    assert int(diffs.abs().max()) == 8 and not torch.equal(diffs[0], diffs[1])
    attack = build_attack(torch.nn.Linear(1, 3), CraftSettings(method="autoregressive"))
    processes = attack.coefficients(3, 3, (32, 32))
    named = ar_response(processes.double(), diffs).argmin(0)
    assert torch.equal(named, torch.tensor(index.labels))


def test_poison_pastes_each_class_its_synthetic_pattern_without_training_a_surrogate(cifar_tree, tmp_path):
    """Data-free and class-wise: no surrogate, one block pattern per class of the folder, every image
    of a class shifted by its pattern times ε (up to rounding and the [0, 255] range) after saving."""
    from faceguard.attacks.synthetic import block_patterns

    out = tmp_path / "out"
    assert main(["poison", str(cifar_tree), "--eps", "8", "--out", str(out), "--width", "0.125",
                 "--batch-size", "5", "--method", "synthetic", "--quiet"]) == 0
    assert not (out / STATE_DIR / "surrogate.safetensors").exists()
    index = FolderIndex.scan(cifar_tree / "train")
    clean = np.stack([_pixels(cifar_tree / "train" / rel) for rel in index.files])
    diffs = torch.tensor(np.stack([_pixels(out / rel.with_suffix(".png")) for rel in index.files])
                         - clean).permute(0, 3, 1, 2).double()
    patterns = block_patterns(3, 3, (32, 32), torch.Generator().manual_seed(0)).double()
    named = torch.einsum("nchw,kchw->nk", diffs, patterns).argmax(1)
    assert int(diffs.abs().max()) == 8 and torch.equal(named, torch.tensor(index.labels))


@pytest.mark.parametrize("variant", ["independent", "joint"])
def test_torchrun_two_processes_write_what_one_process_writes(cifar_tree, surrogate_file, tmp_path, variant):
    """Batches, their seeds and the (float64-summed) target gradient do not depend on the process count."""
    import os
    import socket
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["poison", str(cifar_tree), "--eps", "8", "--surrogate", str(surrogate_file), "--steps", "2",
            "--restarts", "1", "--batch-size", "3", "--chunk-size", "7", "--method", "alignment", "--variant", variant,
            "--device", "cpu", "--quiet"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={port}",
                "-m", "faceguard.cli"]
    for command, out in (([sys.executable, "-m", "faceguard.cli"], "one"), (torchrun, "two")):
        result = subprocess.run([*command, *args, "--out", str(tmp_path / out)], cwd=repo, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    files = FolderIndex.scan(cifar_tree / "train").files
    one = [_pixels(tmp_path / "one" / f.with_suffix(".png")) for f in files]
    two = [_pixels(tmp_path / "two" / f.with_suffix(".png")) for f in files]
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    summary = json.loads((tmp_path / "two" / STATE_DIR / "summary.json").read_text())
    assert summary["processes"] == 2 and sum(c["written"] for c in summary["chunks"]) == 12
