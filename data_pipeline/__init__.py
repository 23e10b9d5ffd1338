"""FER benchmarks → Parquet per split with a manifest, on Ray Data: sources (FER2013, FER+, CK+, JAFFE,
image folders), face ROI, and balanced / filtered / one-vs-rest variants; plus the embedded synthetic set.

Entry points: :func:`data_pipeline.prepare.prepare` with a :class:`data_pipeline.config.PrepareConfig`,
and :func:`data_pipeline.dataset.load_split` to read a prepared split; :class:`DataManifest` is a prepared
dataset's ``manifest.json``.
"""

from data_pipeline.dataset import BaseVariant, DataManifest, ImageShape

__all__ = ["BaseVariant", "DataManifest", "ImageShape"]
