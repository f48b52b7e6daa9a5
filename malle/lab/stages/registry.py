"""Every stage, by kind. Adding a stage: a new module in this package defining ``STAGE``, its import
below, and one line in ``STAGES``."""

from __future__ import annotations

from malle.lab.stages import derived
from malle.lab.stages.attribution import STAGE as ATTRIBUTION
from malle.lab.stages.background import STAGE as BACKGROUND
from malle.lab.stages.base import Stage
from malle.lab.stages.calibrate import STAGE as CALIBRATE
from malle.lab.stages.copies import STAGE as COPIES
from malle.lab.stages.distractors import STAGE as DISTRACTORS
from malle.lab.stages.embed import STAGE as EMBED
from malle.lab.stages.openset import STAGE as OPENSET
from malle.lab.stages.references import STAGE as REFERENCES
from malle.lab.stages.samples import STAGE as SAMPLES
from malle.lab.stages.search import STAGE as SEARCH
from malle.lab.stages.sweep import STAGE as SWEEP
from malle.lab.stages.sweepcodes import STAGE as SWEEPCODES
from malle.lab.stages.sweepscore import STAGE as SWEEPSCORE


def _by_kind(*stages: Stage) -> dict[str, Stage]:
    return {stage.kind: stage for stage in stages}


STAGES = _by_kind(
    SAMPLES,
    COPIES,
    EMBED,
    REFERENCES,
    derived.ByMethod(SEARCH, derived.SEARCH),  # METHOD+trick: built by its trick (malle.lab.stages.derived)
    DISTRACTORS,
    derived.ByMethod(OPENSET, derived.OPENSET),
    CALIBRATE,  # base and derived methods alike: it reads the openset stage's predictions
    derived.ByMethod(ATTRIBUTION, derived.ATTRIBUTION),
    BACKGROUND,
    SWEEP,
    SWEEPCODES,
    derived.ByMethod(SWEEPSCORE, derived.SWEEPSCORE),
)
