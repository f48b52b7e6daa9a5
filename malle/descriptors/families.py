"""What kind of method a descriptor is: its family, with the title and the place the Overview gives it.

A ``Family`` is the family's name as tables print it (``methods.csv``, ``costs.csv``), so it
reads and compares as that text, and it carries its plural title and its order: readers take the
families top-down, methods built for copy detection first, hashes last.
"""

from __future__ import annotations


class Family(str):
    """A family name with its title (plural, for headings) and its order on the Overview (lower first)."""

    title: str  # type: ignore[assignment]  # the family's heading, in place of str.title on purpose
    order: int

    def __new__(cls, name: str, title: str, order: int) -> Family:
        family = super().__new__(cls, name)
        family.title = title
        family.order = order
        return family

    def __reduce__(self):
        return type(self), (str(self), self.title, self.order)

    def __repr__(self) -> str:
        return f"Family({str(self)!r}, title={self.title!r}, order={self.order})"


COPY_DETECTION = Family("copy-detection descriptor", "Copy-detection descriptors", 0)
IMAGENET_CNN = Family("ImageNet CNN", "ImageNet CNNs", 1)
PERCEPTUAL_HASH = Family("perceptual hash", "Perceptual hashes", 2)

LAST = 99  # where a family nobody ordered goes: after the built-in ones


def as_family(family: str) -> Family:
    """A descriptor's family as a ``Family``; a plain name (a plug-in's) is titled by itself and goes last."""
    return family if isinstance(family, Family) else Family(family, family, LAST)
