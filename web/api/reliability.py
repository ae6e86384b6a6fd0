"""What a hospital can know about the model that serves it: how reliable its alerts have proved on the
hospital's own held-back confirmed images, and how far the running retraining has got."""

from flask import current_app, g

from web.api import bp
from web.api.auth import require_api_key
from web.queue import retrain_progress
from web.reliability import reliability


@bp.get("/reliability")
@require_api_key
def get_reliability():
    return reliability(g.hospital)


@bp.get("/retraining")
@require_api_key
def get_retraining():
    """The last retraining's stage, epoch of epochs and figures, and its outcome once done (none for a week:
    `{"retraining": null}`)."""
    return {"retraining": retrain_progress(current_app)}
