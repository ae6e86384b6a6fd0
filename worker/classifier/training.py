"""Training: audited data, stratified split, class-weighted fit, alert threshold chosen on validation.

The result is a model directory: the `.keras` artifact and `card.json` (classes, input size, threshold,
metrics, training data hash, date), which the registry and the workers read.
"""

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from worker.classifier import data
from worker.classifier.artifacts import ARTIFACT_NAME, AUDIT_NAME, CARD_NAME, HISTORY_NAME, file_sha256
from worker.classifier.audit import DataDirs
from worker.classifier.backbones import imagenet_weights_file, load_imagenet_weights
from worker.classifier.choices import CLASS_NAMES, DEFAULT_INPUT_SIZE, LOSSES, MELANOMA
from worker.classifier.metrics import (
    apply_temperature,
    expected_calibration_error,
    figures,
    fit_temperature,
    per_source_alerts,
    threshold_for_every_source,
)
from worker.classifier.network import calibrated, check_choices, make_model, with_source_adversary
from worker.classifier.quality import quality_limits
from worker.classifier.shift import write_reference
from worker.classifier.torch_legacy import load_state_dict

Progress = Callable[[int, dict[str, float]], None]  # (epoch, its figures)
HEAD_EPOCHS = 4
HEAD_LEARNING_RATE = 1e-3
FINE_TUNE_LEARNING_RATE = 3e-4
# Fine-tuning rises to its rate over its first epoch: started at the full rate, the first updates through
# the unfrozen network undid part of the ImageNet features (docs/trials.md).
FINE_TUNE_WARMUP_EPOCHS = 1


def _class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return {c: float(len(labels) / (num_classes * counts[c])) if counts[c] else 0.0 for c in range(num_classes)}


# The recipe each backbone trains with unless told otherwise. Lite0's defaults (the centre 192 pixels of a
# picture decoded at 226, rims, style mix, shades-of-grey colour constancy) are those that held up best when
# the source changed, judged last on sources left out of training; the trials that chose them, and those not
# adopted, are in docs/trials.md.
# Lite1 trains Lite0's recipe.
_LITE_RECIPE = {"epochs": 18, "input_size": 226, "augmentation": "rim", "style_mix": True,
                "colour": "shades-of-grey", "loss": "class-weighted", "source_adversary": 0.0, "field": 0.85}
RECIPES = {
    "efficientnet_lite0": dict(_LITE_RECIPE),
    "efficientnet_lite1": dict(_LITE_RECIPE),
    "small": {"epochs": 30, "input_size": 128, "augmentation": "basic", "style_mix": False,
              "colour": "shades-of-grey", "loss": "class-weighted", "source_adversary": 0.0, "field": 1.0},
}


def recipe_defaults(backbone: str, **overrides) -> dict:
    """The backbone's recipe (epochs, input size, augmentation, style mix, colour, loss, source adversary, field), with
    the given values replacing it where they are not None."""
    recipe = dict(RECIPES[backbone])
    unknown = set(overrides) - set(recipe)
    if unknown:
        raise ValueError(f"not part of a recipe: {sorted(unknown)}")
    return recipe | {key: value for key, value in overrides.items() if value is not None}


def learning_rate_schedule(learning_rate: float, steps: int, warmup_steps: int = 0):
    """Cosine decay to zero by the last of `steps`, after a linear rise from zero over the first warmup_steps."""
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, steps - warmup_steps),
                                                  warmup_target=learning_rate, warmup_steps=warmup_steps)


def log_priors(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Each class's log share of the training labels; a class without any takes the largest share, so that at
    serving time (no shift) a class the network never saw is held down like the commonest one."""
    counts = np.bincount(labels, minlength=num_classes).astype(float)
    return np.log(np.where(counts > 0, counts, counts.max()) / counts.sum())


def logit_adjusted_loss(log_prior: np.ndarray):
    """Cross-entropy on the network's log-probabilities shifted by the training classes' log-priors (Menon et
    al. 2021): the network itself then learns the balanced posterior, without weighting rare images up."""
    offsets = tf.constant(log_prior[None, :], tf.float32)
    crossentropy = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.05)

    def loss(targets, probabilities):
        return crossentropy(targets, tf.math.log(tf.clip_by_value(probabilities, 1e-12, 1.0)) + offsets)

    return loss


def _diagnosis_names(name: str) -> str:
    """A figure of a model with a source adversary, named as the classifier alone names it: its diagnosis
    loss and accuracy become loss and accuracy (what the curves and the retraining's progress show), the sum
    with the source's loss total_loss, and source_loss stays."""
    if name in ("loss", "val_loss"):
        return name.replace("loss", "total_loss")
    return name.replace("probabilities_", "")


def _fit(model: keras.Model, train_ds, validation_ds, epochs: int, steps_per_epoch: int, learning_rate: float,
         warmup_epochs: int, class_weight: dict, out_dir: Path, verbose: int,
         log_prior: np.ndarray | None = None, progress: Progress | None = None,
         epochs_before: int = 0) -> dict[str, list[float]]:
    """Train with a cosine schedule, keeping the weights of the epoch with the lowest validation loss; with
    log_prior, by the logit-adjusted loss instead of class weights. progress hears of each epoch's end (its
    number counted from epochs_before) with its figures. A model with a source adversary
    (network.with_source_adversary) takes its class weights from the dataset and is kept by the
    diagnosis's validation loss alone."""
    schedule = learning_rate_schedule(learning_rate, epochs * steps_per_epoch, warmup_epochs * steps_per_epoch)
    if log_prior is not None:
        loss, class_weight = logit_adjusted_loss(log_prior), None
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.05)
    metrics, monitor, adversarial = ["accuracy"], "val_loss", isinstance(model.output, dict)
    if adversarial:
        loss = {"probabilities": loss, "source": keras.losses.CategoricalCrossentropy()}
        metrics, monitor, class_weight = {"probabilities": ["accuracy"]}, "val_probabilities_loss", None
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss, metrics=metrics)
    best_path = out_dir / "best.weights.h5"
    callbacks = [keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, mode="min", save_best_only=True,
                                                 save_weights_only=True)]
    named = _diagnosis_names if adversarial else (lambda name: name)
    if progress is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: progress(
            epochs_before + epoch + 1,
            {named(name): round(float(value), 4) for name, value in (logs or {}).items()})))
    history = model.fit(
        train_ds, validation_data=validation_ds, epochs=epochs, verbose=verbose, class_weight=class_weight,
        callbacks=callbacks,
    )
    model.load_weights(best_path)
    best_path.unlink()
    return {named(name): [float(v) for v in values] for name, values in history.history.items()}


def train(data_dirs: DataDirs, out_dir: str | Path, epochs: int = 30, seed: int = 0,
          input_size: int = DEFAULT_INPUT_SIZE, batch_size: int = 32, target_sensitivity: float = 0.90,
          learning_rate: float = 2e-3, backbone: str = "small", augmentation: str = "basic",
          style_mix: bool = False, colour: str = "shades-of-grey", loss: str = "class-weighted",
          source_adversary: float = 0.0, field: float = 1.0, source_weights: dict[str, int] | None = None,
          train_only_dirs: DataDirs | None = None, exclude_sources: set[str] | None = None, verbose: int = 2,
          progress: Progress | None = None) -> dict:
    """Train a model on DATA_DIR/<class>/ images and write artifact and card to OUT_DIR; returns the card.

    source_weights: training images of these sources count this many times (repeated in the training split
    only, after the split), so a hospital's few confirmed images weigh more than the base images of their
    class; each class's total weight stays as the class weights set it.

    train_only_dirs: folders audited with the others but trained on whole, outside the split (the confirmed
    images, whose held-back share is evaluated elsewhere): the split of data_dirs stays exactly what it is
    without them, so a model trained without them can be compared on the same test images.

    exclude_sources: sources none of whose images is split, trained or validated on (audited with the rest, so
    a copy of one of their pictures in another source goes too): a model that has never seen them, to be scored
    on them (bench/cross_source.py).

    source_adversary: above 0, the weight of a gradient reversal through which a head learns to tell the
    training images' sources apart given their diagnosis (network.with_source_adversary), so that the features
    learn to carry as little of the source as they can; the head is not part of the saved model. Without two
    sources among the training images there is nothing to tell apart, and the recipe trains without it.

    field: the fraction of each side of the picture, around its centre, that the network looks at
    (network.CentreField); the picture is decoded at input_size, so the backbone sees round(input_size * field).

    progress(epoch, figures): called at the end of every epoch (1 to epochs) with its loss and accuracies."""
    # Every choice is checked before the folder is made, so a wrong one leaves nothing behind.
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {LOSSES}")
    if augmentation not in data.AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {augmentation!r}; choose one of {sorted(data.AUGMENTATIONS)}")
    check_choices(backbone, colour, field)
    out_dir = Path(out_dir)
    if (out_dir / ARTIFACT_NAME).exists() or (out_dir / CARD_NAME).exists():
        # A registered model is served only while its artifact keeps its hash: never write over one.
        raise ValueError(f"{out_dir} already holds a model; models are never overwritten, choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()

    base, extra, audit = data.list_with_extra(data_dirs, train_only_dirs, CLASS_NAMES)
    excluded = set(exclude_sources or ())
    unknown = excluded - {example.source for example in base + extra}
    if unknown:
        raise ValueError(f"no images of the source(s) {sorted(unknown)} to leave out; the folders hold "
                         f"{sorted({example.source for example in base + extra})}")
    base, extra = ([e for e in part if e.source not in excluded] for part in (base, extra))
    examples = base + extra
    split = data.split_examples(base, seed=seed)
    split = data.Split(split.train + extra, split.validation, split.test)
    weights = {source: int(weight) for source, weight in (source_weights or {}).items() if int(weight) > 1}
    split = data.Split([repeat for example in split.train for repeat in [example] * weights.get(example.source, 1)],
                       split.validation, split.test)
    images = {name: data.read_images(part, input_size) for name, part in
              (("train", split.train), ("validation", split.validation), ("test", split.test))}
    labels = {name: np.array([e.label for e in part], dtype=np.int64) for name, part in
              (("train", split.train), ("validation", split.validation), ("test", split.test))}

    class_weight = _class_weights(labels["train"], len(CLASS_NAMES))
    training_sources = sorted({example.source for example in split.train + split.validation})
    if source_adversary > 0 and len(training_sources) > 1:
        index = {source: position for position, source in enumerate(training_sources)}
        adversary = {name: {"sources": np.array([index[e.source] for e in part], dtype=np.int64),
                            "num_sources": len(training_sources)}
                     for name, part in (("train", split.train), ("validation", split.validation))}
        # As sample weights (Keras takes class weights for one output only), which weigh each image's source
        # loss as they weigh its diagnosis: a rare class's images push the features as hard in both.
        if loss == "class-weighted":
            adversary["train"]["class_weight"] = np.array([class_weight[c] for c in range(len(CLASS_NAMES))])
    else:
        source_adversary, adversary = 0.0, {"train": {}, "validation": {}}
    train_ds = data.load_dataset(images["train"], labels["train"], batch_size, len(CLASS_NAMES),
                                 training=True, seed=seed, augmentation=augmentation, style_mix=style_mix,
                                 **adversary["train"])
    validation_ds = data.load_dataset(images["validation"], labels["validation"], batch_size,
                                      len(CLASS_NAMES), **adversary["validation"])
    log_prior = log_priors(labels["train"], len(CLASS_NAMES)) if loss == "logit-adjusted" else None
    model = make_model(input_size=input_size, num_classes=len(CLASS_NAMES), backbone=backbone, colour=colour,
                       field=field)
    trainer = with_source_adversary(model, len(training_sources), source_adversary) if source_adversary else model
    history: dict[str, list[float]] = {}
    if backbone == "small":
        phases = [(epochs, learning_rate, 0)]
    else:
        features = model.get_layer(backbone)
        load_imagenet_weights(features, load_state_dict(imagenet_weights_file(backbone)))
        # First the new head alone on frozen ImageNet features, then the whole network gently; batch
        # normalisation stays frozen, as its statistics cannot be re-estimated from a few hundred images.
        head_epochs = min(HEAD_EPOCHS, epochs)
        phases = [(head_epochs, HEAD_LEARNING_RATE, 0),
                  (epochs - head_epochs, FINE_TUNE_LEARNING_RATE, FINE_TUNE_WARMUP_EPOCHS)]
    epochs_before = 0
    for phase, (phase_epochs, phase_rate, warmup_epochs) in enumerate(phases):
        if phase_epochs <= 0:
            continue
        if backbone != "small":
            features.trainable = phase > 0
            for layer in features.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        steps_per_epoch = int(np.ceil(len(split.train) / batch_size))  # repeats included
        for name, values in _fit(trainer, train_ds, validation_ds, phase_epochs, steps_per_epoch, phase_rate,
                                 warmup_epochs, class_weight, out_dir, verbose, log_prior, progress,
                                 epochs_before).items():
            history.setdefault(name, []).extend(values)
        epochs_before += phase_epochs

    melanoma = CLASS_NAMES.index(MELANOMA)
    raw_validation = model.predict(images["validation"].astype(np.float32), verbose=0)
    temperature = fit_temperature(raw_validation, labels["validation"])
    model = calibrated(model, temperature)
    validation_probabilities = apply_temperature(raw_validation, temperature)
    # Every source's validation melanomas reach the target, not only all of them together: a hospital is
    # one source, and a pooled threshold can leave the source with the hardest melanomas under it.
    validation_sources = np.array([example.source for example in split.validation])
    threshold = threshold_for_every_source(labels["validation"] == melanoma, validation_probabilities[:, melanoma],
                                           validation_sources, target_sensitivity)
    test_probabilities = model.predict(images["test"].astype(np.float32), verbose=0)

    artifact = out_dir / ARTIFACT_NAME
    model.save(artifact)
    card = {
        "name": "melanoma-cnn",
        "version": dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"),
        "artifact": ARTIFACT_NAME,
        "artifact_sha256": file_sha256(artifact),
        "class_names": list(CLASS_NAMES),
        "input_size": input_size,
        "alert_threshold": threshold,
        "target_sensitivity": target_sensitivity,
        # Images less sharp (scores run low), more unevenly lit or more overexposed (scores run high) than
        # these carry a quality warning: sharpness_floor, illumination_floor, overexposure_ceiling.
        **quality_limits(images["train"]),
        "temperature": temperature,
        # What the workers measure each hospital's recent images against (worker/classifier/shift.py).
        "shift": write_reference(out_dir, model, images["train"], images["validation"]),
        "metrics": {
            "validation": {**figures(validation_probabilities, labels["validation"], CLASS_NAMES, threshold),
                           "ece_before_calibration": expected_calibration_error(raw_validation,
                                                                                labels["validation"]),
                           "per_source_at_threshold": per_source_alerts(
                               labels["validation"] == melanoma, validation_probabilities[:, melanoma],
                               validation_sources, threshold)},
            "test": figures(test_probabilities, labels["test"], CLASS_NAMES, threshold),
        },
        "training": {
            "data_sha256": data.dataset_hash(examples),
            # What the split was drawn from: the data less what trained whole outside it (train_only_dirs).
            "split_data_sha256": data.dataset_hash(base),
            "split_sizes": {name: int(len(part)) for name, part in labels.items()},
            "source_weights": weights,
            "excluded_sources": sorted(excluded),
            "images_by_source": dict(sorted(Counter(example.source for example in examples).items())),
            "audit": {"images": audit.images, "kept": audit.kept, "excluded_conflicts": audit.excluded,
                      "duplicates_collapsed": audit.collapsed, "shortcut_warnings": audit.shortcut_warnings,
                      "labels_by_source": audit.sources},
            "epochs": epochs,
            "backbone": backbone,
            "augmentation": augmentation,
            "style_mix": style_mix,
            "colour": colour,
            "loss": loss,
            "source_adversary": source_adversary,
            "field": field,
            "seed": seed,
            "parameters": int(model.count_params()),
            "seconds": round(time.monotonic() - started, 1),  # audit to saved artifact, on this machine
        },
        "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    (out_dir / AUDIT_NAME).write_text(json.dumps(audit.to_json(), indent=2) + "\n")
    (out_dir / HISTORY_NAME).write_text(json.dumps(history, indent=2) + "\n")
    return card
