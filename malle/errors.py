"""The errors a user can cause, as one hierarchy.

The CLI and the dashboard frame catch ``MalleError`` and nothing broader: a user's
mistake (a wrong option, a missing folder, absent weights, a bad image, a cache
that cannot be written) becomes one line naming the option or path, while an
internal bug keeps its traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MalleError(Exception):
    """Base of every error caused by input, configuration or the environment, not by a bug."""


class ConfigError(MalleError, ValueError):
    """An option or setting is invalid; the message names it."""


class DatasetError(MalleError, ValueError):
    """The dataset folder is missing, empty, not allowed or holds no usable image."""


class WeightsUnavailable(MalleError, RuntimeError):
    """Model weights cannot be had; ``str(err)`` tells the user how to provide them."""


class BadImage(MalleError, ValueError):
    """A file that cannot be used as an image; ``str(err)`` is the reason."""


class CacheError(MalleError, OSError):
    """The cache folder cannot be used (not a folder, not writable)."""


class MissingExtra(MalleError, ImportError):
    """An optional part was used without the pip extra that installs it; the message names the extra."""


# Each pip extra (pyproject.toml's optional-dependencies) and the top-level modules it installs. A base install
# has none of them, so the modules that use them import them through ``import_extra``, when they are used.
EXTRAS: dict[str, tuple[str, ...]] = {
    "dashboard": ("streamlit", "altair"),
    "ray": ("ray",),
    "service": ("fastapi", "uvicorn", "python_multipart"),
    "report": ("playwright",),
}


def import_extra(module: str, what: str) -> ModuleType:
    """``module`` (one of an extra's, or a submodule of one), or a one-line ``MissingExtra`` saying that ``what``
    needs the extra and how to install it."""
    top = module.partition(".")[0]
    extra = next(name for name, modules in EXTRAS.items() if top in modules)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.partition(".")[0] != top:
            raise  # the extra is there but something it needs is not: a broken install keeps its traceback
        raise MissingExtra(f"{what} needs the '{extra}' extra: pip install 'malle[{extra}]'") from None
