"""Whether a retrained model replaces the champion. Both are scored on the base test split they share (the
shipping rule, as `melanoma compare`) and on each hospital's held-back confirmed images; the challenger is
promoted only if the rule holds and it loses on no hospital with GATE_MIN_MELANOMAS held-back melanomas or
more, and is otherwise rejected with the reasons. Where the two share no test split (the base folders changed),
nothing tells them apart and the challenger stays a candidate for an operator. Every decision is in the
audit trail, and the figures on the challenger's card."""

from collections import defaultdict
from pathlib import Path

from flask import current_app

from models import AuditEvent, ModelVersion, db
from models.prediction import ModelStatus
from web.queue import INFERENCE_QUEUE, MEASURE_SHIFT, SCORE_IMAGES, send_chunks
from web.storage import ImageStore
from worker.classifier.comparison import SHIPPING_TOLERANCE, SPLIT_AUC, compare, compare_groups
from worker.registry import resolve_path
from worker.snapshot import Snapshot

ACTOR = "schedule:retrain"
PROMOTED, REJECTED, UNDECIDED = "promoted", "rejected", "left a candidate"


def verdict(report: dict | None, hospitals: dict[str, dict], min_melanomas: int,
            not_compared: str | None = None) -> tuple[str, list[str]]:
    """(PROMOTED, REJECTED or UNDECIDED, the reasons) from the base comparison (None where there was none,
    not_compared saying why) and the hospitals' figures (compare_groups)."""
    if report is None:
        return UNDECIDED, [f"not compared with the champion: {not_compared}"]
    failures = list(report["shipping_rule"]["failures"])
    for name, figures in sorted(hospitals.items()):
        difference = figures["melanoma_auc_difference"]
        if figures["melanomas"] >= min_melanomas and difference is not None and difference < -SHIPPING_TOLERANCE:
            failures.append(f"{SPLIT_AUC} on {name}'s held-back images falls by {-difference:.3f}")
    return (REJECTED, failures) if failures else (PROMOTED, [])


def held_back_groups(snapshot: Snapshot, storage_dir: str) -> dict[str, list[tuple[bytes, str]]]:
    """Each hospital's held-back confirmed images, as (bytes, class name)."""
    store, groups = ImageStore(storage_dir), defaultdict(list)
    for row in snapshot.held_back:
        groups[row["source"]].append((store.read(row["storage_path"]), row["label"]))
    return dict(groups)


def judge(champion: ModelVersion, version: ModelVersion, out_dir: Path, data_dirs: list[str],
          snapshot: Snapshot) -> str:
    """Score, decide, carry the decision out and record it; returns the verdict."""
    config = current_app.config
    champion_dir = resolve_path(champion.artifact_path).parent
    run = {"runtime": config["INFERENCE_RUNTIME"], "cache_dir": config["MODEL_CACHE_DIR"]}
    target = f"model:{version.id}"
    report, reason = None, None
    try:
        report = compare(champion_dir, out_dir, data_dirs, **run)
    except ValueError as error:
        reason = str(error)
        AuditEvent.record(ACTOR, "model.not_compared", target, champion=champion.id, reason=reason)
    else:
        auc = report["figures"][SPLIT_AUC]
        AuditEvent.record(ACTOR, "model.compared", target, champion=champion.id,
                          passes_shipping_rule=report["shipping_rule"]["passes"],
                          failures=report["shipping_rule"]["failures"], melanoma_auc_change=auc["difference"],
                          melanoma_auc_change_interval_95=auc["interval_95"])
    hospitals = compare_groups(champion_dir, out_dir, held_back_groups(snapshot, config["STORAGE_DIR"]), **run)
    outcome, reasons = verdict(report, hospitals, config["GATE_MIN_MELANOMAS"], reason)
    version.card = {**(version.card or {}), "gate": {
        "champion": champion.id, "verdict": outcome, "reasons": reasons, "hospitals": hospitals,
        "min_melanomas": config["GATE_MIN_MELANOMAS"]}}
    if outcome == PROMOTED:
        version.promote()
        AuditEvent.record(ACTOR, "model.promoted", target, label=version.label, replaces=champion.id)
    elif outcome == REJECTED:
        version.status = ModelStatus.REJECTED
        AuditEvent.record(ACTOR, "model.rejected", target, label=version.label, reasons=reasons)
    AuditEvent.record(ACTOR, "model.gated", target, verdict=outcome, reasons=reasons, hospitals={
        name: {key: figures[key] for key in ("images", "melanomas", "melanoma_auc_difference")}
        for name, figures in hospitals.items()})
    db.session.commit()
    if outcome == PROMOTED:
        # The inference workers, serving it from their next task, score the held-back images the hospitals'
        # reliability is measured on (web/reliability.py), and measure each hospital's shift from it.
        send_chunks(current_app, SCORE_IMAGES, [row["image_id"] for row in snapshot.held_back])
        current_app.extensions["celery"].send_task(MEASURE_SHIFT, queue=INFERENCE_QUEUE)
    return outcome
