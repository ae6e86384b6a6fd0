"""EfficientNet-Lite0 weights read from the legacy PyTorch file land in the right Keras layers."""

import subprocess
import sys

import numpy as np
import pytest

from worker.classifier.backbones import (
    efficientnet_lite,
    fold_batch_norm,
    imagenet_weights_file,
    load_imagenet_weights,
)
from worker.classifier.torch_legacy import load_state_dict


@pytest.fixture(scope="module")
def state():
    return load_state_dict(imagenet_weights_file())


def _same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """TensorFlow's SAME padding (more at the bottom/right), as the Lite checkpoints were trained with."""
    size = x.shape[0]
    total = max((int(np.ceil(size / stride)) - 1) * stride + kernel - size, 0)
    before = total // 2
    return np.pad(x, ((before, total - before), (before, total - before), (0, 0)))


def _conv(x, weight, stride):  # weight: torch layout (out, in, k, k)
    kernel = weight.shape[-1]
    padded = _same_pad(x, kernel, stride)
    size = int(np.ceil(x.shape[0] / stride))
    out = np.zeros((size, size, weight.shape[0]))
    for i in range(kernel):
        for j in range(kernel):
            patch = padded[i:i + stride * size:stride, j:j + stride * size:stride]
            out += patch @ weight[:, :, i, j].T
    return out


def _depthwise(x, weight, stride):  # weight: (channels, 1, k, k)
    kernel = weight.shape[-1]
    padded = _same_pad(x, kernel, stride)
    size = int(np.ceil(x.shape[0] / stride))
    out = np.zeros((size, size, x.shape[-1]))
    for i in range(kernel):
        for j in range(kernel):
            out += padded[i:i + stride * size:stride, j:j + stride * size:stride] * weight[:, 0, i, j]
    return out


def _bn(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def test_legacy_file_reads_every_lite0_parameter(state):
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(value).all() for value in state.values() if value.dtype.kind == "f")


def test_converted_layers_compute_what_the_pytorch_layers_compute(state):
    import keras

    backbone = efficientnet_lite("efficientnet_lite0", 32)
    load_imagenet_weights(backbone, state)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)

    x = (pixels - 127.0) / 128.0
    x = np.clip(_bn(_conv(x, state["_conv_stem.weight"], 2), state, "_bn0"), 0, 6)
    x = np.clip(_bn(_depthwise(x, state["_blocks.0._depthwise_conv.weight"], 1), state, "_blocks.0._bn1"), 0, 6)
    x = _bn(_conv(x, state["_blocks.0._project_conv.weight"], 1), state, "_blocks.0._bn2")
    x = np.clip(_bn(_conv(x, state["_blocks.1._expand_conv.weight"], 1), state, "_blocks.1._bn0"), 0, 6)
    expected = np.clip(_bn(_depthwise(x, state["_blocks.1._depthwise_conv.weight"], 2), state,
                           "_blocks.1._bn1"), 0, 6)

    probe = keras.Model(backbone.input, backbone.get_layer("block1_depthwise_relu").output)
    actual = np.asarray(probe(pixels[None]))[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-3, atol=1e-3)


def test_folding_batch_norm_keeps_the_outputs_and_drops_the_normalisation_layers(state):
    import keras

    backbone = efficientnet_lite("efficientnet_lite0", 64)
    load_imagenet_weights(backbone, state)  # ImageNet statistics: far from the identity
    folded = fold_batch_norm(backbone)
    assert not [layer for layer in folded.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len([layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]) == 49
    pixels = np.random.default_rng(1).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    expected = np.asarray(backbone(pixels, training=False))
    assert np.abs(expected).max() > 1.0
    np.testing.assert_allclose(np.asarray(folded(pixels, training=False)), expected, rtol=1e-4, atol=1e-4)


def test_a_saved_lite0_classifier_is_served_folded_with_the_same_probabilities(state, tmp_path):
    import keras

    from worker.classifier.network import calibrated, make_model
    from worker.classifier.predictor import Classifier

    model = make_model(input_size=64, backbone="efficientnet_lite0", colour="field-standardise")
    load_imagenet_weights(model.get_layer("efficientnet_lite0"), state)
    calibrated(model, temperature=1.7).save(tmp_path / "model.keras")
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    classifier = Classifier(str(tmp_path / "model.keras"), [f"class {index}" for index in range(9)], 64)
    served = classifier.model.get_layer("efficientnet_lite0")
    assert not [layer for layer in served.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert classifier.model.get_layer("calibration").temperature == 1.7
    images = np.random.default_rng(2).uniform(0, 255, (3, 64, 64, 3)).astype(np.uint8)
    images[0, :8, :8] = 0  # a black corner: the field-of-view standardisation comes through the reload too
    expected = np.asarray(saved(images.astype(np.float32), training=False))
    np.testing.assert_allclose(classifier.predict(list(images)), expected, rtol=1e-4, atol=1e-6)
    # A worker imports only the predictor, never this test's modules: it must still find every layer.
    loaded = subprocess.run([sys.executable, "-c", "from worker.classifier.predictor import Classifier; "
                             f"Classifier({str(tmp_path / 'model.keras')!r}, ['c'] * 9, 64)"],
                            capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]


def test_lite1_takes_its_own_weights_and_is_served_folded_with_the_same_probabilities(state, tmp_path):
    import keras

    from worker.classifier.network import calibrated, make_model
    from worker.classifier.predictor import Classifier

    lite1 = load_state_dict(imagenet_weights_file("efficientnet_lite1"))
    model = make_model(input_size=64, backbone="efficientnet_lite1")
    backbone = model.get_layer("efficientnet_lite1")
    with pytest.raises(ValueError, match="16 blocks"):  # Lite0's weights do not fit Lite1's deeper stages
        load_imagenet_weights(backbone, state)
    load_imagenet_weights(backbone, lite1)
    np.testing.assert_array_equal(backbone.get_layer("block20_project").get_weights()[0],
                                  lite1["_blocks.20._project_conv.weight"].transpose(2, 3, 1, 0))
    calibrated(model, temperature=1.3).save(tmp_path / "model.keras")
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    classifier = Classifier(str(tmp_path / "model.keras"), [f"class {index}" for index in range(9)], 64)
    served = classifier.model.get_layer("efficientnet_lite1")
    assert not [layer for layer in served.layers if isinstance(layer, keras.layers.BatchNormalization)]
    images = np.random.default_rng(3).uniform(0, 255, (3, 64, 64, 3)).astype(np.uint8)
    expected = np.asarray(saved(images.astype(np.float32), training=False))
    np.testing.assert_allclose(classifier.predict(list(images)), expected, rtol=1e-4, atol=1e-6)


def test_lite1_weights_do_not_load_into_lite0():
    backbone = efficientnet_lite("efficientnet_lite0", 32)
    with pytest.raises(ValueError, match="21 blocks"):
        load_imagenet_weights(backbone, load_state_dict(imagenet_weights_file("efficientnet_lite1")))
