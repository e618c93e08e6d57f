"""Beam runners this project owns (see `dask.py`: Beam pipelines on a dask.distributed cluster)."""
