"""A collection's confidence: how sure a match is, as the probability that it is a true copy.

The map from score to probability comes from a lab run's ``calibration.json`` (``malle.evaluation.calibration``,
written by ``malle run``): ``bank create --threshold-from OUT`` stores the method's map with the collection. A
collection made otherwise (or from a run older than calibration.json) answers with the map shipped for its method
in ``calibrations.json`` next to this module, measured on the reproduction run (its ``measured_on`` says how and
where); a method without one answers ``confidence`` null.

A record, as stored and as ``Collection.calibration`` holds it: ``{"map": {"metric", "scores",
"probabilities"}, "ece": ..., "source": "..."}``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from malle.errors import ConfigError
from malle.evaluation.calibration import ConfidenceMap
from malle.retrieval.metrics import Metric, metric_named

CALIBRATION_JSON = "calibration.json"
DEFAULTS_FILE = Path(__file__).with_name("calibrations.json")


@functools.cache
def _shipped() -> dict:
    return json.loads(DEFAULTS_FILE.read_text()) if DEFAULTS_FILE.is_file() else {"methods": {}}


def default_for(method: str) -> dict | None:
    """The shipped record for ``method`` (None when none was measured)."""
    shipped = _shipped()
    fitted = shipped["methods"].get(method)
    if fitted is None:
        return None
    return {"map": fitted["map"], "ece": fitted["ece"],
            "source": f"default: calibrated on the reproduction run ({shipped['measured_on']})"}


def from_lab(folder: str | Path, method: str, metric: Metric) -> dict | None:
    """The record of ``method`` in the lab run ``folder``'s calibration.json, checked; None when the run has no
    calibration.json (made before it existed); a ConfigError when it is unreadable or lacks the method."""
    path = Path(folder).expanduser()
    path = path / CALIBRATION_JSON if path.is_dir() else path.with_name(CALIBRATION_JSON)
    if not path.is_file():
        return None
    try:
        fitted = json.loads(path.read_text())["methods"][method]
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
        raise ConfigError(f"--threshold-from {folder}: cannot read {path.name} ({err})") from None
    except KeyError:
        raise ConfigError(f"--threshold-from {folder}: {path.name} has no calibration of {method}") from None
    if not isinstance(fitted, dict) or "map" not in fitted:
        raise ConfigError(f"--threshold-from {folder}: {path.name} holds no map for {method}")
    ConfidenceMap.from_json(fitted["map"], metric)  # a damaged map is refused now, not at the first match
    return {"map": fitted["map"], "ece": fitted.get("ece"),
            "source": f"calibrated on {method}'s predictions in {path.resolve()}"}


def map_of(record: dict | None) -> ConfidenceMap | None:
    """The map a record holds (None for none)."""
    if record is None:
        return None
    return ConfidenceMap.from_json(record["map"], metric_named(record["map"]["metric"]))
