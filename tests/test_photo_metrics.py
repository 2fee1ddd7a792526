"""photo_metrics computes SSIM/PSNR only around the changed pixels; it must equal skimage's
whole-photo values (changes in the middle, at borders and corners, gray/RGB/RGBA, tiny photos):
PSNR and L∞ exactly, SSIM to 2e-6 (its windows are filtered in float32, skimage's in float64 for
uint8 input; the reported value has 6 decimals)."""
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from faceguard.protect.photo import photo_metrics


@pytest.mark.parametrize("shape, box", [
    ((300, 400, 3), (50, 120, 200, 260)),      # a face in the middle
    ((300, 400), (0, 80, 0, 90)),              # gray, touching the top-left corner
    ((120, 90, 4), (100, 120, 70, 90)),        # RGBA, bottom-right corner
    ((64, 80, 3), (0, 64, 0, 80)),             # everything changed
    ((50, 60, 3), (20, 21, 30, 31)),           # one pixel
    ((15, 12, 3), (2, 9, 3, 8)),               # tiny photo
])
def test_metrics_equal_whole_photo_skimage(shape, box):
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, shape, dtype=np.uint8)
    protected = original.copy()
    y0, y1, x0, x1 = box
    patch = protected[y0:y1, x0:x1].astype(int) + rng.integers(-16, 17, protected[y0:y1, x0:x1].shape)
    protected[y0:y1, x0:x1] = np.clip(patch, 0, 255)
    metrics = photo_metrics(original, protected)
    channel_axis = None if original.ndim == 2 else 2
    expected = structural_similarity(original, protected, data_range=255, channel_axis=channel_axis)
    assert metrics["ssim"] == pytest.approx(expected, abs=2e-6)
    assert metrics["psnr"] == round(peak_signal_noise_ratio(original, protected, data_range=255), 3)
    assert metrics["linf"] == int(np.abs(original.astype(int) - protected.astype(int)).max())


def test_identical_photos_and_size_mismatch():
    image = np.zeros((40, 40, 3), np.uint8)
    assert photo_metrics(image, image.copy()) == {"linf": 0, "psnr": None, "ssim": 1.0}
    with pytest.raises(ValueError, match="sizes differ"):
        photo_metrics(image, image[:30])


def test_ssim_of_bright_flat_photo_keeps_float32_precision():
    """Bright, nearly flat pixels are where E[x²] − E[x]² cancels most in float32. Centred on 128,
    the unrounded SSIM was 1.0e-6 to 1.1e-6 off skimage's float64 value over seeds 0-3 (skimage's own
    float32 path 5.0e-6 to 5.3e-6); with the 6-decimal rounding that stays within 2.5e-6."""
    rng = np.random.default_rng(1)
    original = np.clip(235 + rng.integers(-2, 3, (240, 320, 3)), 0, 255).astype(np.uint8)
    protected = np.clip(original.astype(int) + rng.integers(-3, 4, original.shape), 0, 255).astype(np.uint8)
    expected = structural_similarity(original, protected, data_range=255, channel_axis=2)
    assert photo_metrics(original, protected)["ssim"] == pytest.approx(expected, abs=2.5e-6)
