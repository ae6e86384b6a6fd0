"""How far a hospital's images lie from those a model was trained on, measured in the model's own features.

The features are what the classifier's last layer reads: the pooled output of the network. Training keeps a
reference beside the artifact: the main directions of its training images' features and a sample of its
training and validation images in those directions. A hospital's recent images are measured against that
sample by a two-sample classifier test: a logistic regression learns to tell the two apart, and its
cross-validated AUC is the shift. About 0.5 means the model cannot tell the hospital's pictures from its own
(another sample of the test split scored 0.45-0.55 for 100-200 images); near 1 means they are unlike anything
it learned from: a new dermatoscope, another population, another way of framing the lesion (two hospitals the
shipped model never saw scored 0.80-0.86; docs/benchmarks.md).
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE_NAME = "shift.npz"
COMPONENTS = 32
SAMPLE = 400
FOLDS = 5
# The classifier's last layer, whose input the features are (network.make_model names it so).
HEAD = "probabilities"


def feature_model(model):
    """The network giving its features (where the last Dense layer reads) and its probabilities: the same chain
    of layers, with the tensor before the head as a second output."""
    import keras

    names = [layer.name for layer in model.layers]
    if HEAD not in names:
        raise ValueError(f"the model has no {HEAD!r} layer, so it has no features to measure a shift on")
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    for layer in model.layers[1:]:  # a chain: each layer takes the one before it
        if layer.name == HEAD:
            features = x
        x = layer(x)
    return keras.Model(inputs, [features, x], name="features")


def features(model, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The features of uint8 images already at input size, one row per image, and the class each is predicted."""
    if not len(images):
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=int)
    rows, probabilities = feature_model(model).predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(rows), np.asarray(probabilities).argmax(axis=1)


@dataclass
class Reference:
    mean: np.ndarray        # (D,) of the training features
    components: np.ndarray  # (k, D) their main directions, orthonormal
    scales: np.ndarray      # (k,) the training spread along each
    sample: np.ndarray      # (n, k) training and validation images along them, divided by the scales
    sample_classes: np.ndarray  # (n,) the class the model predicts for each

    @classmethod
    def fit(cls, train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
            components: int = COMPONENTS, sample: int = SAMPLE) -> "Reference":
        """From (features, predicted classes) of training and validation images: the main directions of the
        training features; the sample is every validation image (features the network never fitted, as a new
        hospital's like the training data would be) topped up with evenly spaced training images."""
        (train, train_classes), (validation, validation_classes) = train, validation
        if len(train) < 3:
            raise ValueError("a shift reference needs at least 3 training images")
        train = np.asarray(train, dtype=np.float64)
        mean = train.mean(axis=0)
        _, singular, directions = np.linalg.svd(train - mean, full_matrices=False)
        k = max(1, min(components, len(train) - 2))
        scales = np.maximum(singular[:k] / np.sqrt(len(train) - 1), 1e-6)
        reference = cls(mean, directions[:k], scales, np.zeros((0, k)), np.zeros(0, dtype=int))
        validation, validation_classes = validation[:sample], validation_classes[:sample]
        topped = _spaced(len(train), max(0, sample - len(validation)))
        reference.sample = reference.project(np.concatenate([validation, train[topped]]))
        reference.sample_classes = np.concatenate([validation_classes, train_classes[topped]]).astype(int)
        return reference

    def project(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) @ self.components.T / self.scales

    def shift_auc(self, features: np.ndarray, classes: np.ndarray) -> float:
        """The cross-validated AUC of a logistic regression telling these images from the reference sample.

        The reference images are weighted so that their predicted classes come in the proportions of these
        images' (a clinic sending mostly nevi is not, by that alone, far from the training images): what is
        left is how the pictures differ within a diagnosis."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold

        if len(features) < FOLDS:
            raise ValueError(f"a shift needs at least {FOLDS} images")
        points = np.concatenate([self.sample, self.project(features)])
        sides = np.r_[np.zeros(len(self.sample)), np.ones(len(features))]
        classes = np.asarray(classes, dtype=int)
        count = int(max(self.sample_classes.max(), classes.max())) + 1
        reference_share = np.bincount(self.sample_classes, minlength=count) / len(self.sample)
        share = np.bincount(classes, minlength=count) / len(classes)
        weights = np.ones(len(sides))
        weights[:len(self.sample)] = np.divide(share, reference_share, out=np.zeros(count),
                                               where=reference_share > 0)[self.sample_classes]
        scores = np.zeros(len(sides))
        for fitted, held in StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(points, sides):
            regression = LogisticRegression(C=0.1, max_iter=2000)
            regression.fit(points[fitted], sides[fitted], sample_weight=weights[fitted])
            scores[held] = regression.predict_proba(points[held])[:, 1]
        return round(float(roc_auc_score(sides, scores, sample_weight=weights)), 4)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                 scales=self.scales, sample=self.sample.astype(np.float32), sample_classes=self.sample_classes)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, content: bytes) -> "Reference":
        with np.load(io.BytesIO(content)) as stored:
            return cls(*(stored[name].astype(np.float64) for name in ("mean", "components", "scales", "sample")),
                       stored["sample_classes"].astype(int))


def _spaced(length: int, count: int) -> np.ndarray:
    """At most count indices of range(length), evenly spaced."""
    return np.linspace(0, length - 1, min(count, length)).astype(int) if length and count else np.zeros(0, int)


def write_reference(model_dir: str | Path, model, train_images: np.ndarray, validation_images: np.ndarray,
                    limit: int = 2000) -> dict:
    """Fit the reference on the model's features of its training and validation images (at most `limit`
    training images, evenly spaced), write it into the model directory and return the card's entry for it."""
    reference = Reference.fit(features(model, train_images[_spaced(len(train_images), limit)]),
                              features(model, validation_images[:SAMPLE]))
    content = reference.to_bytes()
    (Path(model_dir) / REFERENCE_NAME).write_bytes(content)
    return {"file": REFERENCE_NAME, "sha256": hashlib.sha256(content).hexdigest(),
            "components": int(len(reference.scales)), "sample": int(len(reference.sample))}


def read_reference(model_dir: str | Path, entry: dict) -> Reference:
    """The reference a card names, checked against its hash."""
    content = (Path(model_dir) / entry["file"]).read_bytes()
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        raise ValueError(f"{Path(model_dir) / entry['file']} does not match the hash its card records")
    return Reference.from_bytes(content)


def training_split(card: dict, data_dirs):
    """The split a model was trained with, rebuilt from the folders it was trained on; refused when they no
    longer hold that data (the card's hash)."""
    from worker.classifier import data
    from worker.classifier.choices import CLASS_NAMES

    base, _ = data.list_examples(data_dirs, CLASS_NAMES)
    trained_on = card["training"].get("split_data_sha256", card["training"]["data_sha256"])
    if data.dataset_hash(base) != trained_on:
        raise ValueError("these folders do not hold the images the model was split and trained on (their hash "
                         "differs from the card's); give the folders it was trained on")
    return data.split_examples(base, seed=card["training"]["seed"])


def load_model(artifact: Path):
    """The saved classifier as the workers run it."""
    import keras

    from worker.classifier import network  # registers the custom layers for loading

    return network.for_inference(keras.models.load_model(artifact, compile=False))


def add_reference(model_dir: str | Path, data_dirs) -> dict:
    """Write the reference of a model trained before training wrote one, from the training and validation split
    of the folders it was trained on, and add it to its card."""
    import json

    from worker.classifier import data
    from worker.classifier.artifacts import CARD_NAME, read_card

    card, artifact = read_card(model_dir)
    if card.get("shift"):
        raise ValueError(f"{model_dir} has a shift reference already ({card['shift']['file']})")
    split = training_split(card, data_dirs)
    card["shift"] = write_reference(model_dir, load_model(artifact), data.read_images(split.train, card["input_size"]),
                                    data.read_images(split.validation, card["input_size"]))
    (Path(model_dir) / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return card["shift"]
