"""The CPU runtime of served models: the Keras model converted to LiteRT (TensorFlow Lite) and run by XNNPACK.

On 2 CPU cores the converted Lite0 classifies over twice as many images a second as the same model run by
TensorFlow, with the same probabilities (bench/inference_speed.py --runtime keras litert). The `.keras`
artifact stays the one thing the registry hashes, training writes and a GPU worker runs; the converted model
is made from it when a worker loads it and kept in a cache under the artifact's hash.
"""

import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# Part of the cache key: change it when the conversion changes, so old cached conversions are made again.
CONVERSION = "folded-float32-inference-2"
SUFFIX = ".tflite"


def available() -> bool:
    """Whether this machine can run converted models (the ai-edge-litert package is installed)."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def convert(model) -> bytes:
    """The Keras model (TensorFlow backend) as a LiteRT flatbuffer, taking images of any size and batch."""
    import keras
    import tensorflow as tf

    # The endpoint says training=False itself: `model.export` traces a plain call, and a reloaded model's plain
    # call normalises with each batch's own statistics (its probabilities then moved by 0.015 on a test model).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda images: model(images, training=False),
                         input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    with tempfile.TemporaryDirectory(prefix="melanoma-export-") as directory:
        archive.write_out(directory, verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=["serve"]).convert()


def cache_path(cache_dir: str | Path, artifact_sha256: str) -> Path:
    """Where the conversion of the artifact with this hash is kept: the key also names the converter's
    version and this module's CONVERSION, so an upgrade never serves an old conversion."""
    import tensorflow as tf

    key = hashlib.sha256(f"{artifact_sha256}:{tf.__version__}:{CONVERSION}".encode()).hexdigest()[:40]
    return Path(cache_dir) / f"{key}{SUFFIX}"


def load(model, artifact_sha256: str, cache_dir: str | Path | None) -> "LiteModel":
    """The converted model: from the cache when there and readable, else converted (seconds) and cached. A
    cache that cannot be written is only slower: the conversion is logged and used without it."""
    path = cache_path(cache_dir, artifact_sha256) if cache_dir else None
    if path is not None and path.is_file():
        try:
            return LiteModel(path.read_bytes())
        except (ValueError, RuntimeError) as error:
            log.warning("the cached conversion %s cannot be read (%s); converting again", path, error)
    flatbuffer = convert(model)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed, so a worker starting at the same moment never reads half a file.
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as handle:
                handle.write(flatbuffer)
            os.replace(handle.name, path)
        except OSError as error:
            log.warning("could not cache the converted model in %s (%s); it will be converted again next load",
                        cache_dir, error)
    return LiteModel(flatbuffer)


class LiteModel:
    """A converted model, called like the Keras one: float images (N, H, W, 3) in, probabilities out.

    An interpreter runs one call at a time, so calls from several threads (a threads pool, two tasks racing)
    take turns. It keeps the last batch shape, so a steady stream of full chunks is never re-planned; a new
    shape costs a fraction of a second.
    """

    def __init__(self, flatbuffer: bytes, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=threads or os.cpu_count() or 1)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple[int, ...] | None = None
        self._lock = threading.Lock()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        with self._lock:
            if images.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input, list(images.shape), strict=False)
                self._interpreter.allocate_tensors()
                self._shape = images.shape
            self._interpreter.set_tensor(self._input, images)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()
