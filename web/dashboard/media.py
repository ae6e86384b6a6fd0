"""Pictures for the pages: an image, its thumbnail, an alert's heatmap. They reach only a signed-in user who sees
the image's hospital (the API serves heatmaps to keys); the URLs carry database ids, and a guess at another
hospital's id is a 404."""

import io

from flask import Response, abort, current_app
from PIL import Image as PILImage

from models import Alert, Image
from web.dashboard import bp, own_or_404
from web.storage import ImageStore

THUMBNAIL_SIDE = 96
PRIVATE = {"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"}


def _stored(relative: str | None) -> bytes:
    if not relative:
        abort(404)
    try:
        return ImageStore(current_app.config["STORAGE_DIR"]).read(relative)
    except FileNotFoundError:
        abort(404)


def _mimetype(data: bytes) -> str:
    return "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"


@bp.get("/images/<int:image_id>")
def image_file(image_id: int):
    image = own_or_404(Image, image_id)
    if image.status == "rejected":
        abort(404)  # not a picture we could read: never served as one
    data = _stored(image.storage_path)
    return Response(data, mimetype=_mimetype(data), headers=PRIVATE)


@bp.get("/images/<int:image_id>/thumbnail")
def image_thumbnail(image_id: int):
    image = own_or_404(Image, image_id)
    if image.status == "rejected":
        abort(404)
    data = _stored(image.storage_path)
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            picture.draft("RGB", (THUMBNAIL_SIDE * 2, THUMBNAIL_SIDE * 2))
            picture = picture.convert("RGB")
            picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            out = io.BytesIO()
            picture.save(out, format="JPEG", quality=85)
    except (OSError, ValueError, PILImage.DecompressionBombError):
        abort(404)
    return Response(out.getvalue(), mimetype="image/jpeg", headers=PRIVATE)


@bp.get("/alerts/<int:alert_id>/heatmap")
def alert_heatmap(alert_id: int):
    alert = own_or_404(Alert, alert_id)
    return Response(_stored(alert.heatmap_path), mimetype="image/png", headers=PRIVATE)
