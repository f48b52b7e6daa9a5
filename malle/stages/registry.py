"""Every stage, by kind. Adding a stage: a new module in this package defining ``STAGE``, its import
below, and one line in ``STAGES``."""

from __future__ import annotations

from . import derived
from .attribution import STAGE as ATTRIBUTION
from .background import STAGE as BACKGROUND
from .base import Stage
from .copies import STAGE as COPIES
from .distractors import STAGE as DISTRACTORS
from .embed import STAGE as EMBED
from .openset import STAGE as OPENSET
from .references import STAGE as REFERENCES
from .samples import STAGE as SAMPLES
from .search import STAGE as SEARCH
from .sweep import STAGE as SWEEP
from .sweepscore import STAGE as SWEEPSCORE


def _by_kind(*stages: Stage) -> dict[str, Stage]:
    return {stage.kind: stage for stage in stages}


STAGES = _by_kind(
    SAMPLES,
    COPIES,
    EMBED,
    REFERENCES,
    derived.ByMethod(SEARCH, derived.SEARCH),  # METHOD+trick: built by its trick (malle.stages.derived)
    DISTRACTORS,
    derived.ByMethod(OPENSET, derived.OPENSET),
    derived.ByMethod(ATTRIBUTION, derived.ATTRIBUTION),
    BACKGROUND,
    SWEEP,
    derived.ByMethod(SWEEPSCORE, derived.SWEEPSCORE),
)
