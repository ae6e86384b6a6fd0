"""The shipped model directory: its card and its artifact."""



from web.config import DEFAULT_MODEL_DIR
from worker.classifier.artifacts import read_card


def test_shipped_model_card_matches_its_artifact():
    card, artifact = read_card(DEFAULT_MODEL_DIR)
    assert card["class_names"][3] == "melanoma" and len(card["class_names"]) == 9
    assert 0.0 < card["alert_threshold"] < 1.0
    assert artifact.stat().st_size < 20 * 1024 * 1024
    for key in ("input_size", "metrics", "training", "trained_at"):
        assert key in card
    assert card["training"]["data_sha256"]
