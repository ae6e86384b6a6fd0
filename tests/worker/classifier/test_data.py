"""The training pipeline: augmentations, style mix and the dermatoscope rim."""


import numpy as np
import pytest


@pytest.mark.parametrize("name", ["basic", "rim", "acquisition"])
def test_augmentation_is_seeded_keeps_shape_and_range_and_changes_the_picture(name):
    import tensorflow as tf

    from worker.classifier.data import AUGMENTATIONS

    augment = AUGMENTATIONS[name]
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.float32)
    image = tf.constant(pixels)
    first = augment(image, tf.constant([1, 2], tf.int64)).numpy()
    again = augment(image, tf.constant([1, 2], tf.int64)).numpy()
    other = augment(image, tf.constant([3, 4], tf.int64)).numpy()
    assert first.shape == (64, 64, 3) and 0.0 <= first.min() and first.max() <= 255.0
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_style_mix_moves_colour_and_lighting_between_images_and_keeps_the_structure():
    import tensorflow as tf

    from worker.classifier.data import fourier_style_mix

    rng = np.random.default_rng(0)
    pattern = rng.uniform(0, 1, (64, 64, 1)) > 0.5
    reddish = np.where(pattern, [200.0, 90.0, 80.0], [230.0, 170.0, 160.0]).astype(np.float32)
    bluish = np.where(~pattern, [60.0, 90.0, 170.0], [120.0, 140.0, 210.0]).astype(np.float32)
    batch = tf.constant(np.stack([reddish, bluish]))
    mixed = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=1.0).numpy()
    again = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=1.0).numpy()
    np.testing.assert_array_equal(mixed, again)
    assert mixed.shape == (2, 64, 64, 3) and mixed.min() >= 0.0 and mixed.max() <= 255.0
    # Each image's blue channel moves toward the other's, by a random share: never away, and clearly on average...
    moves = []
    for seed in range(6):
        mixed_again = fourier_style_mix(batch, tf.constant([seed, 1], tf.int64), probability=1.0).numpy()
        moves.append([mixed_again[0, ..., 2].mean() - reddish[..., 2].mean(),
                      bluish[..., 2].mean() - mixed_again[1, ..., 2].mean()])
    assert np.min(moves) > -0.5 and np.mean(moves) > 5
    # ...while each keeps its own pattern of light and dark cells.
    for index, original in enumerate((reddish, bluish)):
        assert np.corrcoef(mixed[index, ..., 0].ravel(), original[..., 0].ravel())[0, 1] > 0.9
    untouched = fourier_style_mix(batch, tf.constant([5, 6], tf.int64), probability=0.0).numpy()
    np.testing.assert_allclose(untouched, batch.numpy(), atol=0.05)


def test_dermatoscope_rim_blackens_outside_a_round_window_of_several_sizes():
    import tensorflow as tf

    from worker.classifier.data import dermatoscope_rim

    image = tf.fill((64, 64, 3), 200.0)
    rims = [dermatoscope_rim(image, tf.constant([seed, 0], tf.int64), 1.0).numpy() for seed in range(8)]
    for rimmed in rims:
        assert rimmed[0, 0].max() == 0.0 and rimmed[-1, -1].max() == 0.0  # the corners are outside
        np.testing.assert_array_equal(rimmed[28:36, 28:36], 200.0)  # the lesion in the centre is not
    assert len({float(rimmed.mean()) for rimmed in rims}) > 1
    untouched = dermatoscope_rim(image, tf.constant([1, 0], tf.int64), 0.0).numpy()
    np.testing.assert_array_equal(untouched, image.numpy())


def _examples(lesions: bool) -> list:
    from worker.classifier.data import Example

    rng = np.random.default_rng(4)
    examples = []
    for index in range(90):
        label = index % 3
        lesion = f"L{index // 3 * 3 + label}" if lesions and index % 2 else ""  # some lesions with 2+ images
        examples.append(Example(f"{index}.jpg", label, f"{rng.integers(1 << 62):064x}", "s", lesion))
    return examples


def test_every_image_of_a_lesion_lands_on_one_side_of_the_split():
    from worker.classifier.data import split_examples

    examples = _examples(lesions=True)
    for seed in range(5):
        split = split_examples(examples, seed=seed)
        sides = {}
        for side, part in (("train", split.train), ("validation", split.validation), ("test", split.test)):
            for example in part:
                assert sides.setdefault(example.lesion_key, side) == side, (seed, example)
        assert sorted(e.path for e in split.train + split.validation + split.test) == sorted(e.path for e in examples)
        assert split.test and split.validation


def test_with_each_image_its_own_lesion_the_split_is_the_plain_stratified_one_models_were_trained_with():
    """The split before lesions were known: so the shipped models' test splits stay what their cards say."""
    from collections import defaultdict

    from worker.classifier.data import split_examples

    examples = _examples(lesions=False)
    rng, expected = np.random.default_rng(7), {"train": [], "validation": [], "test": []}
    by_label = defaultdict(list)
    for example in sorted(examples, key=lambda e: e.sha256):
        by_label[example.label].append(example)
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_test, n_validation = max(1, round(len(group) * 0.15)), max(1, round(len(group) * 0.15))
        expected["test"] += [group[i] for i in order[:n_test]]
        expected["validation"] += [group[i] for i in order[n_test:n_test + n_validation]]
        expected["train"] += [group[i] for i in order[n_test + n_validation:]]
    split = split_examples(examples, seed=7)
    assert (split.train, split.validation, split.test) == (expected["train"], expected["validation"], expected["test"])
