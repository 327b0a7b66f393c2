"""Background work: the TaskRunner interface and its in-process backend (``inline.py``)."""

from __future__ import annotations

from bastion.tasks.inline import ThreadTaskRunner
from bastion.tasks.interface import PeriodicTask, TaskRunner

__all__ = ["PeriodicTask", "TaskRunner", "ThreadTaskRunner"]
