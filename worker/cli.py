"""The model commands of `melanoma`: the registry, classifying without a server, heatmaps, evaluation,
comparison, data audits and training. pyproject.toml's `flask.commands` entry points add them to the one
`melanoma` group of web/cli.py. Imports stay light at the top, so `melanoma --help` never loads TensorFlow.
"""

import datetime as dt
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from web.config import DEFAULT_MODEL_DIR, Config
from worker.classifier.choices import AUGMENTATIONS, BACKBONES, COLOUR_NORMALISATIONS, LOSSES


def _runtime() -> dict:
    """How this process runs a model: the INFERENCE_RUNTIME and MODEL_CACHE_DIR settings."""
    return {"runtime": Config.INFERENCE_RUNTIME, "cache_dir": Config.MODEL_CACHE_DIR}


@click.group("models", cls=AppGroup)
def models_group():
    """The model registry: which trained CNN serves."""


@models_group.command("register")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--promote", is_flag=True, help="Make it the champion that new images are classified with.")
def register(model_dir: str, promote: bool):
    """Register a model directory written by `melanoma train`."""
    from worker.registry import register_model

    try:
        version = register_model(model_dir, promote=promote, actor="cli")
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"model {version.id} {version.label} registered{' and promoted' if version.is_champion else ''}")


@models_group.command("reference")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
def reference(model_dir: str, data_dirs: tuple[str, ...]):
    """Give a model trained before training kept a shift reference one, from the folders it was trained on, so
    the workers can measure each hospital's shift with it (training writes one itself)."""
    from worker.classifier.shift import add_reference

    try:
        entry = add_reference(model_dir, list(data_dirs))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {Path(model_dir) / entry['file']}: {entry['components']} feature directions, a sample of "
               f"{entry['sample']} training and validation images; the card names it")


@models_group.command("promote")
@click.argument("model_id", type=int)
def promote(model_id: int):
    """Serve model MODEL_ID from now on (also how to roll back to an earlier one)."""
    from models import AuditEvent, ModelVersion, db

    version = db.session.get(ModelVersion, model_id)
    if version is None:
        raise click.ClickException(f"no model {model_id}; see `melanoma models list`")
    version.promote()
    AuditEvent.record("cli", "model.promoted", f"model:{version.id}", label=version.label)
    db.session.commit()
    click.echo(f"model {version.id} {version.label} is now the champion")


@models_group.command("rollback")
@click.option("--reason", default="rolled back by an operator", show_default=True,
              help="Why the champion is rejected; kept in the audit trail.")
def rollback(reason: str):
    """Serve the previous champion again; the current one is marked rejected, with the reason."""
    from models import ModelVersion

    try:
        previous, champion = ModelVersion.rollback("cli", reason)
    except LookupError:
        raise click.ClickException("no earlier champion to roll back to; see `melanoma models list`") from None
    click.echo(f"model {previous.id} {previous.label} is the champion again"
               + (f"; model {champion.id} is rejected ({reason})" if champion else ""))


@models_group.command("list")
def list_models():
    """Registered models, the champion marked with *, each with its directory (what `compare` takes)."""
    from models import ModelVersion, db
    from worker.registry import resolve_path

    for version in db.session.scalars(db.select(ModelVersion).order_by(ModelVersion.id)):
        auc = version.metrics.get("test", {}).get("melanoma_auc")
        click.echo(f"{'*' if version.is_champion else ' '} {version.id:4d} {version.label:40s} {version.status:9s} "
                   f"threshold={version.alert_threshold:.4f} test_melanoma_auc={auc} "
                   f"dir={resolve_path(version.artifact_path).parent}")


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The results CSV to write.")
@click.option("--model-dir", envvar="MODEL_DIR", default=None, help="A model directory; default: the shipped one.")
def predict(paths, out, model_dir):
    """Classify image files and folders in this process, without a server; writes the results CSV."""
    from web.client import SubmitError, collect_files
    from worker.offline import predict_files

    try:
        files = collect_files(list(paths))
    except SubmitError as error:
        raise click.ClickException(str(error)) from error
    try:
        rows = predict_files(files, model_dir or DEFAULT_MODEL_DIR)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    from web.results import to_csv

    Path(out).write_text(to_csv(rows))
    alerts = sum(1 for row in rows if row["alert"])
    click.echo(f"{len(rows)} images, {alerts} melanoma alerts; results written to {out}", err=True)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The heatmap PNG to write.")
@click.option("--model-dir", envvar="MODEL_DIR", default=None, help="A model directory; default: the shipped one.")
def explain(image, out, model_dir):
    """Draw where the model looked for melanoma in IMAGE (occlusion sensitivity) over the image."""
    from worker.classifier.explain import explain_bytes
    from worker.classifier.images import UnreadableImage
    from worker.classifier.predictor import load_classifier

    try:
        card, classifier = load_classifier(model_dir or DEFAULT_MODEL_DIR, **_runtime())
        png, probability = explain_bytes(classifier, Path(image).read_bytes(), Config.IMAGE_FORMATS,
                                         Config.MAX_IMAGE_PIXELS)
    except (ValueError, UnreadableImage) as error:
        raise click.ClickException(str(error)) from error
    Path(out).write_bytes(png)
    alert = "ALERT" if probability >= card["alert_threshold"] else "no alert"
    click.echo(f"melanoma probability {probability:.3f} ({alert}); heatmap written to {out}")


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True,
              help="test: the held-out split of the data the model was trained on (the same folders); all: "
                   "every audited image.")
@click.option("--out", type=click.Path(file_okay=False),
              help="Folder for the JSON and plots (default MODEL_DIR/evaluation).")
@click.option("--perturb/--no-perturb", default=True, show_default=True,
              help="Also score the images under simulated acquisition changes (colour, vignetting, blur...).")
def evaluate(model_dir, data_dirs, split, out, perturb):
    """Evaluate a model directory: overall, per source and under acquisition changes; JSON plus PNG plots."""
    from worker.classifier.evaluation import evaluate as run_evaluation

    try:
        report = run_evaluation(model_dir, list(data_dirs), split=split, out_dir=out, perturb=perturb, **_runtime())
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    rows = [("overall", report["overall"])] + [(f"source: {k}", v) for k, v in report["per_source"].items()]
    rows += [(f"perturbed: {k}", v) for k, v in report.get("perturbations", {}).items()]
    if "source_swap" in report:
        rows.append(("sources' colours swapped", report["source_swap"]))
    click.echo(f"{'':28s}{'images':>8s}{'bal.acc':>9s}{'mel.AUC':>9s}{'sens':>7s}{'spec':>7s}"
               f"{'flagged':>9s}{'sens+flag':>11s}")
    for name, figures in rows:
        quality = figures.get("quality", {})
        click.echo(f"{name:28s}{figures.get('images', report['overall']['images']):>8d}"
                   + "".join(cell(figures[key], width) for key, width in
                             (("balanced_accuracy", 9), ("melanoma_auc", 9), ("melanoma_sensitivity", 7),
                              ("melanoma_specificity", 7)))
                   + cell(quality.get("flagged"), 9) + cell(quality.get("melanomas_alerted_or_flagged"), 11))
    if any(report.get(key) is not None for key in ("sharpness_floor", "illumination_floor", "overexposure_ceiling")):
        click.echo("flagged: share of images with a quality warning (blurred or low resolution, unevenly lit, "
                   "overexposed); sens+flag: share of melanomas alerted or flagged")
    for name, figures in (("overall", report["overall"]), ("colours swapped", report.get("source_swap", {}))):
        intervals = figures.get("intervals_95")
        if intervals:
            click.echo(f"95 % intervals, resampling these images ({name}): " + ", ".join(
                f"{label} {intervals[key][0]:.3f}-{intervals[key][1]:.3f}" for key, label in
                (("balanced_accuracy", "bal.acc"), ("melanoma_auc", "mel.AUC"), ("melanoma_sensitivity", "sens"),
                 ("melanoma_specificity", "spec")) if key in intervals))
    oracle = report["overall"].get("specificity_at_target_sensitivity")
    if oracle:
        click.echo(f"a threshold set on these images for sensitivity {oracle['target']:.2f} would give specificity "
                   f"{oracle['specificity']:.3f} (sensitivity {oracle['sensitivity']:.3f}): the best the model "
                   "can do here, against the stored threshold's above")
    click.echo(f"written to {out or Path(model_dir) / 'evaluation'}")


@click.command()
@click.argument("champion_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("challenger_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--split", type=click.Choice(["test", "all"]), default="test", show_default=True,
              help="test: the held-out split both models share (trained with the same seed on DATA_DIRS); "
                   "all: every audited image, for data neither model trained on.")
@click.option("--draws", type=click.IntRange(min=100), default=2000, show_default=True,
              help="Paired bootstrap resamplings of the images.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Where to write the JSON (default CHALLENGER_DIR/evaluation/compared-with-<champion>.json).")
def compare(champion_dir, challenger_dir, data_dirs, split, draws, out):
    """Should CHALLENGER_DIR replace CHAMPION_DIR? Both scored on the same images, each figure's difference
    with its 95 % paired-bootstrap interval, and the verdict of the shipping rule."""
    from worker.classifier.comparison import SHIPPING_TOLERANCE, comparison_path
    from worker.classifier.comparison import compare as run_comparison

    out = out or comparison_path(champion_dir, challenger_dir)
    try:
        report = run_comparison(champion_dir, challenger_dir, list(data_dirs), split=split, draws=draws, out_path=out,
                                **_runtime())
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"champion {report['champion']}, challenger {report['challenger']}: {report['images']} images, "
               f"{report['melanomas']} melanomas ({split})")
    click.echo(f"{'':34s}{'champion':>9s}{'challenger':>11s}{'change':>8s}{'95 % interval':>17s}{'ahead':>7s}")
    for name, figure in report["figures"].items():
        interval = figure["interval_95"]
        click.echo(f"{name:34s}" + cell(figure["champion"], 9) + cell(figure["challenger"], 11)
                   + cell(figure["difference"], 8, sign="+")
                   + (f"{interval[0]:>+9.3f} {interval[1]:>+7.3f}" if interval else f"{'-':>17s}")
                   + cell(figure["challenger_ahead"], 7))
    click.echo(f"worst change: {report['worst_change']['champion']} (champion), "
               f"{report['worst_change']['challenger']} (challenger); ahead: share of resamplings where the "
               "challenger's figure is higher")
    rule = report["shipping_rule"]
    click.echo(f"shipping rule (the melanoma AUC rises; inside each source, with colours swapped and under the "
               f"worst change it loses at most {SHIPPING_TOLERANCE}): "
               + ("the challenger passes" if rule["passes"] else "the challenger does not pass: "
                  + "; ".join(rule["failures"])))
    click.echo("its melanoma AUC rise is beyond what resampling these images gives" if rule["rise_beyond_resampling"]
               else "these images cannot tell the two melanoma AUCs apart: the interval of the change holds 0")
    click.echo(f"written to {out}")


def cell(value, width: int, sign: str = "") -> str:
    return f"{value:>{sign}{width}.3f}" if value is not None else f"{'-':>{width}s}"


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--against", type=click.Path(exists=True, file_okay=False),
              help="Another class-folder set (a test split) to check for images shared with DATA_DIRS.")
@click.option("--out", default="audit.json", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the JSON report.")
def audit(data_dirs, against, out):
    """Audit class-folder datasets, several together: duplicates (across folders too), near duplicates, label
    conflicts, leaks, and labels by source (metadata.csv's source column, or the ISIC identifier rule)."""
    import json

    from worker.classifier.audit import audit as run_audit
    from worker.classifier.audit import summary_table

    try:
        _, report = run_audit(list(data_dirs), against=against)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    Path(out).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    click.echo(summary_table(report))
    click.echo(f"report written to {out}")


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(file_okay=False),
              help="A new folder for the model (default instance/models/<UTC date-time>); never one with a model.")
@click.option("--epochs", type=int, default=None, help="Default 18 for the EfficientNet-Lite backbones, 30 for small.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--target-sensitivity", default=0.90, show_default=True, type=float)
@click.option("--backbone", type=click.Choice(BACKBONES), default="efficientnet_lite0", show_default=True,
              help="small trains from scratch; the EfficientNet-Lite backbones start from ImageNet weights "
                   "installed from the package index, and efficientnet_lite1 is the deeper one.")
@click.option("--input-size", type=int, default=None,
              help="Pixels a side each picture is decoded to (default 226 / 128).")
@click.option("--augmentation", type=click.Choice(AUGMENTATIONS), default=None,
              help="basic: flips, rotations, photometric jitter, crops; rim (default for efficientnet_lite0) adds "
                   "a dermatoscope's black round rim to a fifth of the images; acquisition adds framing, aspect, "
                   "colour cast, vignetting, blur and JPEG changes.")
@click.option("--style-mix/--no-style-mix", default=None,
              help="Give images the colour and lighting of others in their batch (Fourier amplitude mix); "
                   "on by default for efficientnet_lite0.")
@click.option("--colour", type=click.Choice(COLOUR_NORMALISATIONS), default=None,
              help="shades-of-grey (the default) evens out each image's colour cast; standardise also evens out "
                   "its exposure and contrast; field-standardise does that inside the dermatoscope's field of "
                   "view, a black rim left out.")
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help="class-weighted (the default): rare classes' images weigh more; logit-adjusted: every image "
                   "weighs alike and the classes' log-priors shift the training logits.")
@click.option("--source-adversary", type=click.FloatRange(min=0.0), default=None, metavar="WEIGHT",
              help="Above 0: a head learns to tell the training images' sources apart given their diagnosis, "
                   "through a gradient reversal of this weight, so the features learn to drop what marks the "
                   "source (0, none, is the default).")
@click.option("--field", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None, metavar="FRACTION",
              help="The fraction of each side, around the picture's centre, that the network looks at: the "
                   "border holds the dermatoscope's rim, rulers and skin. The network then sees input-size times "
                   "this many pixels a side (default 0.85 for the EfficientNet-Lite backbones: 192 of 226).")
def train(data_dirs, out, epochs, seed, target_sensitivity, backbone, input_size, augmentation, style_mix,
          colour, loss, source_adversary, field):
    """Train a CNN on DATA_DIRS/<class name>/ images (several folders train together, audited together; a
    metadata.csv beside the class folders gives each image's source and lesion_id, and every image of one
    lesion stays on one side of the split); writes the model, its card and metrics to --out."""
    from worker.classifier.training import recipe_defaults
    from worker.classifier.training import train as run_training

    out = out or str(Path("instance") / "models" / dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S"))
    try:
        card = run_training(list(data_dirs), out, seed=seed, target_sensitivity=target_sensitivity, backbone=backbone,
                            verbose=1 if sys.stdout.isatty() else 2,  # a live progress bar on a terminal
                            **recipe_defaults(backbone, epochs=epochs, input_size=input_size,
                                              augmentation=augmentation, style_mix=style_mix, colour=colour,
                                              loss=loss, source_adversary=source_adversary, field=field))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    test = card["metrics"]["test"]
    click.echo(f"model written to {out}: test balanced accuracy {cell(test['balanced_accuracy'], 0)}, "
               f"melanoma AUC {cell(test['melanoma_auc'], 0)}, alert threshold {card['alert_threshold']:.4f}, "
               f"trained in {card['training']['seconds']:.0f} s")
    click.echo(f"weigh it against the serving model (trained with the same seed) with: melanoma compare "
               f"CHAMPION_DIR {out} {' '.join(data_dirs)}")
    click.echo(f"serve it with: melanoma models register {out} --promote")
