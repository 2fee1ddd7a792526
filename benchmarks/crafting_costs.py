"""``python -m benchmarks crafting-costs``: where a step of ``faceguard protect``'s evasion goes, and
what cheaper arithmetic would buy.

Evasion crafts each face by running every ensemble member forward and backward (to the input)
once per step. This benchmark times, for each member at its own view size and one face (what
protect crafts), that forward + backward pass:

* ``fp32`` — what protect runs (eager, float32, the member as registered);
* ``bf16`` — the same under ``torch.autocast`` to bfloat16, with how far its input gradient is
  from fp32's (sign agreement, cosine): crafting steps by the sign of the gradient, so a cheaper
  gradient of mostly the same sign would do;
* ``compiled`` (``--compile``) — ``torch.compile`` of the member (default inductor backend), with
  its compile time, which every new process pays again.

Then it protects ``--photos`` bundle photos with the product's defaults (``Protector``, ε = 16)
and reports crafting seconds per face and per face-step beside the members' fp32 passes per step,
so the rest (the photo warps, the scraper augmentation, the SSIM term, the projection) is their
difference. Writes ``benchmarks/results/crafting-costs.{json,md}``; run it on an idle machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from faceguard.registry import ENSEMBLE
from recognition.cli import add_data_option, add_device_option, add_out_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--members", nargs="+", choices=ENSEMBLE.names(),
                        help="recognizers to time (default: protect's crafting ensemble)")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes after three warm-up passes")
    parser.add_argument("--photos", type=int, default=4, help="bundle photos protected for the per-step split (0: none)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of each member (minutes)")
    add_device_option(parser, default="cpu")
    add_data_option(parser)
    add_out_option(parser, "folder for the results files (default: benchmarks/results)")


def _timed_passes(network, x, repeats: int, autocast: bool = False) -> tuple[float, float, object]:
    """(seconds of the first pass, mean seconds of ``repeats`` later passes, the last input gradient)."""
    import torch

    def one():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            out = network(x)
        return torch.autograd.grad(out.float().sum(), x)[0]

    start = time.perf_counter()
    grad = one()
    first = time.perf_counter() - start
    for _ in range(2):
        one()
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(repeats):
        grad = one()
    _sync(x.device)
    return first, (time.perf_counter() - start) / repeats, grad


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def member_rows(members, device, repeats: int, compile_too: bool) -> list[dict]:
    """One row per member: fp32 / bf16 (/ compiled) milliseconds of a forward + backward pass."""
    import torch
    import torch.nn.functional as F

    rows = []
    for member in members:
        torch.manual_seed(0)
        x = torch.rand(1, 3, member.view.size, member.view.size, device=device, requires_grad=True)
        _, fp32, grad = _timed_passes(member.network, x, repeats)
        _, bf16, grad_bf16 = _timed_passes(member.network, x, repeats, autocast=True)
        row = {"member": member.name, "view": member.view.size, "ms_fp32": round(1000 * fp32, 2),
               "ms_bf16": round(1000 * bf16, 2),
               "bf16_sign_agreement": round(float((grad.sign() == grad_bf16.sign()).float().mean()), 4),
               "bf16_gradient_cosine": round(float(F.cosine_similarity(grad.flatten(), grad_bf16.flatten(), dim=0)), 4)}
        if compile_too:
            first, compiled, _ = _timed_passes(torch.compile(member.network), x, repeats)
            row.update(ms_compiled=round(1000 * compiled, 2), compile_seconds=round(first, 1))
        rows.append(row)
    return rows


def craft_split(protector, photos: list, steps: int) -> dict:
    """Crafting seconds of the default protect on ``photos`` (uint8 RGB arrays), per face and per
    face-step (after one untimed photo, so loading and first-call costs are not counted)."""
    faces = [protector.detect(pixels) for pixels in photos]
    protector.protect_pixels(photos[0], faces[0][:1], [None])
    start = time.perf_counter()
    for pixels, found in zip(photos, faces):
        protector.protect_pixels(pixels, found, [None] * len(found))
    seconds, count = time.perf_counter() - start, sum(map(len, faces))
    return {"photos": len(photos), "faces": count, "craft_seconds_per_face": round(seconds / count, 3),
            "craft_ms_per_face_step": round(1000 * seconds / count / steps, 1)}


def markdown_report(result: dict) -> str:
    from benchmarks.results import markdown_table

    config, rows = result["config"], result["rows"]
    compiled = any("ms_compiled" in row for row in rows)
    header = ["member", "view", "fp32 ms", "bf16 ms", "bf16 sign agreement", "bf16 gradient cosine"]
    header += ["compiled ms", "compile s"] if compiled else []
    lines = [[row["member"], f"{row['view']}²", f"{row['ms_fp32']:.1f}", f"{row['ms_bf16']:.1f}",
              f"{row['bf16_sign_agreement']:.3f}", f"{row['bf16_gradient_cosine']:.3f}"]
             + ([f"{row['ms_compiled']:.1f}", f"{row['compile_seconds']:.0f}"] if compiled else []) for row in rows]
    total = sum(row["ms_fp32"] for row in rows)
    text = (f"# Crafting costs of faceguard protect's evasion\n\n`{result['command']}`\n\n"
            f"One face, forward + backward to the input, device {config['device']}, {config['threads']} thread(s), "
            f"mean of {config['repeats']} passes.\n\n{markdown_table(header, lines)}\n\n"
            f"Members in fp32: {total:.1f} ms per step.")
    split = config.get("split")
    if split:
        share = 100 * total / split["craft_ms_per_face_step"]
        text += (f" Protecting {split['photos']} photos ({split['faces']} faces) with the defaults "
                 f"({config['steps']} steps): {split['craft_seconds_per_face']:.2f} s crafting per face, "
                 f"{split['craft_ms_per_face_step']:.1f} ms per face-step, of which the members' passes are "
                 f"about {share:.0f} % (the rest: photo warps, scraper augmentation, SSIM term, projection).")
    return text + "\n"


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from benchmarks.results import RESULTS_DIR, write_markdown, write_results
    from faceguard.protect.evasion import load_ensemble
    from faceguard.protect.protector import Protector
    from recognition.datasets import default_data_dir
    from recognition.files import find_photos

    device = torch.device(args.device)
    protector = Protector(eps=16, device=device, method="evade")
    members = load_ensemble(args.members or protector.settings.ensemble, protector.profile, device)
    rows = member_rows(members, device, args.repeats, args.compile)
    config = {"device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
              "steps": protector.settings.steps, "settings": protector.settings.to_dict(), "compile": args.compile}
    result = {"config": config, "command": args.command_line, "rows": rows}
    if args.photos:
        bundle = (args.data or default_data_dir()) / "photos"
        names = find_photos(bundle)[0][:args.photos]
        photos = [np.asarray(Image.open(bundle / name).convert("RGB")) for name in names]
        config["split"] = craft_split(protector, photos, protector.settings.steps)
    out = Path(args.out or RESULTS_DIR)
    write_results("crafting-costs", config, args.command_line, rows, out)
    text = markdown_report(result)
    write_markdown(out / "crafting-costs.md", text)
    print(text)
    return 0
