"""Reading the class-folder layout users have (a Train folder of class folders) into tf.data pipelines."""

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from worker.classifier.audit import AuditReport, DataDirs, audit, data_folders
from worker.classifier.images import decode_image

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    sha256: str
    source: str = "unknown"
    lesion: str = ""  # "" where unknown: the image is its own lesion

    @property
    def lesion_key(self) -> str:
        return self.lesion or self.sha256


@dataclass(frozen=True)
class Split:
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def list_examples(data_dirs: DataDirs, class_names: tuple[str, ...],
                  every_class: bool = True) -> tuple[list[Example], AuditReport]:
    """Audit DATA_DIR/<class name>/ (one folder or several, together) and list what may be trained on:
    conflicting labels excluded, exact and near duplicates collapsed to one image, so no picture can land on
    both sides of the split."""
    kept, report = audit(data_dirs, class_names, every_class=every_class)
    index = {name: label for label, name in enumerate(class_names)}
    return [Example(image.path, index[image.label], image.sha256, image.source, image.lesion)
            for image in kept], report


def list_with_extra(data_dirs: DataDirs, extra_dirs: DataDirs | None,
                    class_names: tuple[str, ...]) -> tuple[list[Example], list[Example], AuditReport]:
    """The examples of data_dirs exactly as they list alone, so their split never changes, and those of
    extra_dirs (the confirmed images) that are the same picture as none of them: audited all together, an extra
    image that duplicates or contradicts a base image is left out, never the base image."""
    base, report = list_examples(data_dirs, class_names)
    if not extra_dirs:
        return base, [], report
    roots = data_folders(extra_dirs)
    everything, report = list_examples([*data_folders(data_dirs), *roots], class_names)

    def is_extra(path: str) -> bool:
        return any(Path(path).is_relative_to(root) for root in roots)

    groups = [*report.exact_duplicate_groups, *report.near_duplicate_groups,
              *(conflict["paths"] for conflict in report.label_conflicts)]
    tied = {path for group in groups if not all(map(is_extra, group)) for path in group}
    return base, [e for e in everything if is_extra(e.path) and e.path not in tied], report


def split_examples(examples: list[Example], seed: int, validation_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> Split:
    """Stratified, seeded split: every class is divided in the same proportions, and every image of one
    lesion lands on one side (a lesion goes with its first image's class). Where each image is its own
    lesion, this is the plain stratified split of single images that earlier models were trained with."""
    rng = np.random.default_rng(seed)
    train, validation, test = [], [], []
    lesions: dict[str, list[Example]] = defaultdict(list)
    for example in sorted(examples, key=lambda e: e.sha256):
        lesions[example.lesion_key].append(example)
    by_label: dict[int, list[list[Example]]] = defaultdict(list)
    for members in lesions.values():  # in the order of each lesion's first image
        by_label[members[0].label].append(members)
    for label in sorted(by_label):
        units = by_label[label]
        images = sum(len(unit) for unit in units)
        order = rng.permutation(len(units))
        n_test = max(1, round(images * test_fraction))
        n_validation = max(1, round(images * validation_fraction))
        taken = 0
        for position in order:
            side = test if taken < n_test else validation if taken < n_test + n_validation else train
            side += units[position]
            taken += len(units[position])
    return Split(train, validation, test)


def dataset_hash(examples: list[Example]) -> str:
    """A fingerprint of the training data: the sorted content hashes with their labels."""
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e.sha256):
        digest.update(f"{example.sha256}:{example.label}\n".encode())
    return digest.hexdigest()


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    radius = 3
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(offsets ** 2) / (2.0 * tf.maximum(sigma, 1e-3) ** 2))
    kernel /= tf.reduce_sum(kernel)
    batch = image[None]
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, 3, 1])
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, 3, 1])
    batch = tf.nn.depthwise_conv2d(batch, horizontal, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(batch, vertical, [1, 1, 1, 1], "SAME")[0]


def augment_basic(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flips, right-angle rotations, brightness, contrast, saturation and a square crop of 80-100 %."""
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    image = tf.image.rot90(image, k=tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32))
    image = image / 255.0
    image = tf.image.stateless_random_brightness(image, 0.15, seeds[3])
    image = tf.image.stateless_random_contrast(image, 0.8, 1.2, seeds[4])
    image = tf.image.stateless_random_saturation(image, 0.8, 1.2, seeds[5])
    size = tf.shape(image)[0]
    scale = tf.random.stateless_uniform([], seeds[6], 0.8, 1.0)
    crop = tf.cast(tf.cast(size, tf.float32) * scale, tf.int32)
    image = tf.image.stateless_random_crop(image, tf.stack([crop, crop, 3]), seeds[6])
    image = tf.image.resize(image, (size, size))
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def augment_acquisition(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """What differs between hospitals and dermatoscopes, drawn at random: orientation, framing and aspect,
    colour cast, exposure, contrast, saturation, hue, vignetting, focus and JPEG compression."""
    seeds = tf.random.experimental.stateless_split(seed, num=14)

    def uniform(index: int, low: float, high: float, shape=()) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seeds[index], low, high)

    size = tf.shape(image)[0]
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    image = tf.image.rot90(image, k=tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32))
    # Framing and aspect: a box of 60-100 % of the area with aspect 3:4 to 4:3, stretched back to square.
    begin, box, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.zeros([1, 0, 4]), seeds[3], min_object_covered=0.0,
        aspect_ratio_range=(0.75, 1.33), area_range=(0.6, 1.0), use_image_if_no_bounding_boxes=True)
    image = tf.image.resize(tf.slice(image, begin, box), (size, size)) / 255.0
    image = image * uniform(4, 0.85, 1.15, [1, 1, 3])  # colour cast of another device's white balance
    image = tf.image.stateless_random_brightness(image, 0.15, seeds[5])
    image = tf.image.stateless_random_contrast(image, 0.75, 1.25, seeds[6])
    image = tf.image.stateless_random_saturation(image, 0.75, 1.25, seeds[7])
    image = tf.image.stateless_random_hue(tf.clip_by_value(image, 0.0, 1.0), 0.04, seeds[8])
    # Vignetting: some dermatoscopes darken the corners, some show a black circular rim.
    grid = tf.linspace(-1.0, 1.0, size)
    radius = (grid[None, :] ** 2 + grid[:, None] ** 2) / 2.0
    image = image * (1.0 - uniform(9, 0.0, 0.5) * radius)[..., None]
    image = tf.cond(uniform(10, 0.0, 1.0) < 0.3, lambda: _gaussian_blur(image, uniform(11, 0.3, 1.5)),
                    lambda: image)
    image = tf.clip_by_value(image, 0.0, 1.0)
    image = tf.cond(uniform(12, 0.0, 1.0) < 0.3,
                    lambda: tf.image.stateless_random_jpeg_quality(image, 30, 95, seeds[13]), lambda: image)
    return tf.reshape(tf.clip_by_value(image, 0.0, 1.0) * 255.0, (size, size, 3))


def read_images(examples: list[Example], input_size: int) -> np.ndarray:
    """Decode every example with the serving decoder, so training sees exactly what the worker sees."""
    return np.stack([decode_image(Path(example.path).read_bytes(), input_size) for example in examples])


def fourier_style_mix(images: tf.Tensor, seed: tf.Tensor, band: float = 0.05, probability: float = 0.5,
                      max_share: float = 0.6) -> tf.Tensor:
    """Gives images the look of other images in the batch, keeping their structure (Fourier domain
    adaptation, Yang & Soatto 2020; amplitude mix, Xu et al. 2021).

    The low-frequency amplitude spectrum carries what a dermatoscope and its lighting add (colour balance,
    exposure, uneven illumination, vignetting); the phase carries the lesion's structure. Each chosen image
    takes a random share of a partner's low-frequency amplitude, so the look of a source no longer comes
    with its classes and the network must find the lesion instead. Pixels in [0, 255], shape (B, S, S, 3).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    count, size = tf.shape(images)[0], tf.shape(images)[1]
    shift = tf.random.stateless_uniform([], seeds[0], 1, tf.maximum(count, 2), dtype=tf.int32)
    partners = tf.roll(tf.range(count), shift, axis=0)
    spectrum = tf.signal.fft2d(tf.complex(tf.transpose(images, [0, 3, 1, 2]), 0.0))
    amplitude, phase = tf.abs(spectrum), tf.math.angle(spectrum)
    index = tf.range(size)
    frequency = tf.cast(tf.minimum(index, size - index), tf.float32) / tf.cast(size, tf.float32)
    low = tf.cast((frequency[:, None] <= band) & (frequency[None, :] <= band), tf.float32)
    share = tf.random.stateless_uniform([count, 1, 1, 1], seeds[1], 0.0, max_share)
    chosen = tf.cast(tf.random.stateless_uniform([count, 1, 1, 1], seeds[2], 0.0, 1.0) < probability, tf.float32)
    mixed = amplitude + chosen * share * low * (tf.gather(amplitude, partners) - amplitude)
    pixels = tf.math.real(tf.signal.ifft2d(tf.complex(mixed * tf.cos(phase), mixed * tf.sin(phase))))
    return tf.clip_by_value(tf.transpose(pixels, [0, 2, 3, 1]), 0.0, 255.0)


def dermatoscope_rim(image: tf.Tensor, seed: tf.Tensor, probability: float = 0.2) -> tf.Tensor:
    """Sometimes the black round rim of a contact dermatoscope's window: off centre by up to 10 %, radius
    0.8-1.3 of the half width (the corners or more go black), with a soft edge. The collection has almost
    no such rims; a model that never saw one reads it as dark pigment (melanoma AUC 0.57-0.69 on rimmed
    pictures, three benign lesions in four alerting). Pixels in [0, 255]."""
    seeds = tf.random.experimental.stateless_split(seed, num=4)

    def uniform(index: int, low: float, high: float, shape=()) -> tf.Tensor:
        return tf.random.stateless_uniform(shape, seeds[index], low, high)

    size = tf.shape(image)[0]
    grid = tf.linspace(-1.0, 1.0, size)
    centre = uniform(0, -0.1, 0.1, [2])
    distance = tf.sqrt((grid[:, None] - centre[0]) ** 2 + (grid[None, :] - centre[1]) ** 2)
    radius, edge = uniform(1, 0.8, 1.3), uniform(2, 0.01, 0.1)
    rim = tf.clip_by_value((radius - distance) / edge, 0.0, 1.0)
    return tf.where(uniform(3, 0.0, 1.0) < probability, image * rim[..., None], image)


def augment_rim(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """augment_basic, then now and then a dermatoscope's rim (dermatoscope_rim)."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    return dermatoscope_rim(augment_basic(image, seeds[0]), seeds[1])


# basic: flips, rotations, photometric jitter, crops. rim: also a dermatoscope's round rim on a fifth of the
# images. acquisition: also framing, aspect, colour cast, hue, vignetting, blur and JPEG quality. Any may be
# followed by fourier_style_mix across the batch.
AUGMENTATIONS = {"basic": augment_basic, "rim": augment_rim, "acquisition": augment_acquisition}


def load_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, num_classes: int,
                 training: bool = False, seed: int = 0, augmentation: str = "basic",
                 style_mix: bool = False, sources: np.ndarray | None = None, num_sources: int = 0,
                 class_weight: np.ndarray | None = None) -> tf.data.Dataset:
    """A batched, prefetched dataset of (image, one-hot label); shuffled and augmented when training, and
    with style_mix each batch's images also trade their looks (fourier_style_mix).

    With sources (each image's source as an index below num_sources), for a classifier trained with a source
    adversary (network.with_source_adversary): ({"image", "diagnosis"}, {"probabilities", "source"}), the
    label one-hot in both, and with class_weight (a weight a class) each image's weight as a third part."""
    targets = tf.one_hot(labels, num_classes)
    if sources is not None:
        targets = (targets, tf.one_hot(sources, num_sources))
    dataset = tf.data.Dataset.from_tensor_slices((tf.cast(images, tf.float32), targets))
    if not training:
        dataset = dataset.batch(batch_size)
    else:
        augment = AUGMENTATIONS[augmentation]
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, counter)).map(
            lambda pair, random_seed: (augment(pair[0], random_seed), pair[1]), num_parallel_calls=AUTOTUNE,
        ).batch(batch_size)
        if style_mix:
            batch_counter = tf.data.Dataset.random(seed=seed + 1).batch(2)
            dataset = tf.data.Dataset.zip((dataset, batch_counter)).map(
                lambda pair, random_seed: (fourier_style_mix(pair[0], random_seed), pair[1]),
                num_parallel_calls=AUTOTUNE,
            )
    if sources is not None:
        weights = None if class_weight is None else tf.constant(class_weight, tf.float32)

        def adversarial(images, targets):
            diagnosis, source = targets
            element = ({"image": images, "diagnosis": diagnosis}, {"probabilities": diagnosis, "source": source})
            return element if weights is None else (*element, tf.reduce_sum(diagnosis * weights, axis=-1))

        dataset = dataset.map(adversarial, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
