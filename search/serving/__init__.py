"""The exported ensemble: ONNX + safetensors export (:class:`ExportManifest`, the only reader and writer of
its ``manifest.json``), the Predictor, predict on photos and video, the export as a W&B artifact."""

from search.serving.artifact import log_export_artifact
from search.serving.export import (
    ExportError,
    ExportManifest,
    ExportMember,
    Predictor,
    export_ensemble,
    load_member,
    verify_export,
)
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
    "ExportManifest",
    "ExportMember",
    "InputError",
    "MIN_SIDE",
    "NO_FACE",
    "Predictor",
    "STATUSES",
    "csv_header",
    "export_ensemble",
    "face_box_crop",
    "load_gray",
    "load_member",
    "log_export_artifact",
    "predict_paths",
    "preprocess_config",
    "verify_export",
]
