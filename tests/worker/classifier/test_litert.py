"""The LiteRT runtime: a CPU worker serves the converted model with the Keras model's probabilities, keeps the
conversion in a cache, converts again when the cache is unreadable, and refuses a conversion that disagrees."""

import numpy as np
import pytest

from worker.classifier.artifacts import read_card
from worker.classifier.images import decode_image


def _images(tiny_dataset) -> list[np.ndarray]:
    return [decode_image(path.read_bytes(), 32) for path in sorted((tiny_dataset / "melanoma").iterdir())]


def test_a_cpu_worker_serves_the_litert_conversion_with_the_keras_probabilities(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(tiny_model[0])
    keras_run = Classifier(str(artifact), card["class_names"], 32, runtime="keras")
    served = Classifier(str(artifact), card["class_names"], 32, cache_dir=tmp_path)
    assert (keras_run.runtime, served.runtime) == ("keras", "litert")
    images = _images(tiny_dataset)
    np.testing.assert_allclose(served.predict(images), keras_run.predict(images), atol=1e-5)
    # Batches of another size re-plan the interpreter; a batch larger than batch_size is split.
    np.testing.assert_allclose(served.predict(images[:1]), keras_run.predict(images[:1]), atol=1e-5)
    np.testing.assert_allclose(served.predict(images * 3, batch_size=5), keras_run.predict(images * 3), atol=1e-5)
    assert served.predict([]).shape == (0, 9)


def test_the_conversion_is_cached_and_made_again_when_the_cache_is_unreadable(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(tiny_model[0])
    first = Classifier(str(artifact), card["class_names"], 32, runtime="litert", cache_dir=tmp_path)
    [cached] = tmp_path.glob("*.tflite")
    written = cached.stat().st_mtime_ns
    Classifier(str(artifact), card["class_names"], 32, runtime="litert", cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == written  # read, not converted again
    cached.write_bytes(b"half a file")
    again = Classifier(str(artifact), card["class_names"], 32, runtime="litert", cache_dir=tmp_path)
    assert again.runtime == "litert" and cached.stat().st_size > 10_000
    images = _images(tiny_dataset)
    np.testing.assert_allclose(again.predict(images), first.predict(images), atol=1e-6)


def test_a_conversion_that_disagrees_with_the_keras_model_is_never_served(tiny_dataset, tiny_model, tmp_path):
    import keras

    from worker.classifier import litert
    from worker.classifier.network import TemperatureScaling
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(tiny_model[0])
    # Another model's conversion where this one's belongs, as a wrong cache or a converter fault would give: the
    # same network far more confident (the one-epoch model itself is within 1e-4 of uniform, as a new one is).
    inputs = keras.Input((None, None, 3))
    outputs = TemperatureScaling(1e-5, name="sharpen")(keras.models.load_model(artifact, compile=False)(inputs))
    sharpened = keras.Model(inputs, outputs)
    litert.cache_path(tmp_path, card["artifact_sha256"]).write_bytes(litert.convert(sharpened))
    fallback = Classifier(str(artifact), card["class_names"], 32, runtime="auto", cache_dir=tmp_path)
    keras_run = Classifier(str(artifact), card["class_names"], 32, runtime="keras")
    assert fallback.runtime == "keras"
    images = _images(tiny_dataset)
    np.testing.assert_allclose(fallback.predict(images), keras_run.predict(images), rtol=1e-6)
    with pytest.raises(ValueError, match="differs from the Keras model"):
        Classifier(str(artifact), card["class_names"], 32, runtime="litert", cache_dir=tmp_path)


def test_an_unknown_runtime_is_refused_with_the_choices(tiny_model):
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(tiny_model[0])
    with pytest.raises(ValueError, match="choose one of"):
        Classifier(str(artifact), card["class_names"], 32, runtime="onnx")
