"""Multi-node Ray cluster configs and job submission (see the README; filled in by the cluster issue)."""
