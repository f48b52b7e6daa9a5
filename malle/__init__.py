"""Malle: find modified copies of images.

The engine reproduces a five-stage experiment, one module per stage:

1. ``malle.sampling``    pick originals from a dataset folder
2. ``malle.augment``     make modified copies with replayable op chains
3. ``malle.descriptors`` encode images (CNN embeddings, perceptual hashes)
4. ``malle.search``      FAISS indexes with deterministic tie-breaking
5. ``malle.evaluate``    class- and instance-level Recall@K

``malle.experiment`` runs them in order and caches every stage on disk.
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
