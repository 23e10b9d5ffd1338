"""The exported ensemble: ONNX + safetensors export, the Predictor, predict on photos and video."""

from search.serving.export import ExportError, Predictor, export_ensemble, verify_export
from search.serving.predict import (
    MIN_SIDE,
    NO_FACE,
    STATUSES,
    InputError,
    csv_header,
    face_box_crop,
    load_gray,
    predict_paths,
    preprocess_config,
)

__all__ = [
    "ExportError",
    "InputError",
    "MIN_SIDE",
    "NO_FACE",
    "Predictor",
    "STATUSES",
    "csv_header",
    "export_ensemble",
    "face_box_crop",
    "load_gray",
    "predict_paths",
    "preprocess_config",
    "verify_export",
]
