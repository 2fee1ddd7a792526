"""Crafting-step speed of each gradient backend, as a multiple of the floor.

The floor is one forward + backward w.r.t. the input (what any input-gradient attack pays per
step). For each model and backend this times one full crafting step (``Alignment.step_gradient``:
target alignment gradient of the batch, joint variant), measures the peak extra memory of the step
(each in a fresh process, as the peak over the floor's peak: RSS on CPU, allocated on CUDA) and the
agreement of its gradient with double backprop (cosine, sign agreement). Random weights, BatchNorm
in eval mode, as in the issue's table.

``fd-frozen-lag`` computes G only every ``refresh`` steps, so its time is that of a whole cycle of
``refresh`` consecutive steps divided by ``refresh``, and its agreement is that of the step after a
refresh: G from a random start in the ε-ball (8/255), the gradient at the unperturbed batch.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

from faceguard.registry import BACKENDS, DEFAULT_BACKEND
from recognition.cli import add_device_option, add_out_option

MODELS = {  # name -> (registry name, create kwargs, input size, default batch)
    "cifar-resnet18": ("resnet18", {"num_classes": 10}, 32, 128),
    "face-ir18": ("ir18", {"num_classes": 512, "input_size": 112}, 112, 32),
}
RESULTS = Path(__file__).parent / "results"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=BACKENDS.names(), choices=BACKENDS.names())
    parser.add_argument("--width", type=float, default=1.0, help="channel width multiplier")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: 128 CIFAR, 32 face)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps after one warm-up step")
    add_device_option(parser)
    add_out_option(parser, "writes OUT.json and OUT.md", default=RESULTS / "speed")


def _setup(model_key: str, width: float, batch: int | None, device: str):
    """Model (eval mode), target gradient, a batch and the loss, all seeded identically."""
    import torch
    from faceguard.gradients import target_gradient
    from faceguard.losses import make_loss
    from recognition.heads import MarginClassifier, create_head
    from recognition.models import create_model
    from recognition.device import resolve_device

    name, kwargs, size, default_batch = MODELS[model_key]
    batch = batch or default_batch
    dev = resolve_device(device)
    torch.manual_seed(0)
    model = create_model(name, width=width, **kwargs)
    labelled = name.startswith("ir")
    if labelled:  # a face backbone is crafted through its CosFace head
        model = MarginClassifier(model, create_head("cosface", kwargs["num_classes"], 100))
    model = model.to(dev).eval()
    classes = 100 if labelled else kwargs["num_classes"]
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g).to(dev)
    y = torch.randint(0, classes, (batch,), generator=g).to(dev)
    data = torch.utils.data.TensorDataset(x.cpu(), y.cpu())
    target = target_gradient(model, data, loss_fn=make_loss("rce", labelled), batch_size=batch)
    return model, target, x, y, make_loss("ce", labelled), dev


def _time(fn, repeats: int, dev) -> float:
    import torch

    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure(model_key: str, backend: str | None, args: argparse.Namespace, queue) -> None:
    """In a fresh process: seconds per step and peak memory (MB); backend None = the floor.

    Every process does the same set-up, so a backend's peak minus the floor's peak is the extra
    memory its step needs over one ordinary forward + backward.
    """
    import torch
    from faceguard.attacks import Alignment

    model, target, x, y, loss_fn, dev = _setup(model_key, args.width, args.batch_size, args.device)
    _reset_peak(dev)   # the set-up (target gradient) peaks higher than a step: measure from here
    if backend is None:
        def step():
            xi = x.clone().requires_grad_(True)
            torch.autograd.grad(loss_fn(model, xi, y).sum(), xi)
    else:
        attack = Alignment(model, target, backend=backend, augment=False, loss_fn=loss_fn)
        cycle = getattr(attack.gradient, "refresh", 1)

        def step():
            for _ in range(cycle):
                attack.step_gradient(x, y, torch.zeros_like(x).requires_grad_(True))
    seconds = _time(step, args.repeats, dev) / (1 if backend is None else cycle)
    queue.put((seconds, _peak_mb(dev)))


def _reset_peak(dev) -> None:
    """Restart peak-memory tracking: CUDA's allocator statistics, or Linux's peak RSS (VmHWM)."""
    import torch

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        Path("/proc/self/clear_refs").write_text("5")


def _peak_mb(dev) -> float:
    """Peak memory (MB) since :func:`_reset_peak` (peak RSS of the process where /proc is missing)."""
    import torch

    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _agreement(model_key: str, backends: list[str], args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    import torch
    import torch.nn.functional as F
    from faceguard.attacks import Alignment

    model, target, x, y, loss_fn, _ = _setup(model_key, args.width, args.batch_size, args.device)
    grads = {}
    for backend in backends:
        attack = Alignment(model, target, backend=backend, augment=False, loss_fn=loss_fn)
        if getattr(attack.gradient, "refresh", 1) > 1:  # G one step old
            attack.step_gradient(x, y, attack.random_delta(x).requires_grad_(True))
        grads[backend] = attack.step_gradient(x, y, torch.zeros_like(x).requires_grad_(True))[0].flatten()
    ref = grads["double"]
    return {b: (float(F.cosine_similarity(ref, g, dim=0)), float((ref.sign() == g.sign()).float().mean()))
            for b, g in grads.items()}


def _in_fresh_process(model_key: str, backend: str | None, args: argparse.Namespace) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(model_key, backend, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def run(args: argparse.Namespace) -> int:
    backends = list(dict.fromkeys(["double", *args.backends]))
    rows = []
    for model_key in args.models:
        floor, floor_peak = _in_fresh_process(model_key, None, args)
        agreement = _agreement(model_key, backends, args)
        for backend in backends:
            seconds, peak = _in_fresh_process(model_key, backend, args)
            cosine, sign = agreement[backend]
            rows.append({"model": model_key, "backend": backend, "ratio_to_floor": round(seconds / floor, 2),
                         "seconds_per_step": round(seconds, 4), "floor_seconds": round(floor, 4),
                         "peak_mb": round(max(peak - floor_peak, 0.0), 1), "cosine": round(cosine, 6), "sign_agreement": round(sign, 5)})
            print(json.dumps(rows[-1]), flush=True)
    result = {"config": {"width": args.width, "batch": args.batch_size, "repeats": args.repeats,
                         "device": args.device, "variant": "joint"},
              "command": args.command_line, "rows": rows, "default_backend": DEFAULT_BACKEND}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(result))
    return 0


def _markdown(result: dict) -> str:
    lines = [f"# Crafting-step speed\n\n`{result['command']}`\n",
             "| model | backend | × floor | s/step | peak extra MB | cosine vs double | sign agreement |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['backend']} | {r['ratio_to_floor']} | {r['seconds_per_step']} | "
              f"{r['peak_mb']} | {r['cosine']} | {r['sign_agreement']} |" for r in result["rows"]]
    lines.append(f"\nDefault backend (`faceguard.backends.DEFAULT_BACKEND`): `{result['default_backend']}`")
    return "\n".join(lines) + "\n"
