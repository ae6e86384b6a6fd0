"""The names the classifier is built from and the choices its recipe offers, without TensorFlow: the CLI, the
workers and the web can read them before (or without) loading a network."""

CLASS_NAMES = (
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
)
# The class the alert is about.
MELANOMA = "melanoma"
DEFAULT_INPUT_SIZE = 128

# "small" is a compact CNN trained from scratch; the EfficientNet-Lite networks start from ImageNet weights.
BACKBONES = ("small", "efficientnet_lite0", "efficientnet_lite1")
# How the model evens out the colour and lighting of different dermatoscopes before the network sees it.
# field-standardise: standardise, with the statistics taken inside the dermatoscope's field of view.
COLOUR_NORMALISATIONS = ("shades-of-grey", "standardise", "field-standardise")
# basic: flips, rotations, photometric jitter, crops; rim adds a dermatoscope's black round rim to a fifth of
# the images; acquisition adds framing, aspect, colour cast, vignetting, blur and JPEG changes.
AUGMENTATIONS = ("basic", "rim", "acquisition")
# class-weighted: cross-entropy with each image weighted inversely to its class's size. logit-adjusted:
# cross-entropy on the log-probabilities shifted by the classes' log-priors, every image weighted alike.
LOSSES = ("class-weighted", "logit-adjusted")
# auto: LiteRT on a CPU-only TensorFlow machine, where it is fastest; Keras wherever a GPU can run the model
# (TensorFlow seeing a GPU, or the JAX backend) or ai-edge-litert is not installed.
RUNTIMES = ("auto", "litert", "keras")
