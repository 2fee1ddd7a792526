"""faceguard protect under torchrun: two processes write what one process writes (same bytes,
same manifest entries, every file counted once), and the shared manifest journal keeps every
process's records."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import require_data


def test_a_shared_manifest_keeps_what_every_process_journals(tmp_path):
    from faceguard.protect.manifest import JOURNAL, MANIFEST, Manifest, read_manifest

    path = tmp_path / MANIFEST
    owner = Manifest(path, {"s": 1}, "c", shared=True, owner=True)
    other = Manifest(path, {"s": 1}, "c", shared=True, owner=False)
    for k in range(40):  # far more than would trigger a rewrite in a manifest of one process
        (owner if k % 2 else other).record_file(f"p{k}.jpg", {"status": "protected", "k": k})
    assert (tmp_path / JOURNAL).is_file() and len(read_manifest(tmp_path)["files"]) == 40
    other.close()  # not the owner: writes nothing
    assert json.loads(path.read_text())["files"] == {}
    owner.close()
    assert not (tmp_path / JOURNAL).exists()
    assert sorted(json.loads(path.read_text())["files"]) == sorted(f"p{k}.jpg" for k in range(40))


def test_methods_learned_over_the_folder_refuse_torchrun(tmp_path):
    from faceguard.protect.folder import FolderOptions, protect_folder
    from faceguard.protect.protector import Protector
    from recognition.distributed import DistributedContext

    protector = Protector(method="error-minimizing-classwise", device="cpu")
    with pytest.raises(ValueError, match="without torchrun"):
        protect_folder(tmp_path, protector, FolderOptions(out=tmp_path.parent / "out"),
                       DistributedContext(rank=0, world_size=2, device=torch.device("cpu")))


def test_torchrun_two_processes_write_what_one_process_writes(tmp_path):
    photos = tmp_path / "photos"
    for person, name in (("biden", "biden.jpg"), ("kit", "john1.jpg"), ("kit", "john2.jpg")):
        (photos / person).mkdir(parents=True, exist_ok=True)
        source = {"biden": "biden", "kit": "kit_harington"}[person]
        shutil.copyfile(require_data("photos") / source / name, photos / person / name)
    (photos / "kit" / "broken.jpg").write_bytes(b"not a photo")
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FACEGUARD_CACHE": str(tmp_path / "cache")}
    args = ["protect", str(photos), "--steps", "2", "--ensemble", "sface", "--format", "png", "--device", "cpu",
            "--quiet"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", f"--master_port={port}",
                "-m", "faceguard.cli"]
    printed = {}
    for command, out in (([sys.executable, "-m", "faceguard.cli"], "one"), (torchrun, "two")):
        result = subprocess.run([*command, *args, "--out", str(tmp_path / out)], cwd=repo, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 1, result.stderr[-2000:]  # the broken photo is an error
        printed[out] = [line for line in result.stdout.splitlines() if line.startswith("protect: 4 files")]
    assert printed["one"] == [printed["one"][0]] and "3 protected, 0 no face, 1 error" in printed["one"][0]
    assert printed["two"] == [printed["one"][0].replace("/one", "/two")]  # printed once, every process counted
    manifests = [json.loads((tmp_path / out / "manifest.json").read_text()) for out in ("one", "two")]
    assert manifests[0]["centres"] == manifests[1]["centres"]  # embeddings shared exactly between processes
    assert sorted(manifests[0]["centres"]) == ["biden", "kit"]
    one, two = (manifest["files"] for manifest in manifests)
    assert sorted(one) == sorted(two) == ["biden/biden.jpg", "kit/broken.jpg", "kit/john1.jpg", "kit/john2.jpg"]
    for rel, entry in one.items():
        assert two[rel]["status"] == entry["status"]
        assert two[rel].get("output_sha256") == entry.get("output_sha256"), rel
    assert not (tmp_path / "two" / ".manifest.journal").exists()
    command = json.loads((tmp_path / "two" / "manifest.json").read_text())["command"]
    assert command.startswith("torchrun --nproc_per_node=2 -m faceguard.cli protect ")


def test_the_recorded_command_line_says_how_torchrun_started_the_process(monkeypatch):
    import types

    from recognition.cli import invocation

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert invocation("python -m benchmarks", ["protect-speed", "--photos", "2"]) == \
        "python -m benchmarks protect-speed --photos 2"
    monkeypatch.setitem(sys.modules, "__main__", types.SimpleNamespace(__spec__=types.SimpleNamespace(
        name="benchmarks.__main__")))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert invocation("python -m benchmarks", ["protect-speed"]) == \
        "torchrun --nnodes=2 --nproc_per_node=2 -m benchmarks protect-speed"
