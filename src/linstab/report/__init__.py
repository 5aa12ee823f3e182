"""``linstab report``: the whole paper for one (or two) models in one command.

Writes ``DIR/index.html`` (opens offline; figures are files beside it), ``DIR/data/`` (CSV
tables and NPZ arrays behind every figure) and ``DIR/environment.json`` (versions, device, model
SHA-256, image set, timings). Every expensive result goes through :class:`~linstab.cache.ResultCache`
(keyed by model SHA-256, image hash, operator, method, dtype and linstab version), so a second
run is near-instant and a killed run resumes. Every claim of the paper is a finding
(``DIR/data/findings.csv``): a per-image statistic, its 95% bootstrap interval over the images,
a paired test where two conditions are compared, the decision rule (:mod:`.rules`) and a verdict;
``docs/findings.md`` lists them with their thresholds.
"""

from .build import build_report
from .context import SECTIONS, Finding, ReportConfig, Section

__all__ = [
    "Finding",
    "ReportConfig",
    "SECTIONS",
    "Section",
    "build_report",
]
