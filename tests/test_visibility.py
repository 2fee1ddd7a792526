"""The visibility measure (faceguard.visibility) against known references on a real photo."""
from __future__ import annotations

import numpy as np
import pytest

from faceguard.protect.photo import read_photo
from faceguard.visibility import (JPEG_QUALITIES, Visibility, as_visible_as, ciede2000, flip_error, flip_map,
                                  jpeg_resave, photo_visibility, region_slices)
from tests.conftest import require_data


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    """A real colour photo of a face from the bundle, cut to its central part (fast)."""
    pixels = read_photo(require_data("photos/obama/obama.jpg")).pixels
    height, width = pixels.shape[:2]
    return np.ascontiguousarray(pixels[height // 4:height // 4 + 320, width // 4:width // 4 + 320])


def test_identical_images_score_zero(portrait):
    assert flip_error(portrait, portrait) == 0.0
    assert ciede2000(portrait, portrait) == 0.0
    error, mean = flip_map(portrait, portrait.copy())
    assert error.shape == portrait.shape[:2] and mean == 0.0 and not error.any()


def test_jpeg_quality_orders_both_measures(portrait):
    flips = [flip_error(portrait, jpeg_resave(portrait, q)) for q in (95, 75, 50)]
    deltas = [ciede2000(portrait, jpeg_resave(portrait, q)) for q in (95, 75, 50)]
    assert 0 < flips[0] < flips[1] < flips[2] < 1
    assert 0 < deltas[0] < deltas[1] < deltas[2]


def test_colour_blotches_are_more_visible_than_grey_noise_of_the_same_size(portrait):
    """What SSIM per channel and PSNR cannot tell apart: ±8 levels of smooth opposite colour shifts
    against ±8 levels of grey noise (same L∞, same per-channel energy)."""
    rng = np.random.default_rng(0)
    blocks = rng.choice([-8, 8], size=(portrait.shape[0] // 16, portrait.shape[1] // 16, 1))
    smooth = np.kron(blocks, np.ones((16, 16, 1)))
    tint = np.concatenate([smooth, -smooth, smooth], axis=2)  # green against magenta, block by block
    grey = np.repeat(rng.choice([-8, 8], size=portrait.shape[:2] + (1,)), 3, axis=2)
    tinted = np.clip(portrait + tint, 0, 255).astype(np.uint8)
    greyed = np.clip(portrait + grey, 0, 255).astype(np.uint8)
    assert flip_error(portrait, tinted) > 1.5 * flip_error(portrait, greyed)
    assert ciede2000(portrait, tinted) > 2 * ciede2000(portrait, greyed)


def test_region_record_holds_references_and_ratios(portrait):
    noisy = np.clip(portrait.astype(int) + np.random.default_rng(1).integers(-4, 5, portrait.shape), 0, 255)
    seen = Visibility(portrait, noisy.astype(np.uint8))
    box = (40.5, 30.2, 250.0, 260.7)
    record = seen.region(box)
    for quality in JPEG_QUALITIES:
        reference = jpeg_resave(portrait, quality)[30:261, 40:250]
        assert record[f"flip_jpeg{quality}"] == pytest.approx(flip_error(portrait[30:261, 40:250], reference), abs=1e-4)
        assert record[f"ratio_jpeg{quality}"] == pytest.approx(record["flip"] / record[f"flip_jpeg{quality}"], rel=1e-3)
    assert record["flip_jpeg90"] < record["flip_jpeg75"]
    assert seen.error_map(box).shape == (231, 210)
    both = photo_visibility(portrait, noisy.astype(np.uint8), [box])
    assert both["faces"] == [record] and set(both["photo"]) == {"flip", "ciede2000"}
    assert as_visible_as(0.84) == "0.84x a JPEG-75 re-save" and as_visible_as(None) == "n/a"


def test_grayscale_and_bad_regions(portrait):
    grey = np.ascontiguousarray(portrait[..., 1])
    assert flip_error(grey, jpeg_resave(grey, 75)) > 0
    with pytest.raises(ValueError, match="outside"):
        region_slices((500, 500, 600, 600), grey.shape)
    with pytest.raises(ValueError, match="sizes differ"):
        flip_error(grey, grey[1:])


def test_whole_photo_numbers_equal_the_full_computation(portrait):
    from faceguard.visibility import whole_photo

    big = np.ascontiguousarray(np.concatenate([portrait, portrait[:, ::-1]], axis=1))
    protected = big.copy()
    protected[100:140, 60:120] = np.clip(protected[100:140, 60:120].astype(int) + 12, 0, 255)
    record = whole_photo(big, protected)
    assert record["flip"] == pytest.approx(flip_error(big, protected), abs=2e-4)
    assert record["ciede2000"] == pytest.approx(ciede2000(big, protected), abs=2e-4)
    assert whole_photo(big, big) == {"flip": 0.0, "ciede2000": 0.0}
