import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Four synthetic images a class, in the collection's layout (folder names with spaces, JPEG and PNG),
    plus one picture filed under two classes."""
    from worker.classifier.choices import CLASS_NAMES

    data_dir = tmp_path_factory.mktemp("tiny") / "Train"
    rng = np.random.default_rng(1)
    for index, name in enumerate(CLASS_NAMES):
        (data_dir / name).mkdir(parents=True)
        for copy in range(4):
            pixels = rng.integers(0, 255, (40 + copy, 50, 3), dtype=np.uint8)
            pixels[..., index % 3] = 200
            Image.fromarray(pixels).save(data_dir / name / f"img{copy}.{'png' if copy % 2 else 'jpg'}")
    (data_dir / "nevus" / "dup.png").write_bytes((data_dir / "melanoma" / "img1.png").read_bytes())
    return data_dir


@pytest.fixture(scope="session")
def tiny_model(tiny_dataset, tmp_path_factory):
    """A model trained for one epoch on the tiny dataset: seconds, but every step of the real pipeline,
    with the Lite0 recipe's style mix, rims and field-of-view standardisation (not the small backbone's), the
    logit-adjusted loss (not the default), and a network that looks at the centre 80 % of the picture only, 32
    of the 40 pixels a side it is decoded to."""
    from worker.classifier.training import train

    out = tmp_path_factory.mktemp("tiny-model")
    card = train(tiny_dataset, out, epochs=1, seed=3, input_size=40, batch_size=8, style_mix=True,
                 augmentation="rim", colour="field-standardise", loss="logit-adjusted", field=0.8, verbose=0)
    return out, card


@pytest.fixture(scope="session")
def two_sources(tmp_path_factory):
    """Three images a class, named as the collection names them: melanomas and nevi with the older archive's
    identifiers, the rest with HAM10000's, each source its tint."""
    from worker.classifier.choices import CLASS_NAMES

    data_dir, rng = tmp_path_factory.mktemp("two-sources") / "Train", np.random.default_rng(3)
    for index, name in enumerate(CLASS_NAMES):
        (data_dir / name).mkdir(parents=True)
        for copy in range(3):
            number = 100 + 10 * index + copy if name in ("melanoma", "nevus") else 25000 + 10 * index + copy
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            pixels[..., 0 if number < 24306 else 2] = 220
            Image.fromarray(pixels).save(data_dir / name / f"ISIC_{number:07d}.png")
    return data_dir


@pytest.fixture(scope="session")
def clinic_folder(tmp_path_factory):
    """A second folder as HAM10000's is laid out: four melanomas and four nevi, two pictures a lesion, with a
    metadata.csv naming their source, clinic-x."""
    extra = tmp_path_factory.mktemp("clinic") / "clinic"
    rows, rng = ["image_id,lesion_id,source"], np.random.default_rng(8)
    for label in ("melanoma", "nevus"):
        (extra / label).mkdir(parents=True)
        for index in range(4):
            name = f"{label[:3]}{index}"
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(extra / label / f"{name}.png")
            rows.append(f"{name},{label}-lesion-{index // 2},clinic-x")
    (extra / "metadata.csv").write_text("\n".join(rows) + "\n")
    return extra
