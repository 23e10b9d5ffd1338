from __future__ import annotations

from data_pipeline.fer2013 import check_header
from search.pipeline import DATA_ENV, DataSource, default_data_locations, resolve_data


def test_explicit_data_wins(tmp_path):
    assert resolve_data(tmp_path / "mine.csv", tmp_path) == DataSource(tmp_path / "mine.csv", synthetic=False)


def test_env_location_is_used_when_present(tmp_path, monkeypatch):
    real = tmp_path / "fer2013.csv"
    real.write_text("emotion,pixels,Usage\n")
    monkeypatch.setenv(DATA_ENV, str(real))
    monkeypatch.chdir(tmp_path)
    assert default_data_locations()[0] == real
    assert resolve_data(None, tmp_path / "out") == DataSource(real, synthetic=False)


def test_falls_back_to_synthetic_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    source = resolve_data(None, tmp_path / "out")
    path = source.path
    out = capsys.readouterr().out.strip().splitlines()
    assert source.synthetic and path.is_file() and path.name.endswith(".csv.gz")
    assert len(out) == 1 and "synthetic" in out[0]
    check_header(path)
