"""Malle: find modified copies of images, and measure how well each method finds them.

An experiment runs ten cached stages (``malle.stages``, one module each, run by one engine):
``samples`` picks originals (``malle.sampling``), ``copies`` makes modified copies with
replayable op chains (``malle.ops``), ``embed`` encodes them with each method
(``malle.descriptors``), ``references`` adds extra database items, ``search`` ranks every copy
in the database (``malle.search``) and evaluates it (``malle.evaluate``), ``distractors`` and
``openset`` measure open-set detection (``malle.openset``), ``attribution`` finds the op that
broke each miss, and ``sweep`` / ``sweepscore`` give severity curves.
``malle.experiment.Experiment`` runs them; ``malle.results.Results`` turns them into tables.
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
