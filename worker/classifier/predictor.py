"""The serving side of the CNN: load a saved model once, classify lists of images as one array."""

import logging
from pathlib import Path

import numpy as np

from worker.classifier import litert, network  # network also registers the custom layers for loading
from worker.classifier.artifacts import file_sha256, read_card
from worker.classifier.choices import RUNTIMES

log = logging.getLogger(__name__)

# The converted model must give the Keras model's probabilities to this much, or it is not served.
AGREEMENT = 1e-4


class Classifier:
    """A loaded `.keras` model with its class names and input size, run by the chosen runtime."""

    def __init__(self, artifact_path: str, class_names: list[str], input_size: int, runtime: str = "auto",
                 cache_dir: str | Path | None = None):
        import keras

        if runtime not in RUNTIMES:
            raise ValueError(f"unknown inference runtime {runtime!r}; choose one of {RUNTIMES}")
        self.model = network.for_inference(keras.models.load_model(artifact_path, compile=False))
        self.class_names = list(class_names)
        self.input_size = int(input_size)
        if self.model.output_shape[-1] != len(self.class_names):
            raise ValueError(
                f"{artifact_path} predicts {self.model.output_shape[-1]} classes but its card names "
                f"{len(self.class_names)}; the card does not belong to this model"
            )
        self._forward = compiled_forward(self.model)
        self.runtime = "keras"
        if chosen_runtime(runtime) == "litert":
            self._use_litert(artifact_path, cache_dir, required=runtime == "litert")

    def _use_litert(self, artifact_path: str, cache_dir: str | Path | None, required: bool) -> None:
        """Switch to the converted model, once it has shown it gives the Keras model's probabilities."""
        import keras

        if keras.backend.backend() != "tensorflow" or not litert.available():
            raise ValueError("the litert runtime needs the TensorFlow backend and the ai-edge-litert package; "
                             "install them or set INFERENCE_RUNTIME=keras")
        lite = litert.load(self.model, file_sha256(Path(artifact_path)), cache_dir)
        # Pictures with a black corner, as a dermatoscope's rim gives, so every preprocessing branch runs.
        probe = np.random.default_rng(0).uniform(0, 255, (2, self.input_size, self.input_size, 3))
        probe[0, : self.input_size // 4, : self.input_size // 4] = 0
        probe = probe.astype(np.float32)
        difference = float(np.abs(lite(probe) - np.asarray(self._forward(probe))).max())
        if difference > AGREEMENT:
            message = (f"the LiteRT conversion of {artifact_path} differs from the Keras model by {difference:.2g} "
                       "in probability")
            if required:
                raise ValueError(f"{message}; set INFERENCE_RUNTIME=keras to serve it with Keras")
            log.error("%s; serving it with Keras instead", message)
            return
        self._forward, self.runtime = lite, "litert"

    def predict(self, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per image; images are uint8 arrays already at input size."""
        if not images:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        stacked = np.stack(images).astype(np.float32)
        outputs = [np.asarray(self._forward(stacked[start:start + batch_size]))
                   for start in range(0, len(stacked), batch_size)]
        return np.concatenate(outputs)


def compiled_forward(model):
    """The Keras model as one graph for every batch size: eager calls run a deep network op by op, and
    Keras' own predict functions retrace for each new batch size (seconds each, mid-batch)."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(lambda images: model(images, training=False),
                           input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    return model.predict_on_batch


def chosen_runtime(runtime: str) -> str:
    """The runtime a setting means here: "auto" is LiteRT with the TensorFlow backend, ai-edge-litert
    installed and no GPU, else Keras."""
    if runtime != "auto":
        return runtime
    import keras

    if keras.backend.backend() != "tensorflow" or not litert.available():
        return "keras"
    import tensorflow as tf

    return "keras" if tf.config.list_physical_devices("GPU") else "litert"


def load_classifier(model_dir: str | Path, runtime: str = "auto",
                    cache_dir: str | Path | None = None) -> tuple[dict, Classifier]:
    """The card and classifier of a model directory, its artifact checked against the card's hash; runtime and
    cache_dir as for Classifier (the callers pass the INFERENCE_RUNTIME and MODEL_CACHE_DIR settings)."""
    card, artifact = read_card(model_dir)
    return card, Classifier(str(artifact), card["class_names"], card["input_size"], runtime=runtime,
                            cache_dir=cache_dir)
