"""The run report: learning curves, the schedule, the confusion matrix and per-task test files of a run."""

from lit_transfer.callbacks.report.run_report import RunReport

__all__ = ["RunReport"]
