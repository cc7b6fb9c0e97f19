"""Publishable external-validation reports from the tidy results table (a pure library)."""

from reports.blind import Blinder, find_leaks, pseudonym
from reports.frame import POOLED, POOLED_COLUMNS
from reports.meta import SiteInfo, StudyMeta
from reports.pooling import MetaResult, Method, random_effects
from reports.report import FORMATS, per_center_frame, write_report
from reports.taskinfo import TaskInfo, resolve_task_infos, task_info

__all__ = [
    "FORMATS",
    "POOLED",
    "POOLED_COLUMNS",
    "Blinder",
    "MetaResult",
    "Method",
    "SiteInfo",
    "StudyMeta",
    "TaskInfo",
    "find_leaks",
    "per_center_frame",
    "pseudonym",
    "random_effects",
    "resolve_task_infos",
    "task_info",
    "write_report",
]
