"""``fersearch serve``: a real Ray Serve application on loopback, a small real export (ONNX, TTA), real HTTP.

What is checked: each endpoint; a served face gets the records ``fersearch predict`` writes for the same
file (classes, boxes, probabilities to 1e-6), alone and under concurrent requests that share batches;
every kind of bad request is one JSON line with its 4xx and the server goes on serving; a port in use is one
``fersearch: error:`` line and exit 2 before Ray starts."""

from __future__ import annotations

import io
import socket
import tarfile
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests

from search.cli import main
from search.serving import Predictor, ServeOptions, predict_paths
from tests.conftest import SHARED_DATA, untrained_export

CKPLUS = SHARED_DATA / "ckplus.tar"
FACES = ("CK+48/happy/S010_006_00000015.png", "CK+48/surprise/S010_002_00000012.png")
MAX_BYTES = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def small_face(seed: int) -> np.ndarray:
    """A 48×48 image: classified whole, as FER2013's pre-cropped faces are (no detector involved)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:48, 0:48]
    return np.clip(100 + 40 * np.sin(xx / (3 + seed)) + rng.normal(0, 20, (48, 48)) + yy, 0, 255).astype(
        np.uint8
    )


def photo() -> np.ndarray | None:
    """Two real CK+ faces upscaled onto a 320×240 canvas (None without the shared data): the detector's
    path."""
    if not CKPLUS.is_file():
        return None
    img = np.full((240, 320), 128, np.uint8)
    with tarfile.open(CKPLUS) as tar:
        for name, left in zip(FACES, (20, 180), strict=True):
            face = cv2.imdecode(np.frombuffer(tar.extractfile(name).read(), np.uint8), 0)
            img[65:175, left : left + 110] = cv2.resize(face, (110, 110), interpolation=cv2.INTER_CUBIC)
    return img


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    from search.serving.serve import start, stop

    export = untrained_export(tmp_path_factory.mktemp("serve_export"), onnx=True, tta=True)
    options = ServeOptions(port=free_port(), max_batch=8, max_bytes=MAX_BYTES, cpus=1)
    url = start(export, options)
    yield export, url
    stop()


def offline(export, path) -> list[dict]:
    return [r.to_json() for r in predict_paths(Predictor.from_dir(export), [path])]


def assert_same_records(served: list[dict], local: list[dict]) -> None:
    assert len(served) == len(local)
    for s, o in zip(served, local, strict=True):
        assert (s["status"], s["box"], s["roi"], s["class"]) == (o["status"], o["box"], o["roi"], o["class"])
        if o["probabilities"]:
            for c, p in o["probabilities"].items():  # 6 decimals in both: equal within one unit of the last
                assert abs(s["probabilities"][c] - p) <= 1e-6 + 1e-9, (c, s["probabilities"][c], p)


def test_health_and_model(server):
    export, url = server
    health = requests.get(f"{url}/healthz", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    model = requests.get(f"{url}/model", timeout=30).json()
    assert model["classes"] == ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]
    assert [m["arch"] for m in model["members"]] == ["mini_xception"]
    assert model["tta"]["flip"] is True and model["crop"] == "face-box"


def test_served_equals_offline_raw_multipart_and_photo(server, tmp_path):
    export, url = server
    cases = [("face.png", png(small_face(0)), "image/png"), ("face.jpg", jpeg(small_face(1)), "image/jpeg")]
    img = photo()
    if img is not None:
        cases.append(("photo.jpg", jpeg(img), "image/jpeg"))
    for name, data, ctype in cases:
        path = tmp_path / name
        path.write_bytes(data)
        local = offline(export, path)
        raw = requests.post(f"{url}/predict", data=data, headers={"Content-Type": ctype}, timeout=60)
        assert raw.status_code == 200, raw.text
        assert_same_records(raw.json()["results"], local)
        form = requests.post(f"{url}/predict", files={"image": (name, data, ctype)}, timeout=60)
        assert form.status_code == 200, form.text
        assert form.json()["input"] == name
        assert_same_records(form.json()["results"], local)
    if img is not None:
        assert [r["status"] for r in local] == ["ok", "ok"]  # the photo's two faces, each with its box


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer(server, tmp_path):
    export, url = server
    images = [png(small_face(s)) for s in range(16)]
    for i, data in enumerate(images):
        (tmp_path / f"{i}.png").write_bytes(data)

    def post(data: bytes) -> dict:
        r = requests.post(f"{url}/predict", data=data, headers={"Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, images))
    for i, answer in enumerate(answers):
        assert_same_records(answer["results"], offline(export, tmp_path / f"{i}.png"))


def test_bad_requests_are_one_line_4xx_and_serving_goes_on(server):
    _, url = server
    face = jpeg(cv2.resize(small_face(2), (200, 200)))
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    bad = {
        "empty body": (b"", "image/png", 400, "empty"),
        "not an image": (b"hello, this is text", "image/png", 400, "not an image"),
        "numpy file": (buf.getvalue(), "application/octet-stream", 400, "not an image"),
        "truncated jpeg": (face[: len(face) // 2], "image/jpeg", 400, "truncated"),
        "truncated png": (png(small_face(3))[:200], "image/png", 400, "not a readable image"),
        "too large": (b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), "image/png", 413, "limit"),
        "wrong type": (png(small_face(4)), "text/plain", 415, "not an image"),
        "1x1 image": (png(np.zeros((1, 1), np.uint8)), "image/png", 422, "too small"),
    }
    for kind, (data, ctype, status, words) in bad.items():
        r = requests.post(f"{url}/predict", data=data, headers={"Content-Type": ctype}, timeout=60)
        assert r.status_code == status, (kind, r.status_code, r.text)
        body = r.json()
        assert body["status"] == status and words in body["error"] and "\n" not in body["error"], (kind, body)
    no_file = requests.post(f"{url}/predict", files={"note": (None, "just a field")}, timeout=60)
    assert no_file.status_code == 400 and "without a file" in no_file.json()["error"]
    assert requests.get(f"{url}/predict", timeout=30).status_code == 405
    assert requests.get(f"{url}/nothing-here", timeout=30).status_code == 404
    assert requests.get(f"{url}/healthz", timeout=30).json()["status"] == "ok"
    good = requests.post(f"{url}/predict", data=png(small_face(5)), headers={"Content-Type": "image/png"})
    assert good.status_code == 200 and good.json()["results"][0]["status"] == "ok"


def test_port_in_use_is_one_error_line_and_exit_2(served_dir, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["serve", str(served_dir), "--port", str(port)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fersearch: error: port") and "in use" in err[0]
