"""A damaged export fails whole, before any loader runs: one ``ExportError`` naming the file (and the
manifest key), and ``fersearch predict`` turns it into one line on stderr and exit code 2."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from search.cli import main
from search.serving import ExportError, Predictor, verify_export
from tests.conftest import untrained_export

CLASSES = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return untrained_export(tmp_path_factory.mktemp("damaged"))


@pytest.fixture()
def export(pristine, tmp_path):
    return shutil.copytree(pristine, tmp_path / "export")


def manifest_of(export) -> dict:
    return json.loads((export / "manifest.json").read_text())


def rewrite(export, manifest: dict) -> None:
    (export / "manifest.json").write_text(json.dumps(manifest))


def fails(export, pattern: str, backend: str = "auto") -> str:
    with pytest.raises(ExportError, match=pattern) as err:
        Predictor.from_dir(export, backend=backend)
    return str(err.value)


def test_the_pristine_export_verifies_and_loads(export):
    assert set(verify_export(export).files) == {"member_0.safetensors", "model.onnx"}
    for backend in ("onnx", "torch"):
        assert Predictor.from_dir(export, backend=backend).predict_proba(
            np.zeros((1, 48, 48), np.uint8)
        ).shape == (
            1,
            7,
        )


def test_deleted_onnx_is_missing_not_an_ort_traceback(export):
    (export / "model.onnx").unlink()
    for backend in ("auto", "onnx", "torch"):  # a listed file is missing: the export is not whole
        msg = fails(export, r"model\.onnx: missing \(listed in .*manifest\.json files\)", backend)
        assert str(export) in msg


def test_deleted_member_is_missing(export):
    (export / "member_0.safetensors").unlink()
    fails(export, r"member_0\.safetensors: missing \(members\[0\] of .*manifest\.json\)")


def test_truncated_manifest_names_the_file(export):
    text = (export / "manifest.json").read_text()
    (export / "manifest.json").write_text(text[: len(text) // 2])
    fails(export, r"manifest\.json: not valid JSON \([^()]*, line \d+ column \d+\); the export is damaged")
    (export / "manifest.json").write_bytes(b"\xff\xfe{}")
    fails(export, r"manifest\.json: not UTF-8 text")
    (export / "manifest.json").write_text("[]")
    fails(export, r"manifest\.json: holds a list, not a JSON object")


@pytest.mark.parametrize("key", ["members", "classes", "files"])
def test_manifest_without_a_key_names_it(export, key):
    m = manifest_of(export)
    del m[key]
    rewrite(export, m)
    fails(export, rf"manifest\.json: missing key '{key}'; the export is damaged or incomplete")


def test_member_without_a_key_names_it(export):
    m = manifest_of(export)
    del m["members"][0]["arch"]
    rewrite(export, m)
    fails(export, r"manifest\.json: members\[0\] has no key 'arch'")
    m["members"][0]["arch"] = "mini_xception"
    m["members"][0]["weight"] = "heavy"
    rewrite(export, m)
    fails(export, r"manifest\.json: members\[0\]\.weight has the wrong type")


def test_member_outside_the_export_is_refused(export, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(export / "member_0.safetensors", outside)
    m = manifest_of(export)
    m["members"][0]["file"] = "../outside.safetensors"
    rewrite(export, m)
    for backend in ("torch", "onnx"):
        fails(
            export,
            r"members\[0\]\.file '\.\./outside\.safetensors' points outside the export directory",
            backend,
        )
    m["members"][0]["file"] = str(outside)  # absolute
    rewrite(export, m)
    fails(export, r"points outside the export directory")
    (export / "link.safetensors").symlink_to(outside)  # a symlink that leaves the directory
    m["members"][0]["file"] = "link.safetensors"
    rewrite(export, m)
    fails(export, r"'link\.safetensors' points outside")
    m = manifest_of(export)
    m["members"][0]["file"] = "member_0.safetensors"
    m["files"]["../outside.safetensors"] = "0" * 64
    rewrite(export, m)
    fails(export, r"files key '\.\./outside\.safetensors' points outside")


def test_member_not_in_files_is_unhashed_and_refused(export):
    m = manifest_of(export)
    del m["files"]["member_0.safetensors"]
    rewrite(export, m)
    fails(
        export,
        r"member_0\.safetensors: not listed in .*manifest\.json files, so its sha256 cannot be checked",
    )


def test_member_that_does_not_fit_its_arch_is_an_export_error(export):
    m = manifest_of(export)
    m["members"][0]["arch"] = "vgg_fer11"
    rewrite(export, m)
    fails(export, r"member_0\.safetensors: does not fit vgg_fer11", backend="torch")
    m["members"][0]["arch"] = "no_such_net"
    rewrite(export, m)
    fails(export, r"member_0\.safetensors: does not fit no_such_net", backend="torch")


def test_cli_reports_a_damaged_export_in_one_line(export, tmp_path, capsys):
    (export / "model.onnx").unlink()
    img = tmp_path / "face.png"
    img.write_bytes(b"")
    assert main(["predict", str(export), str(img)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("fersearch: error: ") and "model.onnx: missing" in err


def test_unloadable_onnx_with_a_matching_sha_is_an_export_error(export):
    (export / "model.onnx").write_bytes(b"\x08\x07garbage")
    m = manifest_of(export)
    m["files"]["model.onnx"] = hashlib.sha256(b"\x08\x07garbage").hexdigest()
    rewrite(export, m)
    fails(export, r"model\.onnx: ONNX Runtime cannot load it", backend="onnx")
