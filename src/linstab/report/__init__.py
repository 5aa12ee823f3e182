"""report"""

from .build import build_report
from .context import SECTIONS, Finding, ReportConfig, Section

__all__ = [
    "Finding",
    "ReportConfig",
    "SECTIONS",
    "Section",
    "build_report",
]
