"""Tiled dense prediction: stitched output equals the untiled one for pointwise models; full coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellseg.inference.tiler import predict_tiled, predict_tiled_multiscale, taper_window, tile_grid

torch.set_num_threads(1)


def _pointwise(batch: torch.Tensor) -> torch.Tensor:
    """A fixed per-pixel 'model': softmax over channels of (x, 2x, -x), so K = 3 C channels."""
    return torch.softmax(torch.cat([batch, 2 * batch, -batch], dim=1), dim=1)


class _RecordingModel:
    """Pointwise model that records tile shapes and refuses sizes that are not multiples of 32."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        assert batch.shape[-2] % 32 == 0 and batch.shape[-1] % 32 == 0, batch.shape
        self.shapes.append(tuple(batch.shape))
        return _pointwise(batch)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (1, 1, 64, 16),  # one pixel
        (20, 30, 64, 16),  # smaller than a tile
        (64, 64, 64, 16),  # exactly one tile
        (128, 128, 64, 16),  # exact multiple
        (97, 131, 64, 16),  # odd sizes
        (50, 200, 64, 32),  # small in one axis, tiled in the other
        (600, 530, 512, 128),  # defaults
    ],
)
def test_stitched_equals_untiled_for_pointwise_model(height, width, tile, overlap):
    image = torch.randn(2, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))
    model = _RecordingModel()
    stitched = predict_tiled(model, image, tile=tile, overlap=overlap, batch_size=3)
    expected = _pointwise(image[None])[0].numpy()
    assert stitched.dtype == np.float32
    assert stitched.shape == expected.shape == (6, height, width)
    np.testing.assert_allclose(stitched, expected, rtol=0, atol=1e-6)
    n_tiles = sum(shape[0] for shape in model.shapes)
    assert n_tiles == len(tile_grid(height, width, tile, overlap).origins)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (20, 30), (64, 64), (65, 64), (97, 131), (300, 257)])
def test_tile_grid_covers_every_pixel_with_flush_last_tile(height, width):
    tile, overlap = 64, 16
    grid = tile_grid(height, width, tile=tile, overlap=overlap)
    coverage = np.zeros(grid.padded_shape, dtype=int)
    for rows, cols in grid.windows():
        assert rows.stop <= grid.padded_shape[0] and cols.stop <= grid.padded_shape[1]
        coverage[rows, cols] += 1
    assert (coverage[:height, :width] >= 1).all()
    for axis, length in enumerate((height, width)):
        size = grid.tile_shape[axis]
        starts = sorted({origin[axis] for origin in grid.origins})
        assert size % 32 == 0 and (size == tile or length <= tile)
        assert starts[0] == 0 and starts[-1] + size == max(length, size)  # last tile flush with the border
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_taper_window_is_strictly_positive_and_symmetric():
    window = taper_window((64, 96), overlap=16)
    assert window.min() > 0 and window.max() == pytest.approx(1.0)
    np.testing.assert_allclose(window, window[::-1, ::-1], atol=1e-7)
    assert window[32, 48] == pytest.approx(1.0) and window[0, 48] < 0.05
    assert (taper_window((64, 64), overlap=16, taper="none") == 1).all()
    with pytest.raises(ValueError, match="taper"):
        taper_window((8, 8), 2, taper="gaussian")


def test_hflip_averages_with_the_mirrored_prediction_mirrored_back():
    def column_ramp(batch: torch.Tensor) -> torch.Tensor:
        # Depends on the column inside the tile: not flip-equivariant.
        width = batch.shape[-1]
        ramp = torch.arange(width, dtype=torch.float32) / width
        return ramp.expand(batch.shape[0], 1, *batch.shape[-2:]).clone()

    image = torch.zeros(1, 32, 32)
    plain = predict_tiled(column_ramp, image, tile=64, overlap=16)
    assert plain[0, 0, 5] == pytest.approx(5 / 32)
    averaged = predict_tiled(column_ramp, image, tile=64, overlap=16, hflip=True)
    np.testing.assert_allclose(averaged, 31 / 64, atol=1e-7)  # (j + (31 - j)) / (2 * 32)


def test_hflip_keeps_a_flip_equivariant_model_unchanged_and_batch_size_is_irrelevant():
    image = torch.randn(3, 97, 131, generator=torch.Generator().manual_seed(0))
    one = predict_tiled(_pointwise, image, tile=64, overlap=16, batch_size=1, hflip=True)
    many = predict_tiled(_pointwise, image, tile=64, overlap=16, batch_size=5)
    np.testing.assert_allclose(one, many, atol=1e-6)


def test_numpy_input_and_errors():
    image = np.random.default_rng(0).normal(size=(1, 40, 40)).astype(np.float32)
    np.testing.assert_allclose(
        predict_tiled(_pointwise, image, tile=64, overlap=16),
        _pointwise(torch.from_numpy(image)[None])[0],
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="predict_fn returned"):
        predict_tiled(lambda b: b[:, :, :-1], image, tile=64, overlap=16)
    with pytest.raises(ValueError, match="multiple of pad_multiple"):
        predict_tiled(_pointwise, image, tile=50, overlap=16)
    with pytest.raises(ValueError, match="overlap"):
        predict_tiled(_pointwise, image, tile=64, overlap=64)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        predict_tiled(_pointwise, image[0], tile=64, overlap=16)


def test_multiscale_of_one_scale_is_predict_tiled_and_scales_average_in_order():
    image = torch.randn(2, 97, 131, generator=torch.Generator().manual_seed(1))
    single = predict_tiled(_pointwise, image, tile=64, overlap=16)
    np.testing.assert_array_equal(predict_tiled_multiscale(_pointwise, image, [1.0], tile=64, overlap=16), single)
    # a pointwise model commutes with bilinear resizing only approximately; identical factors average exactly
    np.testing.assert_array_equal(predict_tiled_multiscale(_pointwise, image, [1.0, 1.0], tile=64, overlap=16),
                                  (torch.from_numpy(single) * 2 / 2).numpy())
    half = torch.nn.functional.interpolate(image[None], scale_factor=0.5, mode="bilinear", align_corners=False)[0]
    back = torch.nn.functional.interpolate(torch.from_numpy(predict_tiled(_pointwise, half, tile=64, overlap=16))[None],
                                           size=(97, 131), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(predict_tiled_multiscale(_pointwise, image, [0.5, 1.0], tile=64, overlap=16),
                               ((back + torch.from_numpy(single)) / 2).numpy(), atol=1e-6)
    for bad in ([], [0.0], [1.0, -0.5], None):
        with pytest.raises(ValueError, match="positive resize factors"):
            predict_tiled_multiscale(_pointwise, image, bad, tile=64, overlap=16)
