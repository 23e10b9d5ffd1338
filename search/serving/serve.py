"""``fersearch serve``: an export behind HTTP on Ray Serve.

``POST /predict`` takes one image (the raw body, or the first file of a ``multipart/form-data`` form) and
answers ``{"input", "faces", "results"}`` where ``results`` are the records ``fersearch predict --format
jsonl`` writes for the same file: one per face (box, class, probabilities) or one ``no_face`` record. Faces
of concurrent requests are classified together (``@serve.batch``) on the export's ONNX model, so the
replica runs one forward pass per batch, not per request. ``GET /healthz`` and ``GET /model`` (the export's
manifest in short) answer too.

A bad request gets one JSON object ``{"error": "...", "status": 4xx}`` and the replica goes on serving:
an empty body (400), bytes that are no image or a truncated one (400), a content type that is no image
(415), a body over ``max_bytes`` (413), an image too small to hold a face (422), an unknown path (404) or
method (405).

The export travels to the replicas as bytes (:func:`export_files`), so a replica on another node of a
cluster needs no shared filesystem.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from ray import serve

from data_pipeline.preprocess import image_format
from search.serving.export import MANIFEST_FILE, ExportManifest, Predictor, verify_export
from search.serving.options import ServeOptions, ensure_port_free
from search.serving.predict import (
    MIN_SIDE,
    InputError,
    crop_of,
    decode_upload,
    image_items,
    preprocess_config,
    result_of,
)

APP_NAME = "fersearch"
#: Content types a raw body may declare (a client that names none, or octet-stream, is read by its bytes).
IMAGE_TYPES = frozenset(
    {
        "image/jpeg", "image/jpg", "image/png", "image/bmp", "image/x-ms-bmp", "image/tiff", "image/webp",
        "image/gif", "image/x-portable-graymap", "image/x-portable-anymap", "application/octet-stream", "",
    }
)  # fmt: skip
ROUTES = {"/predict": "POST", "/healthz": "GET", "/model": "GET"}


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and a one-line ``reason`` naming what is wrong."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def body(self) -> dict:
        return {"error": self.reason, "status": self.status}


def export_files(export_dir: str | Path) -> dict[str, bytes]:
    """The files of a whole export (checked by :func:`verify_export`), by name: what a replica needs."""
    root = Path(export_dir)
    manifest = verify_export(root)
    return {name: (root / name).read_bytes() for name in (MANIFEST_FILE, *manifest.files)}


def model_summary(manifest: ExportManifest) -> dict:
    """``GET /model``: what a client needs to know of the export it talks to."""
    return {
        "format": manifest.format,
        "classes": list(manifest.classes),
        "members": [
            {k: m.to_dict()[k] for k in ("arch", "weight", "trial_id", "val_acc")} for m in manifest.members
        ],
        "crop": crop_of(manifest.preprocessing),
        "tta": {"flip": manifest.tta_flip, "zooms": list(manifest.zooms) if manifest.tta_flip else []},
        "input": manifest.input,
        "metrics": manifest.metrics,
        "versions": manifest.versions,
    }


def decode_request(data: bytes, name: str, max_bytes: int) -> np.ndarray:
    """An uploaded image → grayscale, as ``fersearch predict`` decodes the same file, or a RequestError."""
    if not data:
        raise RequestError(400, "empty body: send one image (JPEG, PNG, BMP, TIFF or WebP)")
    if len(data) > max_bytes:
        raise RequestError(413, f"{name}: {len(data)} bytes, over the limit of {max_bytes}")
    if image_format(data[:16]) is None:
        raise RequestError(
            400, f"{name}: not an image (its first bytes are no JPEG/PNG/BMP/TIFF/WebP header)"
        )
    try:
        gray = decode_upload(data, name)
    except InputError as e:
        raise RequestError(400, str(e)) from None
    except cv2.error as e:  # a header OpenCV's decoders reject outright (a damaged TIFF, say)
        raise RequestError(400, f"{name}: not a readable image ({str(e).strip().splitlines()[-1]})") from None
    h, w = gray.shape
    if min(h, w) < MIN_SIDE:
        raise RequestError(
            422,
            f"{name}: image is {w}×{h} px, too small to hold a face (needs at least {MIN_SIDE} px a side)",
        )
    return gray


async def read_upload(request, max_bytes: int) -> tuple[bytes, str]:
    """(image bytes, name) of a request: the first file of a multipart form, else the raw body (named by an
    ``X-Filename`` header, else ``request``). The body is read in chunks and refused past ``max_bytes``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    length = request.headers.get("content-length", "")
    slack = 64 * 1024 if ctype == "multipart/form-data" else 0  # the form's own boundaries and headers
    if length.isdigit() and int(length) > max_bytes + slack:
        raise RequestError(413, f"body of {int(length)} bytes, over the limit of {max_bytes}")
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=16)
        except Exception as e:  # starlette and python-multipart raise their own parse errors
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise RequestError(400, f"not a readable multipart form ({why})") from None
        files = [v for v in form.values() if hasattr(v, "read") and hasattr(v, "filename")]
        if not files:
            raise RequestError(400, "multipart form without a file: send the image as a file field")
        upload = files[0]
        return await upload.read(), upload.filename or "upload"
    if ctype not in IMAGE_TYPES:
        kinds = "image/jpeg, image/png, image/bmp, image/tiff, image/webp, application/octet-stream"
        why = f"content type {ctype!r} is not an image: send {kinds} or multipart/form-data"
        raise RequestError(415, why)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestError(413, f"body over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks), request.headers.get("x-filename") or "request"


class FERService:
    """One replica: the export loaded from its bytes, requests decoded and cropped in a worker thread, the
    faces of concurrent requests batched into one ONNX Runtime call."""

    def __init__(self, files: dict[str, bytes], options: dict) -> None:
        self.options = ServeOptions(**options)
        self._dir = tempfile.TemporaryDirectory(prefix="fersearch-serve-")
        for name, data in files.items():
            (Path(self._dir.name) / name).write_bytes(data)
        threads = max(1, int(self.options.cpus_per_replica()))
        self.predictor = Predictor.from_dir(self._dir.name, threads=threads)
        self.classes = list(self.predictor.classes)
        recorded = self.predictor.manifest.preprocessing
        self.cfg = preprocess_config(recorded, self.options.roi)
        self.crop = self.options.crop or crop_of(recorded)
        self.summary = model_summary(self.predictor.manifest)
        self.classify.set_max_batch_size(self.options.max_batch)
        self.classify.set_batch_wait_timeout_s(self.options.batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def classify(self, images: list[np.ndarray]) -> list[np.ndarray]:
        probs = await asyncio.to_thread(self.predictor.predict_proba, np.stack(images))
        return list(probs)

    async def predict(self, data: bytes, name: str) -> dict:
        gray = await asyncio.to_thread(decode_request, data, name, self.options.max_bytes)
        detector = self.options.detector
        items = await asyncio.to_thread(lambda: list(image_items(name, gray, self.cfg, self.crop, detector)))
        faces = [it for it in items if it.image is not None]
        probs = iter(await asyncio.gather(*(self.classify(it.image) for it in faces)))
        results = [result_of(it, next(probs) if it.image is not None else None, self.classes) for it in items]
        return {"input": name, "faces": len(faces), "results": [r.to_json() for r in results]}

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        path = request.url.path.rstrip("/") or "/"
        status, body = 200, None
        try:
            if path not in ROUTES:
                raise RequestError(404, f"no route {path}: POST /predict, GET /healthz, GET /model")
            if request.method != ROUTES[path]:
                raise RequestError(405, f"{request.method} {path}: use {ROUTES[path]} {path}")
            if path == "/healthz":
                body = {"status": "ok", "pid": os.getpid(), "classes": len(self.classes)}
            elif path == "/model":
                body = self.summary
            else:
                data, name = await read_upload(request, self.options.max_bytes)
                body = await self.predict(data, name)
        except RequestError as e:
            status, body = e.status, e.body()
        except Exception as e:  # a fault of ours: one line for the client, the replica keeps serving
            status, first = 500, (str(e).splitlines() or [""])[0]
            body = {"error": f"internal error: {type(e).__name__}: {first}", "status": status}
        # which replica answered: a load test that kills one tells its replacement by this
        return JSONResponse(body, status_code=status, headers={"X-Served-By": str(os.getpid())})


def application(export_dir: str | Path, options: ServeOptions):
    """The Ray Serve application of an export: ``FERService`` with its replicas, CPUs and batching."""
    options.check()
    deployment = serve.deployment(
        FERService,
        name="FERService",
        num_replicas=options.replicas,
        max_ongoing_requests=options.max_ongoing(),
        ray_actor_options={"num_cpus": options.cpus_per_replica()},
    )
    return deployment.bind(export_files(export_dir), asdict(options))


def start(export_dir: str | Path, options: ServeOptions) -> str:
    """Deploy the export on the running Ray instance and return its URL. ``ray.init`` first (the CLI
    does); the server runs until :func:`stop` or Ray's shutdown."""
    options.check()
    ensure_port_free(options.host, options.port)
    app = application(export_dir, options)
    serve.start(http_options={"host": options.host, "port": options.port})
    serve.run(app, name=APP_NAME, route_prefix="/")
    host = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{host}:{options.port}"


def stop() -> None:
    serve.shutdown()


__all__ = [
    "APP_NAME",
    "FERService",
    "RequestError",
    "application",
    "decode_request",
    "export_files",
    "model_summary",
    "read_upload",
    "start",
    "stop",
]
