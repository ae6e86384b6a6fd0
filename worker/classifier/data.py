"""Reading the class-folder layout users have (a Train folder of class folders) into tf.data pipelines."""

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from worker.classifier.audit import AuditReport, audit
from worker.classifier.images import decode_image

AUTOTUNE = tf.data.AUTOTUNE


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    sha256: str
    source: str = "unknown"


@dataclass(frozen=True)
class Split:
    train: list[Example]
    validation: list[Example]
    test: list[Example]


def list_examples(data_dir: str | Path, class_names: tuple[str, ...]) -> tuple[list[Example], AuditReport]:
    """Audit DATA_DIR/<class name>/ and list what may be trained on: conflicting labels excluded, exact and
    near duplicates collapsed to one image, so no picture can land on both sides of the split."""
    kept, report = audit(data_dir, class_names)
    index = {name: label for label, name in enumerate(class_names)}
    return [Example(image.path, index[image.label], image.sha256, image.source) for image in kept], report


def split_examples(examples: list[Example], seed: int, validation_fraction: float = 0.15,
                   test_fraction: float = 0.15) -> Split:
    """Stratified, seeded split: every class is divided in the same proportions."""
    rng = np.random.default_rng(seed)
    train, validation, test = [], [], []
    by_label: dict[int, list[Example]] = defaultdict(list)
    for example in sorted(examples, key=lambda e: e.sha256):
        by_label[example.label].append(example)
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_test = max(1, round(len(group) * test_fraction))
        n_validation = max(1, round(len(group) * validation_fraction))
        test += [group[i] for i in order[:n_test]]
        validation += [group[i] for i in order[n_test:n_test + n_validation]]
        train += [group[i] for i in order[n_test + n_validation:]]
    return Split(train, validation, test)


def dataset_hash(examples: list[Example]) -> str:
    """A fingerprint of the training data: the sorted content hashes with their labels."""
    digest = hashlib.sha256()
    for example in sorted(examples, key=lambda e: e.sha256):
        digest.update(f"{example.sha256}:{example.label}\n".encode())
    return digest.hexdigest()


def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Acquisition-style changes: flips, rotations, brightness, contrast, saturation, hue, scale."""
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


def read_images(examples: list[Example], input_size: int) -> np.ndarray:
    """Decode every example with the serving decoder, so training sees exactly what the worker sees."""
    return np.stack([decode_image(Path(example.path).read_bytes(), input_size) for example in examples])


def load_dataset(images: np.ndarray, labels: np.ndarray, batch_size: int, num_classes: int,
                 training: bool = False, seed: int = 0) -> tf.data.Dataset:
    """A batched, prefetched dataset of (image, one-hot label); shuffled and augmented when training."""
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)))
    if training:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.random(seed=seed).batch(2)
        dataset = tf.data.Dataset.zip((dataset, counter)).map(
            lambda pair, random_seed: (augment(pair[0], random_seed), pair[1]),
            num_parallel_calls=AUTOTUNE,
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
