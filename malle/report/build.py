"""Assemble the report: each section from the run's folder, in the order a non-engineer reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from malle.report import html
from malle.report.details import edits_section, openset_section
from malle.report.gallery import gallery_section
from malle.report.picture_sources import THUMB_PX, Images
from malle.report.provenance import is_demo, provenance_section
from malle.report.run_folder import RunFolder
from malle.report.summary import headline, methods_section, recall_section

Progress = Callable[[str, float], None]  # (what is being done, share done 0..1)

# What the report makes smaller than the run's own files, said in the report and the CLI.
DOWNSCALED = (f"gallery images at most {THUMB_PX} px on the long side, JPEG; precision–recall curves thinned "
              "to 150 points per method; per-query tables summarised, not included")


@dataclass(frozen=True)
class Report:
    html: str
    sections: tuple[str, ...]  # the section ids, in order
    absent: tuple[str, ...]  # sections the run has nothing for

    @property
    def size(self) -> int:
        return len(self.html.encode("utf-8"))


def build(out: Path | str, images: Images | None = None, why_no_images: str = "",
          progress: Progress | None = None) -> Report:
    """The report of the run in ``out``; ``images`` gives the gallery its pictures (else it lists the misses)."""
    run = RunFolder.open(out)
    say = progress or (lambda what, share: None)
    steps: list[tuple[str, str, Callable[[], str | None], bool, str]] = [
        ("headline", "Headline", lambda: headline(run), False, ""),
        ("methods", "Methods", lambda: methods_section(run), False, ""),
        ("recall", "Recall@K", lambda: recall_section(run), False, ""),
        ("edits", "Edits", lambda: edits_section(run), True, ""),
        ("openset", "Open set", lambda: openset_section(run), True,
         "This run has no open set (no distractor queries were made): µAP and precision–recall are left out."),
        ("failures", "Failures", lambda: gallery_section(run, images, why_no_images), True, ""),
        ("provenance", "Provenance", lambda: provenance_section(run), True, ""),
    ]
    sections: list[html.Section | html.Omitted] = []
    absent: list[str] = []
    for i, (key, title, make, new_page, missing) in enumerate(steps):
        say(f"{title}…", i / len(steps))
        body = make()
        if body is None:  # no heading, no section: one line saying what is left out and why
            absent.append(key)
            sections.append(html.Omitted(key, missing))
        else:
            sections.append(html.Section(key, title, body, new_page))
    say("Done", 1.0)
    data = "the built-in demo photos" if is_demo(run.config.get("data")) else run.config.get("data")
    subtitle = (f"{data} · {len(run.originals)} originals · seed {run.config.get('seed')} · "
                f"run written {run.written:%Y-%m-%d}. Downscaled for size: {DOWNSCALED}.")
    page = html.page("Malle report: how well each method finds modified copies", subtitle, sections)
    return Report(page, tuple(s.key for s in sections if s.key not in absent), tuple(absent))
