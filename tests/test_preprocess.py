import numpy as np
import pytest

from holoburn.processing.preprocess import letterbox_geometry, prepare_input, restore_mask


@pytest.mark.parametrize("h,w", [(480, 640), (640, 480), (1080, 1920), (97, 13), (256, 256)])
def test_mask_round_trip_keeps_geometry(h, w):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[: h // 2] = 255  # top half white
    x, box = prepare_input(frame, 64, (0, 0, 0), (1, 1, 1))
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    # a mask that is 1 where the model input is bright comes back at frame size, top half
    mask_square = (x[0, 0] > 127).astype(np.uint8)
    mask = restore_mask(mask_square, box)
    assert mask.shape == (h, w)
    agree = (mask == (np.arange(h)[:, None] < h // 2)).mean()
    assert agree > 0.9


def test_padding_is_zero_after_normalisation():
    frame = np.full((100, 200, 3), 200, np.uint8)
    x, box = prepare_input(frame, 64, (200, 200, 200), (10, 10, 10))
    assert box.top == 16 and box.height == 32 and box.left == 0
    assert np.all(x == 0)


def test_normalisation_values():
    frame = np.full((32, 32, 3), (10, 20, 30), np.uint8)
    x, _ = prepare_input(frame, 32, (10, 10, 10), (2, 5, 10))
    assert np.allclose(x[0, :, 5, 5], [0.0, 2.0, 2.0])


def test_bad_frames_rejected():
    """A frame the model cannot take is a BadFrame with the reason it is counted under."""
    from holoburn.clinical.errors import BadFrame

    with pytest.raises(BadFrame, match=r"\(H, W, 3\)") as err:
        prepare_input(np.zeros((10, 10), np.uint8), 32, (0, 0, 0), (1, 1, 1))
    assert err.value.reason == "not_rgb"
    with pytest.raises(BadFrame) as err:
        letterbox_geometry(0, 10, 32)
    assert err.value.reason == "empty_image"


def test_cpu_and_device_resampling_agree():
    """One resampling: masks are restored by the same index gather on both sides (identical),
    and the host bilinear (OpenCV, fixed-point weights) stays within one grey level of the
    float bilinear the GPU lanes compute, written out here in NumPy."""
    from holoburn.processing.preprocess import nearest_indices, restore_mask

    rng = np.random.default_rng(3)
    square = rng.integers(0, 6, (64, 64)).astype(np.uint8)
    box = letterbox_geometry(1080, 1920, 64)
    mask = restore_mask(square, box)
    content = square[box.top : box.top + box.height, box.left : box.left + box.width]
    rows, cols = nearest_indices(np, box.height, 1080), nearest_indices(np, box.width, 1920)
    assert np.array_equal(mask, content[rows[:, None], cols[None, :]])

    frame = rng.integers(0, 256, (90, 160, 3)).astype(np.uint8)
    x, box = prepare_input(frame, 64, (0, 0, 0), (1, 1, 1))
    host = np.moveaxis(x[0, :, box.top : box.top + box.height, box.left : box.left + box.width], 0, 2)

    def axis(in_len, out_len):
        pos = np.clip((np.arange(out_len, dtype=np.float32) + 0.5) * (in_len / out_len) - 0.5, 0, in_len - 1)
        i0 = np.floor(pos).astype(np.int32)
        return i0, np.minimum(i0 + 1, in_len - 1), (pos - i0)

    y0, y1, wy = axis(90, box.height)
    x0, x1, wx = axis(160, box.width)
    f = frame.astype(np.float64)
    wy, wx = wy[:, None, None], wx[None, :, None]
    top = f[y0][:, x0] * (1 - wx) + f[y0][:, x1] * wx
    bottom = f[y1][:, x0] * (1 - wx) + f[y1][:, x1] * wx
    device_like = np.clip(np.floor(top * (1 - wy) + bottom * wy + 0.5), 0, 255)
    assert np.abs(host - device_like).max() <= 1.0
