"""Malle: find modified copies of images, and measure how well each method finds them.

Three layers, each importing only those below it (``tests/test_architecture.py`` enforces it):

* the core: ``io`` (images, caches, shards), ``data`` (sampling, pools), ``ops`` (the edits),
  ``descriptors`` and ``inference`` (the methods and the engines that run them), ``retrieval`` (metrics,
  indexes, top-K search), ``tricks`` (matching tricks) and ``evaluation`` (Recall@K, µAP, attribution);
* the lab, ``lab``: an ``Experiment`` runs the cached stage graph (``malle.lab.stages``; ``malle stages``
  lists its stages) and ``Results`` turns its outputs into tables;
* the products: ``bank``, ``service``, ``dedup``, ``scale``, ``report``, ``dashboard`` and ``cli``.
"""

def __getattr__(name: str) -> str:
    # ``malle.__version__`` is looked up on first use: importlib.metadata is slow to import,
    # and most imports of malle never ask.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'malle' has no attribute {name!r}")


def _version() -> str:
    """The installed distribution's version; in a checkout never installed, pyproject.toml's, where it is set."""
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    try:
        return version("malle")
    except PackageNotFoundError:
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return tomllib.loads(pyproject.read_text())["project"]["version"]
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"
