"""The CNN: a Keras Functional model whose preprocessing lives inside it.

Resizing, rescaling and colour constancy sit in the graph, so the served model takes any image as
stored and serving can never drift from training.
"""

import keras
from keras import layers, ops

from worker.classifier.backbones import STAGES, efficientnet_lite, fold_batch_norm, has_batch_norm
from worker.classifier.choices import BACKBONES, CLASS_NAMES, COLOUR_NORMALISATIONS, DEFAULT_INPUT_SIZE
from worker.classifier.quality import FIELD_CENTRE, FIELD_DARKNESS

# Faster than the 0.99 default: with ~50 steps an epoch the moving statistics must settle within one.
BN_MOMENTUM = 0.9


def _power(x, exponent: float):
    """x ** exponent, by repeated multiplication where the exponent is a whole number: a general power
    is about five times slower on a CPU, and this one runs over every pixel of every image served."""
    if not float(exponent).is_integer() or not 1 <= exponent <= 64:
        return ops.power(x, exponent)
    remaining, base, result = int(exponent), x, None
    while remaining:
        if remaining & 1:
            result = base if result is None else result * base
        remaining >>= 1
        if remaining:
            base = base * base
    return result


@keras.saving.register_keras_serializable(package="melanoma")
class ShadesOfGrey(layers.Layer):
    """Shades-of-grey colour constancy: divides each channel by its Minkowski p-norm mean.

    Dermatoscopes differ in white balance; this removes a per-image colour cast so the network sees
    the lesion rather than the device. Expects pixels in [0, 1] and returns them roughly in [0, 1].
    """

    def __init__(self, power: float = 6.0, **kwargs):
        super().__init__(**kwargs)
        self.power = power

    def call(self, images):
        epsilon = 1e-6
        illuminant = ops.power(
            ops.mean(_power(images + epsilon, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power
        )
        grey = ops.mean(illuminant, axis=-1, keepdims=True)
        balanced = images * grey / (illuminant + epsilon)
        return ops.clip(balanced, 0.0, 1.0)

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package="melanoma")
class ChannelStandardisation(layers.Layer):
    """Gives every image the same per-channel mean and spread: a stronger colour constancy than shades of
    grey, which also removes another device's exposure and contrast. What stays is how the lesion differs
    from the skin around it. Expects pixels in [0, 1]; returns mean 0.5 and two spreads either side in [0, 1].

    With field_only, the mean and spread come from the dermatoscope's field of view: pixels darker than
    FIELD_DARKNESS in every channel and outside the central disc (FIELD_CENTRE of the half width: where a
    round window's black rim lies) count almost nothing, so a rim neither darkens nor flattens the lesion,
    and they come out as the mean, 0.5, since black would read as pigment. A dark lesion in the centre is
    never touched; an image that is all rim falls back to every pixel.
    """

    def __init__(self, field_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.field_only = bool(field_only)

    def call(self, images):
        if not self.field_only:
            mean = ops.mean(images, axis=(1, 2), keepdims=True)
            spread = ops.std(images, axis=(1, 2), keepdims=True)
        else:
            # The same rim rule as images.field_of_view, in the graph.
            height, width = ops.shape(images)[1], ops.shape(images)[2]
            rows = (ops.cast(ops.arange(height), "float32") + 0.5) / ops.cast(height, "float32") * 2.0 - 1.0
            columns = (ops.cast(ops.arange(width), "float32") + 0.5) / ops.cast(width, "float32") * 2.0 - 1.0
            periphery = (rows[:, None] ** 2 + columns[None, :] ** 2) > FIELD_CENTRE**2
            outside = (ops.max(images, axis=-1, keepdims=True) < FIELD_DARKNESS) & periphery[None, :, :, None]
            weight = ops.where(outside, 1e-4, 1.0)
            total = ops.sum(weight, axis=(1, 2), keepdims=True)
            mean = ops.sum(images * weight, axis=(1, 2), keepdims=True) / total
            spread = ops.sqrt(ops.sum(ops.square(images - mean) * weight, axis=(1, 2), keepdims=True) / total)
        standardised = ops.clip(0.5 + (images - mean) / (4.0 * spread + 1e-3), 0.0, 1.0)
        return ops.where(outside, 0.5, standardised) if self.field_only else standardised

    def get_config(self):
        return {**super().get_config(), "field_only": self.field_only}


@keras.saving.register_keras_serializable(package="melanoma")
class CentreField(layers.Layer):
    """Keeps the centre of each picture, `fraction` of its height and of its width. Dermatologists centre the
    lesion; the border holds the dermatoscope's rim or vignetting, rulers, gel and the skin around, which say
    more of the device than of the lesion (docs/trials.md, trial 4)."""

    def __init__(self, fraction: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.fraction = float(fraction)

    def call(self, images):
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        keep_rows = ops.cast(ops.round(ops.cast(height, "float32") * self.fraction), "int32")
        keep_columns = ops.cast(ops.round(ops.cast(width, "float32") * self.fraction), "int32")
        top, left = (height - keep_rows) // 2, (width - keep_columns) // 2
        return ops.slice(images, (0, top, left, 0), (ops.shape(images)[0], keep_rows, keep_columns, 3))

    def get_config(self):
        return {**super().get_config(), "fraction": self.fraction}


@keras.saving.register_keras_serializable(package="melanoma")
class TemperatureScaling(layers.Layer):
    """Calibrates softmax probabilities: softmax(log(p) / T), with T fitted on the validation split."""

    def __init__(self, temperature: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.temperature = float(temperature)

    def call(self, probabilities):
        return ops.softmax(ops.log(ops.clip(probabilities, 1e-12, 1.0)) / self.temperature, axis=-1)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


@keras.saving.register_keras_serializable(package="melanoma")
class GradientReversal(layers.Layer):
    """The identity going forward; going back, the gradient times -weight (Ganin and Lempitsky 2015): what
    follows learns to tell something from the features, and the layers before learn to hide it."""

    def __init__(self, weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = float(weight)

    def call(self, features):
        stopped = ops.stop_gradient(features)
        return stopped + self.weight * (stopped - features)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def with_source_adversary(model: keras.Model, num_sources: int, weight: float) -> keras.Model:
    """The classifier for training with a source adversary: it also takes the one-hot diagnosis (input
    "diagnosis") and also gives each image's source probabilities (output "source"), guessed from the pooled
    features through a gradient reversal and from the diagnosis. Knowing the diagnosis, the adversary gains
    only from what the features say of the source beyond it, so that is what the network learns to drop,
    not the lesion (a conditional adversary, as in Li et al. 2018). The classifier's own layers are shared:
    training this trains it, and it is what is saved."""
    features = model.get_layer("dropout").input
    diagnosis = keras.Input(shape=(model.output.shape[-1],), name="diagnosis")
    x = GradientReversal(weight, name="reverse_gradient")(features)
    x = layers.Concatenate(name="source_evidence")([x, diagnosis])
    x = layers.Dense(256, activation="relu", name="source_hidden")(x)
    source = layers.Dense(num_sources, activation="softmax", name="source")(x)
    return keras.Model({"image": model.input, "diagnosis": diagnosis},
                       {"probabilities": model.output, "source": source}, name=f"{model.name}_adversarial")


def calibrated(model: keras.Model, temperature: float) -> keras.Model:
    """The same network with temperature scaling on its output, for serving."""
    outputs = TemperatureScaling(temperature, name="calibration")(model.output)
    return keras.Model(model.input, outputs, name=model.name)


def for_inference(model: keras.Model) -> keras.Model:
    """A saved classifier as the workers run it: a Lite backbone's batch normalisation folded into its convolutions
    (backbones.fold_batch_norm), the same outputs, faster on a CPU. The saved model
    stays as trained, so every model directory, old ones included, gets the speed without a new artifact.
    Other models come back unchanged."""
    lite = [layer.name for layer in model.layers if layer.name in STAGES]
    if not lite or not has_batch_norm(model.get_layer(lite[0])):
        return model
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    # The classifier is a chain: each layer takes the one before it.
    for layer in model.layers[1:]:
        x = (fold_batch_norm(layer) if layer.name in STAGES else layer)(x)
    return keras.Model(inputs, x, name=model.name)


def _conv_block(x, filters: int, name: str):
    x = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def check_choices(backbone: str, colour: str, field: float) -> None:
    """Refuse a backbone, colour normalisation or field make_model cannot build, with what it can."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
    if colour not in COLOUR_NORMALISATIONS:
        raise ValueError(f"unknown colour normalisation {colour!r}; choose one of {COLOUR_NORMALISATIONS}")
    if not 0.0 < field <= 1.0:
        raise ValueError(f"field must be a fraction of the picture's side in (0, 1], not {field}")


def make_model(
    input_size: int = DEFAULT_INPUT_SIZE,
    num_classes: int = len(CLASS_NAMES),
    dropout_rate: float = 0.3,
    backbone: str = "small",
    colour: str = "shades-of-grey",
    field: float = 1.0,
) -> keras.Model:
    """Build the classifier; it accepts uint8 or float RGB images of any height and width.

    backbone "small" is a compact CNN trained from scratch; "efficientnet_lite0" and "efficientnet_lite1" are
    the ImageNet-shaped EfficientNet-Lite networks (load their weights with backbones.load_imagenet_weights on
    model.get_layer(backbone)).

    field below 1 keeps only the centre of the picture (that fraction of each side, CentreField): the network
    then sees round(input_size * field) pixels a side, so a picture decoded at input_size loses no resolution.
    """
    check_choices(backbone, colour, field)
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = CentreField(field, name="centre_field")(inputs) if field < 1.0 else inputs
    seen = round(input_size * field)  # pixels a side the network sees
    x = layers.Resizing(seen, seen, name="resize")(x)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = ShadesOfGrey(name="colour_constancy")(x)
    if colour in ("standardise", "field-standardise"):
        x = ChannelStandardisation(field_only=colour == "field-standardise", name="standardise")(x)
    if backbone in STAGES:
        x = layers.Rescaling(255.0, name="to_pixels")(x)
        x = efficientnet_lite(backbone, seen)(x)
        x = layers.Dropout(dropout_rate, name="dropout")(x)
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name="melanoma_cnn")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for index, filters in enumerate((64, 128, 192, 256)):
        x = _conv_block(x, filters, name=f"block{index + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="melanoma_cnn")
