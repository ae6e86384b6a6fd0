"""Training: a tiny real training run, its card, the recipe, the loss and the learning-rate schedule."""

import json
import subprocess
import sys

import numpy as np
import pytest

from worker.classifier.artifacts import read_card
from worker.classifier.images import decode_image


def test_training_on_a_tiny_dataset_writes_a_model_that_reloads_with_the_same_outputs(tiny_dataset, tiny_model):
    from worker.classifier.predictor import Classifier

    model_dir, card = tiny_model
    assert card["training"]["audit"]["excluded_conflicts"] == 2
    assert (model_dir / "audit.json").is_file() and (model_dir / "history.json").is_file()
    assert json.loads((model_dir / "card.json").read_text()) == card
    assert card["sharpness_floor"] > 0  # the tiny pictures are noise: sharp
    assert card["training"]["seconds"] > 0  # how long it took, for the 20-minute budget on the real data
    loaded_card, artifact = read_card(model_dir)
    classifier = Classifier(str(artifact), loaded_card["class_names"], loaded_card["input_size"])
    # The temperature fitted on validation travels inside the served model.
    assert classifier.model.get_layer("calibration").temperature == pytest.approx(card["temperature"])
    image = decode_image((tiny_dataset / "melanoma" / "img0.jpg").read_bytes(), 32)
    first = classifier.predict([image])
    again = Classifier(str(artifact), loaded_card["class_names"], 32).predict([image])
    np.testing.assert_allclose(first, again, rtol=1e-5)


def test_training_never_writes_over_a_model(tiny_dataset, tiny_model):
    from worker.classifier.artifacts import file_sha256
    from worker.classifier.training import train

    model_dir, card = tiny_model
    with pytest.raises(ValueError, match="already holds a model"):
        train(tiny_dataset, model_dir, epochs=1, input_size=32, batch_size=8)
    assert file_sha256(model_dir / "model.keras") == card["artifact_sha256"]


def test_training_refuses_a_folder_without_the_class_folders(tmp_path):
    from worker.classifier.training import train

    with pytest.raises(ValueError, match="no folder for classes"):
        train(tmp_path, tmp_path / "out", epochs=1)


def test_recipe_defaults_take_only_the_values_given():
    from worker.classifier.training import RECIPES, recipe_defaults

    assert recipe_defaults("efficientnet_lite0") == RECIPES["efficientnet_lite0"]
    changed = recipe_defaults("efficientnet_lite0", epochs=3, style_mix=False, colour=None, loss="logit-adjusted")
    assert changed == RECIPES["efficientnet_lite0"] | {"epochs": 3, "style_mix": False, "loss": "logit-adjusted"}
    with pytest.raises(ValueError, match="learning_rate"):
        recipe_defaults("small", learning_rate=0.1)


def test_logit_adjusted_loss_is_the_crossentropy_of_the_log_probabilities_shifted_by_the_log_priors():
    import tensorflow as tf

    from worker.classifier.training import log_priors, logit_adjusted_loss

    # Three classes, the last never seen in training: it takes the commonest class's prior, not log 0.
    prior = log_priors(np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(prior, np.log([0.75, 0.25, 0.75]))
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]], np.float32)
    targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    shifted = np.log(probabilities) + prior
    adjusted = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    smoothed = targets * 0.95 + 0.05 / 3
    expected = -(smoothed * np.log(adjusted)).sum(axis=1).mean()
    loss = logit_adjusted_loss(prior)(tf.constant(targets), tf.constant(probabilities))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # The rare class's image costs more than under plain cross-entropy: its prior pulls its logit down.
    assert float(logit_adjusted_loss(prior)(tf.constant(targets[:1]), tf.constant(probabilities[:1]))) > \
        -(smoothed[0] * np.log(probabilities[0])).sum()


def test_training_records_its_loss_and_refuses_a_wrong_choice_before_writing(tiny_dataset, tiny_model, tmp_path):
    from worker.classifier.training import train

    assert tiny_model[1]["training"]["loss"] == "logit-adjusted"
    for choice, match in (({"loss": "focal"}, "choose one of"), ({"augmentation": "mixup"}, "choose one of"),
                          ({"backbone": "resnet"}, "choose one of"), ({"colour": "grey"}, "choose one of"),
                          ({"field": 1.2}, "fraction of the picture")):
        with pytest.raises(ValueError, match=match):
            train(tiny_dataset, tmp_path / "new", **choice)
        assert not (tmp_path / "new").exists(), choice


def test_learning_rate_rises_over_the_warmup_then_decays_to_zero():
    from worker.classifier.training import learning_rate_schedule

    def rates(schedule, steps):
        return np.array([float(schedule(step)) for step in steps])

    warm = rates(learning_rate_schedule(1e-3, 100, warmup_steps=10), [0, 5, 10, 55, 100])
    np.testing.assert_allclose(warm, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-6)
    np.testing.assert_allclose(rates(learning_rate_schedule(1e-3, 100), [0, 50, 100]), [1e-3, 5e-4, 0.0],
                               atol=1e-6)


def test_training_on_two_folders_learns_from_both_and_records_labels_by_source(tiny_dataset, clinic_folder,
                                                                              tmp_path):
    """`melanoma train A B`: a second folder with its metadata.csv (source, lesion_id) and only some classes."""
    from tests.conftest import ROOT
    from worker.classifier.training import train

    extra = clinic_folder
    result = subprocess.run([sys.executable, "-m", "web.cli", "train", str(tiny_dataset), str(extra),
                             "--out", str(tmp_path / "model"), "--backbone", "small", "--epochs", "1",
                             "--input-size", "32"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    assert card["training"]["audit"]["labels_by_source"]["clinic-x"] == {"melanoma": 4, "nevus": 4}
    single = train(tiny_dataset, tmp_path / "single", epochs=1, input_size=32, batch_size=8, backbone="small",
                   verbose=0)
    assert card["training"]["audit"]["kept"] == single["training"]["audit"]["kept"] + 8
    assert f"{tiny_dataset} {extra}" in result.stdout  # the compare command it suggests names both folders
    # The threshold holds for each source's validation melanomas, and the card says how each fares at it.
    per_source = card["metrics"]["validation"]["per_source_at_threshold"]
    assert sum(figures["images"] for figures in per_source.values()) == card["training"]["split_sizes"]["validation"]
    assert all(figures["sensitivity"] >= card["target_sensitivity"] for figures in per_source.values()
               if figures["melanomas"])
    # The clinic's images weigh three times as much: repeated in the training split, nowhere else.
    from worker.classifier import data
    from worker.classifier.choices import CLASS_NAMES

    examples, _ = data.list_examples([tiny_dataset, extra], CLASS_NAMES)
    in_training = sum(example.source == "clinic-x" for example in data.split_examples(examples, seed=0).train)
    weighted = train([tiny_dataset, extra], tmp_path / "weighted", epochs=1, input_size=32, batch_size=8,
                     backbone="small", source_weights={"clinic-x": 3}, verbose=0)
    sizes, plain = weighted["training"]["split_sizes"], card["training"]["split_sizes"]
    assert in_training and sizes["train"] == plain["train"] + 2 * in_training
    assert (sizes["validation"], sizes["test"]) == (plain["validation"], plain["test"])
    assert weighted["training"]["source_weights"] == {"clinic-x": 3}


def test_a_source_left_out_is_neither_split_nor_trained_on_and_an_unknown_one_is_refused(tiny_dataset,
                                                                                          clinic_folder, tmp_path):
    from worker.classifier.training import train

    def trained(name, **options):
        return train([tiny_dataset, clinic_folder], tmp_path / name, epochs=1, input_size=32, batch_size=8,
                     backbone="small", verbose=0, **options)["training"]

    everything = trained("all")
    without = trained("without", exclude_sources={"clinic-x"})
    assert everything["images_by_source"]["clinic-x"] == 8
    assert without["excluded_sources"] == ["clinic-x"] and "clinic-x" not in without["images_by_source"]
    assert sum(without["split_sizes"].values()) == sum(everything["split_sizes"].values()) - 8
    with pytest.raises(ValueError, match="no images of the source"):
        trained("nowhere", exclude_sources={"clinic-y"})


def test_gradient_reversal_passes_the_features_and_sends_their_gradient_back_reversed_and_scaled():
    import tensorflow as tf

    from worker.classifier.network import GradientReversal

    features = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(features)
        reversed_features = GradientReversal(0.3)(features)
        total = tf.reduce_sum(reversed_features * tf.constant([[1.0, 2.0, 4.0]]))
    np.testing.assert_allclose(reversed_features.numpy(), features.numpy())
    np.testing.assert_allclose(tape.gradient(total, features).numpy(), [[-0.3, -0.6, -1.2]], rtol=1e-6)


def test_a_source_adversary_trains_the_features_but_is_not_saved_and_needs_two_sources(tiny_dataset,
                                                                                       clinic_folder, tmp_path):
    from worker.classifier.predictor import load_classifier
    from worker.classifier.training import train

    def trained(name, folders, **options):
        return train(folders, tmp_path / name, epochs=1, input_size=32, batch_size=8, backbone="small",
                     verbose=0, **options)

    both = [tiny_dataset, clinic_folder]
    plain, adversarial = trained("plain", both), trained("adversarial", both, source_adversary=0.5)
    assert adversarial["training"]["source_adversary"] == 0.5 and plain["training"]["source_adversary"] == 0.0
    assert adversarial["training"]["split_sizes"] == plain["training"]["split_sizes"]
    # Its curves keep the classifier's names (the diagnosis's loss and accuracy), the adversary's beside them.
    history = json.loads((tmp_path / "adversarial" / "history.json").read_text())
    assert set(json.loads((tmp_path / "plain" / "history.json").read_text())) < set(history)
    assert {"total_loss", "val_total_loss", "source_loss", "val_source_loss"} <= set(history)
    # The saved model is the classifier alone, and the reversed gradient changed what its layers learned.
    _, served = load_classifier(tmp_path / "adversarial", runtime="keras")
    names = {layer.name for layer in served.model.layers}
    assert "reverse_gradient" not in names and "source" not in names
    assert len(served.model.outputs) == 1
    pictures = [decode_image((clinic_folder / "melanoma" / "mel0.png").read_bytes(), 32)]
    _, unchanged = load_classifier(tmp_path / "plain", runtime="keras")
    assert not np.allclose(served.predict(pictures), unchanged.predict(pictures), atol=1e-4)
    # The tiny folder alone is one source ("unknown"): nothing to tell apart, so no adversary.
    assert trained("one-source", tiny_dataset, source_adversary=0.5)["training"]["source_adversary"] == 0.0
