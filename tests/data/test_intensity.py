"""Per-image intensity stretch: percentiles to 0/255, flat images untouched, bad settings named."""

from __future__ import annotations

import numpy as np
import pytest

from cellseg.data import NucleiDataModule
from cellseg.data.intensity import check_stretch, stretch_intensity
from cellseg.data.transforms import denormalise


def test_a_dim_image_is_stretched_to_the_full_range_keeping_its_order():
    rng = np.random.default_rng(0)
    dim = rng.integers(0, 12, size=(40, 50, 3)).astype(np.uint8)
    stretched = stretch_intensity(dim, (0.0, 100.0))
    assert stretched.dtype == np.uint8 and stretched.min() == 0 and stretched.max() == 255
    order = np.argsort(dim.ravel(), kind="stable")
    assert (np.diff(stretched.ravel()[order].astype(int)) >= 0).all()


def test_values_outside_the_percentiles_are_clipped():
    ramp = np.repeat(np.arange(100, dtype=np.uint8)[None, :, None], 3, axis=2)
    stretched = stretch_intensity(ramp, (10.0, 90.0))
    low, high = np.percentile(ramp, (10.0, 90.0))
    assert (stretched[ramp <= low] == 0).all() and (stretched[ramp >= high] == 255).all()
    assert 0 < stretched[0, 50, 0] < 255


def test_off_and_flat_images_are_returned_unchanged():
    image = np.full((8, 8, 3), 7, dtype=np.uint8)
    assert stretch_intensity(image, None) is image
    np.testing.assert_array_equal(stretch_intensity(image, (1.0, 99.8)), image)


@pytest.mark.parametrize("bad", [[99.8, 1.0], [1.0], [-1.0, 50.0], [1.0, 101.0]])
def test_bad_percentiles_name_the_key(bad):
    with pytest.raises(ValueError, match=r"data.stretch_percentiles"):
        check_stretch(bad)


def test_the_data_module_stretches_whole_images_and_refuses_bad_settings(sample_data):
    kwargs = dict(name="sample", root=str(sample_data), dataset="MoNuSegSample")
    plain = NucleiDataModule(**kwargs).whole_image_dataset("test", with_labels=False)[0]["image"]
    stretched = NucleiDataModule(**kwargs, stretch_percentiles=[1, 99.8]).whole_image_dataset("test", False)[0]["image"]
    np.testing.assert_array_equal(denormalise(stretched), stretch_intensity(denormalise(plain), (1.0, 99.8)))
    with pytest.raises(ValueError, match="stretch_percentiles"):
        NucleiDataModule(**kwargs, stretch_percentiles=[50, 10])


def test_training_images_are_stretched_once_when_loaded(sample_data):
    from cellseg.data.weak import FullLabels
    from cellseg.utils.io import read_image

    dm = NucleiDataModule(name="sample", root=str(sample_data), dataset="MoNuSegSample", weak_labels=FullLabels(),
                          stretch_percentiles=[2, 98])
    dm.configure_targets(lambda raw, kind, shape: (raw > 0).astype(np.uint8), ignore_index=255)
    dm.setup("fit")
    dataset = dm.train_dataloader().dataset
    first = read_image(dm.layout("train").image_path(dataset.ids[0]))
    np.testing.assert_array_equal(dataset.images[0], stretch_intensity(first, (2.0, 98.0)))
    assert not np.array_equal(dataset.images[0], first)
