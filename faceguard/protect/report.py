"""``--report``: one self-contained HTML page with before / after / amplified-difference thumbnails.

Thumbnails are embedded as base64 PNGs (the page works offline and can be mailed around). The
difference is shown amplified so that ±ε maps to black/white around mid-gray; the per-file
numbers (faces, L∞, PSNR, SSIM, alignment losses) come from the manifest.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from faceguard.protect.photo import read_photo
from recognition.files import one_line, write_bytes_atomic

THUMBNAIL = 320


def _thumbnail(pixels: np.ndarray) -> str:
    """``data:`` URI of a PNG thumbnail (longest side THUMBNAIL pixels)."""
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def amplified_difference(before: np.ndarray, after: np.ndarray, eps: float) -> np.ndarray:
    """128 + (after − before) · 127/ε as uint8 (ε in pixel levels); unchanged pixels are mid-gray."""
    scale = 127 / max(eps, 1)
    diff = after.astype(np.float32) - before.astype(np.float32)
    return np.clip(128 + diff * scale, 0, 255).astype(np.uint8)


def _number(value) -> str:
    return "–" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _row(root: Path, out: Path, rel: str, entry: dict, eps: float) -> str:
    """One table row: name, numbers, and (for protected photos) the three thumbnails."""
    loss = entry.get("loss") or {}
    cells = [html.escape(rel), entry["status"] + (f": {html.escape(entry['reason'])}" if entry.get("reason") else ""),
             _number(entry.get("faces")), _number(entry.get("linf")), _number(entry.get("psnr")),
             _number(entry.get("ssim")), " / ".join(_number(loss.get(k)) for k in ("clean", "crafted", "saved"))]
    images = ""
    if entry["status"] == "protected":
        try:
            before = read_photo(root / rel).pixels
            after = read_photo(out / entry["output"]).pixels
            images = "".join(f'<img src="{_thumbnail(p)}" alt="{label}" title="{label}">' for label, p in (
                ("before", before), ("after", after), ("difference ×", amplified_difference(before, after, eps))))
        except Exception as exc:  # a file changed since: say so in the page
            images = html.escape(one_line(exc))
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td>{images}</td></tr>"


def write_report(path: Path, root: Path, out: Path, entries: dict[str, dict], eps: float) -> Path:
    """Write the HTML page for the manifest ``entries`` (relative input path -> entry)."""
    rows = "\n".join(_row(root, out, rel, entry, eps) for rel, entry in sorted(entries.items()))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>faceguard protect report</title>
<style>body{{font-family:sans-serif}} td{{border-top:1px solid #ccc;padding:4px;vertical-align:top}}
img{{margin-right:4px;max-height:{THUMBNAIL}px}}</style></head><body>
<h1>faceguard protect: {len(entries)} files, ε = {eps:g}/255</h1>
<p>Images: before, after, and the difference amplified so that ±ε is black/white around gray.
Alignment loss A = 1 − cos(T, ∇θ CE): clean / crafted / after saving, re-detection and re-alignment
(lower = stronger protection).</p>
<table><tr><th>file</th><th>status</th><th>faces</th><th>L∞</th><th>PSNR dB</th><th>SSIM</th>
<th>loss clean / crafted / saved</th><th>before · after · difference</th></tr>
{rows}
</table></body></html>
"""
    write_bytes_atomic(path, page.encode())
    return path
