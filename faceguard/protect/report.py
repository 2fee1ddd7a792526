"""``--report``: one HTML page to judge the protection by eye, with the numbers beside it.

Per photo: before / after / amplified-difference thumbnails and, per face, the FLIP error map of
the face box (embedded as base64 PNGs, so they travel with the page), and a **full-resolution
view** that flips between the original and the protected photo (button, or the space bar) at
100 %, scrolled to the first face. The full-resolution view links the photo files themselves
(relative paths from the output folder to the originals and outputs: the page works offline
beside them, without copying megapixels into it). The numbers come from the manifest: faces, L∞,
PSNR (all channels), SSIM (mean of R, G, B), the visibility record (FLIP and CIEDE2000 of the most
visible face against JPEG-90/75 re-saves of the original, :mod:`faceguard.visibility`) and the
method's losses.
"""
from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from faceguard.protect.photo import colour_and_alpha, read_photo
from faceguard.visibility import Visibility, as_visible_as
from recognition.files import one_line, write_bytes_atomic

THUMBNAIL = 320
ERROR_MAP = 480  # longest side of an embedded FLIP error map (a heat map loses nothing that matters)


def _png_uri(pixels: np.ndarray, side: int) -> str:
    """``data:`` URI of a PNG of ``pixels`` shrunk to at most ``side`` pixels on its longest side."""
    image = Image.fromarray(pixels)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def amplified_difference(before: np.ndarray, after: np.ndarray, eps: float) -> np.ndarray:
    """128 + (after − before) · 127/ε as uint8 (ε in pixel levels); unchanged pixels are mid-gray."""
    scale = 127 / max(eps, 1)
    diff = after.astype(np.float32) - before.astype(np.float32)
    return np.clip(128 + diff * scale, 0, 255).astype(np.uint8)


def heat_map(error: np.ndarray) -> np.ndarray:
    """A FLIP error map [h, w] in [0, 1] as uint8 RGB through matplotlib's magma (FLIP's own map)."""
    from matplotlib import colormaps

    return (colormaps["magma"](np.clip(error, 0, 1))[..., :3] * 255).round().astype(np.uint8)


def _number(value) -> str:
    return "–" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _seen(entry: dict) -> str:
    """The visibility cell: FLIP, its ratio to the JPEG re-saves, ΔE00 (the most visible face)."""
    record = entry.get("visibility")
    if not record:
        return "–"
    return (f"FLIP {record['flip']:.3f}<br>{as_visible_as(record['ratio_jpeg75'], 75)}<br>"
            f"{as_visible_as(record['ratio_jpeg90'], 90)}<br>ΔE00 {record['ciede2000']:.2f}")


def _link(path: Path, start: Path) -> str:
    """A relative URL from the report's folder to ``path``."""
    return html.escape(Path(os.path.relpath(path.resolve(), start.resolve())).as_posix(), quote=True)


def _images(root: Path, out: Path, rel: str, entry: dict, eps: float) -> str:
    """Thumbnails, per-face FLIP error maps and the button of the full-resolution flip view."""
    before, after = read_photo(root / rel).pixels, read_photo(out / entry["output"]).pixels
    shown = "".join(f'<img src="{_png_uri(p, THUMBNAIL)}" alt="{label}" title="{label}">' for label, p in (
        ("before", before), ("after", after), ("difference ×", amplified_difference(before, after, eps))))
    boxes = [face["box"] for face in entry.get("face_details", [])]
    if boxes and before.shape == after.shape:
        seen = Visibility(colour_and_alpha(before)[0], colour_and_alpha(after)[0])
        shown += "".join(f'<img class="map" src="{_png_uri(heat_map(seen.error_map(box)), ERROR_MAP)}" '
                         f'alt="FLIP error map, face {k + 1}" title="FLIP error map, face {k + 1}">'
                         for k, box in enumerate(boxes))
    x, y = (int(boxes[0][0]), int(boxes[0][1])) if boxes else (0, 0)
    return shown + (f'<br><button onclick="compare(\'{_link(root / rel, out)}\', \'{_link(out / entry["output"], out)}\', '
                    f'{x}, {y})">compare at 100 % (flip before / after)</button>')


def _row(root: Path, out: Path, rel: str, entry: dict, eps: float) -> str:
    """One table row: name, numbers, and (for protected photos) the images."""
    loss = entry.get("loss") or {}
    cells = [html.escape(rel), entry["status"] + (f": {html.escape(entry['reason'])}" if entry.get("reason") else ""),
             _number(entry.get("faces")), _number(entry.get("linf")), _number(entry.get("psnr")),
             _number(entry.get("ssim")), _seen(entry),
             " / ".join(_number(loss.get(k)) for k in ("clean", "crafted", "saved"))]
    images = ""
    if entry["status"] == "protected":
        try:
            images = _images(root, out, rel, entry, eps)
        except Exception as exc:  # a file changed since: say so in the page
            images = html.escape(one_line(exc))
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + f"<td>{images}</td></tr>"


VIEWER = """<div id="viewer" hidden><div class="bar"><button onclick="flip()">flip before / after (space)</button>
<span id="which"></span> <button onclick="closeViewer()">close (Esc)</button></div>
<div id="frame"><img id="full" alt="full resolution"></div></div>
<script>
let views = [], shown = 0;
function compare(before, after, x, y) {
  const frame = document.getElementById('frame');
  document.getElementById('full').onload = () => { frame.scrollLeft = x; frame.scrollTop = y; };
  document.getElementById('viewer').hidden = false;
  views = [before, after]; shown = 1; show();
}
function show() {
  document.getElementById('full').src = views[shown];
  document.getElementById('which').textContent = shown ? 'after (protected)' : 'before (original)';
}
function flip() { shown = 1 - shown; show(); }
function closeViewer() { document.getElementById('viewer').hidden = true; }
document.addEventListener('keydown', (e) => {
  if (document.getElementById('viewer').hidden) return;
  if (e.key === ' ') { e.preventDefault(); flip(); } else if (e.key === 'Escape') closeViewer();
});
</script>"""


def write_report(path: Path, root: Path, out: Path, entries: dict[str, dict], eps: float) -> Path:
    """Write the HTML page for the manifest ``entries`` (relative input path -> entry)."""
    rows = "\n".join(_row(root, out, rel, entry, eps) for rel, entry in sorted(entries.items()))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>faceguard protect report</title>
<style>body{{font-family:sans-serif}} td{{border-top:1px solid #ccc;padding:4px;vertical-align:top}}
img{{margin-right:4px;max-height:{THUMBNAIL}px}} #viewer{{position:fixed;inset:0;background:#222;color:#eee}}
#viewer .bar{{padding:6px}} #frame{{overflow:auto;position:absolute;top:40px;bottom:0;left:0;right:0}}
#full{{max-height:none}}</style></head><body>
<h1>faceguard protect: {len(entries)} files, ε = {eps:g}/255</h1>
<p>Images: before, after, the difference amplified so that ±ε is black/white around gray, and each
face's FLIP error map (black: no visible difference; bright: visible). "compare at 100 %" shows the
full-resolution photo and flips between original and protected: judge the protection there.
Visibility: FLIP (0 = identical) and CIEDE2000 of the most visible face, and FLIP as a multiple of
what a JPEG re-save of the original at quality 75 / 90 costs the same face (below 1: less visible).
PSNR over all channels; SSIM the mean of R, G and B. Loss: the method's, clean / crafted / after
saving, re-detection and re-alignment (lower = stronger protection).</p>
<table><tr><th>file</th><th>status</th><th>faces</th><th>L∞</th><th>PSNR dB</th><th>SSIM</th>
<th>visibility</th><th>loss clean / crafted / saved</th><th>before · after · difference · FLIP map</th></tr>
{rows}
</table>
{VIEWER}
</body></html>
"""
    write_bytes_atomic(path, page.encode())
    return path
