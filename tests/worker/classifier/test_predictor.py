"""The serving classifier on the shipped model."""


import numpy as np
from PIL import Image as PILImage

from tests.conftest import make_png
from web.config import DEFAULT_MODEL_DIR
from worker.classifier.artifacts import read_card
from worker.classifier.images import decode_image


def test_shipped_model_accepts_images_of_any_size_and_predicts_a_list():
    from worker.classifier.predictor import Classifier

    card, artifact = read_card(DEFAULT_MODEL_DIR)
    classifier = Classifier(str(artifact), card["class_names"], card["input_size"])
    images = [decode_image(make_png(w, h, colour), card["input_size"])
              for w, h, colour in ((300, 200, (200, 100, 80)), (50, 90, (90, 60, 50)))]
    probabilities = classifier.predict(images)
    assert probabilities.shape == (2, 9)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    # The model resizes inside itself, so a raw image of another size gives a valid answer too.
    raw = np.asarray(PILImage.new("RGB", (250, 170), (150, 90, 70)), dtype=np.float32)[None]
    assert np.asarray(classifier.model(raw)).shape == (1, 9)
    assert classifier.predict([]).shape == (0, 9)
