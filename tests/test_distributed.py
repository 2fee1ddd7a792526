"""Multi-process data-parallel training: sharding, keyed augmentation, and a real 2-process torchrun run.

The torchrun test trains the same small ResNet on 256 real CIFAR-10 images twice through
``python -m recognition train``: with 2 gloo processes (global batch 64 = 2 x 32), and in this
process with ``--ghost-batches 2`` (the same 2 BatchNorm shards). With one intra-op thread in both
(torchrun processes run with OMP_NUM_THREADS=1) the two checkpoints were bitwise identical:
max |difference| 0.0 for parameters and BatchNorm buffers after 8 steps. With different thread
counts the first step already differs by ~1e-7 (reduction order) and training amplifies it to
~4e-3 after 8 steps at this learning rate, so the tolerance below only admits rounding noise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from recognition.checkpoint import load_checkpoint
from recognition.cli import main as recognition_main
from recognition.datasets import load_cifar10
from recognition.distributed import DistributedContext, shard_sampler
from recognition.training import CROP_PADDING, augment_batch, keyed_words

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _batches(dataset: list[int], rank: int, world: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    sampler = shard_sampler(dataset, DistributedContext(rank, world, torch.device("cpu")), seed)
    sampler.set_epoch(epoch)
    return [b.tolist() for b in DataLoader(dataset, batch_size=batch // world, sampler=sampler, drop_last=True)]


def test_rank_shards_of_a_batch_are_the_single_process_batch() -> None:
    dataset = list(range(103))  # not a multiple of the batch: the tail is dropped the same way
    single = _batches(dataset, 0, 1, 8, seed=5, epoch=2)
    ranks = [_batches(dataset, rank, 2, 8, seed=5, epoch=2) for rank in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 12
    for j, batch in enumerate(single):
        # Rank r's batch j is items r, r + 2, ... of batch j: the chunk ghost batching gives rank r.
        assert [ranks[r][j] for r in range(2)] == [batch[0::2], batch[1::2]]
    assert _batches(dataset, 0, 1, 8, seed=5, epoch=3) != single  # reshuffled every epoch


def test_augmentation_is_keyed_per_sample_not_per_batch() -> None:
    images = torch.rand(6, 3, 8, 8)
    indices = torch.tensor([40, 7, 13, 2, 99, 5])
    state = torch.get_rng_state()
    whole = augment_batch(images, indices, "crop_flip", seed=1, epoch=3)
    order = torch.tensor([5, 2, 0, 4, 1, 3])  # other batch composition and order
    parts = [augment_batch(images[order[i:i + 2]], indices[order[i:i + 2]], "crop_flip", seed=1, epoch=3)
             for i in (0, 2, 4)]
    assert torch.equal(torch.cat(parts), whole[order])
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not used
    assert not torch.equal(augment_batch(images, indices, "crop_flip", seed=1, epoch=4), whole)
    assert torch.equal(augment_batch(images, indices, "none", seed=1, epoch=3), images)

    # Each output is the padded image cropped at its keyed offset, flipped on its keyed bit.
    words = keyed_words(indices, 1, 3, count=3) >> 11
    padded = torch.nn.functional.pad(images, (CROP_PADDING,) * 4)
    for i, (flip, row, col) in enumerate(words.astype("int64").tolist()):
        crop = padded[i, :, row % 9:row % 9 + 8, col % 9:col % 9 + 8]
        assert torch.equal(whole[i], crop.flip(-1) if flip & 1 else crop)
    flipped = augment_batch(images, indices, "flip", seed=1, epoch=3)
    assert all(torch.equal(flipped[i], images[i].flip(-1) if flip & 1 else images[i])
               for i, flip in enumerate(words[:, 0].tolist()))


def test_keyed_draws_are_uniform() -> None:
    words = keyed_words(torch.arange(18000), 0, 1, count=3) >> 11
    offsets = torch.from_numpy((words[:, 1:] % 9).astype("int64")).flatten()
    assert torch.bincount(offsets, minlength=9).float().div(len(offsets)).sub(1 / 9).abs().max() < 0.01
    assert abs(float((words[:, 0] & 1).mean()) - 0.5) < 0.02


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_image_tree(cifar_tar: Path, root: Path, count: int) -> None:
    """`count` real CIFAR-10 training images as an ImageFolder tree of PNGs."""
    data = load_cifar10(cifar_tar, "train", per_class=count // 10 + 1)
    for i in range(count):
        folder = root / data.classes[int(data.labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_with_ghost_batches(cifar_tar: Path, tmp_path: Path) -> None:
    _write_image_tree(cifar_tar, tmp_path / "tree", 256)
    common = ["train", "--data", str(tmp_path / "tree"), "--model", "resnet18", "--width", "0.125",
              "--epochs", "2", "--batch-size", "64", "--lr", "0.05", "--device", "cpu", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [str(TORCHRUN), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "recognition",
               *common, "--out", str(tmp_path / "ddp" / "model.safetensors")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"processes": 2' in result.stdout and result.stdout.count('"processes"') == 1  # rank 0 reports

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count of each torchrun process: same reduction order
    try:
        ghost_run = ["--ghost-batches", "2", "--out", str(tmp_path / "one" / "model.safetensors")]
        assert recognition_main([*common, *ghost_run]) == 0
    finally:
        torch.set_num_threads(threads)

    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == [
        "model.json", "model.safetensors", "model.train.json", "model.train.safetensors"]
    ddp, one = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("ddp", "one"))
    assert ddp.keys() == one.keys()
    differences = {name: (ddp[name].double() - one[name].double()).abs().max().item() for name in ddp}
    assert max(differences.values()) <= 1e-5, sorted(differences.items(), key=lambda item: -item[1])[:3]
    momentum = [load_file(str(tmp_path / run / "model.train.safetensors")) for run in ("ddp", "one")]
    assert all(torch.allclose(momentum[0][k], momentum[1][k], atol=1e-5) for k in momentum[0])
    histories = [load_checkpoint(tmp_path / run / "model.train.safetensors")[1]["history"] for run in ("ddp", "one")]
    assert [r["loss"] for r in histories[0]] == pytest.approx([r["loss"] for r in histories[1]], abs=1e-6)
