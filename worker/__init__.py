"""The trex worker.

`__version__` is the one place the version is written: the package metadata reads it from here when it is
built (pyproject.toml's `dynamic`), and `/health` and `trex --version` report it without looking the
installed metadata up, which imports `importlib.metadata`, `email`, `zipfile` and `csv` and lists every
`sys.path` directory: about 1 MiB of a serving worker's peak memory for one string.
"""

__version__ = "0.1.0"
