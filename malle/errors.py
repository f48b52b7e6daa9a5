"""The errors a user can cause, as one hierarchy.

The CLI and the dashboard frame catch ``MalleError`` and nothing broader: a user's
mistake (a wrong option, a missing folder, absent weights, a bad image, a cache
that cannot be written) becomes one line naming the option or path, while an
internal bug keeps its traceback.
"""

from __future__ import annotations


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
