"""The serving side of the CNN: load a saved model once, classify lists of images as one array."""

import numpy as np

from worker.classifier import network  # also registers the custom layers for loading


class Classifier:
    """A loaded `.keras` model with its class names and input size."""

    def __init__(self, artifact_path: str, class_names: list[str], input_size: int):
        import keras

        self.model = network.for_inference(keras.models.load_model(artifact_path, compile=False))
        self.class_names = list(class_names)
        self.input_size = int(input_size)
        self._forward = self._compile_forward()
        if self.model.output_shape[-1] != len(self.class_names):
            raise ValueError(
                f"{artifact_path} predicts {self.model.output_shape[-1]} classes but its card names "
                f"{len(self.class_names)}; the card does not belong to this model"
            )

    def _compile_forward(self):
        """One graph for every batch size: eager calls run a deep network op by op, and Keras' own
        predict functions retrace for each new batch size (seconds each, mid-batch)."""
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return tf.function(lambda images: self.model(images, training=False),
                               input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        return self.model.predict_on_batch

    def predict(self, images: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, one row per image; images are uint8 arrays already at input size."""
        if not images:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        stacked = np.stack(images).astype(np.float32)
        outputs = [np.asarray(self._forward(stacked[start:start + batch_size]))
                   for start in range(0, len(stacked), batch_size)]
        return np.concatenate(outputs)
