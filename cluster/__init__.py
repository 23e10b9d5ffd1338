"""Running the search on a multi-node Ray cluster.

Configs: ``aws.yaml`` / ``gcp.yaml`` (Ray cluster launcher), ``kuberay/`` (RayCluster, RayJob, shared
volume), ``specs/`` (cluster search specs), checked offline by ``validate``. Code: ``submit`` (``fersearch
submit``: a search as a Ray Job), ``job`` (the job's driver), ``local`` (a real multi-node cluster on one
machine), ``placement`` (which node each trial ran on). Data-parallel trials are trial machinery and live in
``search/trial/ddp.py``: the search never imports this package. See ``cluster/README.md``.
"""
