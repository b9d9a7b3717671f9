"""Metrics and reports: accuracy, pose Acc@pi/6 and pi/18, median error, tables and plots."""

from .metrics import pose_errors, summarize

__all__ = ["pose_errors", "summarize"]
