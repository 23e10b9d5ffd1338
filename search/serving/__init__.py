"""The exported ensemble: ONNX + safetensors export (:class:`ExportManifest`, the only reader and writer of
its ``manifest.json``), the Predictor, predict on photos and video, the export as a W&B artifact; the
options of ``fersearch serve`` (its Ray Serve application, ``search.serving.serve``, is imported only
where it runs: Ray Serve is heavy to import)."""

from search.serving.artifact import log_export_artifact
from search.serving.distill import DistillError, DistillOptions, DistillResult, distill
from search.serving.export import (
    ExportError,
    ExportManifest,
    ExportMember,
    Predictor,
    export_ensemble,
    load_member,
    verify_export,
)
from search.serving.options import MAX_BYTES, ServeError, ServeOptions, ensure_port_free, port_in_use
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
    "DistillError",
    "DistillOptions",
    "DistillResult",
    "ExportError",
    "ExportManifest",
    "ExportMember",
    "InputError",
    "MAX_BYTES",
    "MIN_SIDE",
    "NO_FACE",
    "Predictor",
    "STATUSES",
    "ServeError",
    "ServeOptions",
    "csv_header",
    "distill",
    "ensure_port_free",
    "export_ensemble",
    "face_box_crop",
    "load_gray",
    "load_member",
    "log_export_artifact",
    "port_in_use",
    "predict_paths",
    "preprocess_config",
    "verify_export",
]
