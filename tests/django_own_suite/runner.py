"""A test runner for Django's runtests.py that writes each test's outcome to a JSON file.

The file (``SYNCSMTP_SUITE_RESULTS``) maps a test id (``mail.tests.SMTPBackendTests.test_send``)
to ``{"outcome": ..., "detail": ...}``: outcome is ``passed``, ``failed``,
``error``, ``skipped``, ``expected failure`` or ``unexpected success``; a test
with a failing subtest is ``failed`` (or ``error``) with every such subtest in
``detail``. A class set-up that fails is recorded under the id unittest gives it
(``setUpClass (mail.tests.SMTPBackendTests)``).
"""

from __future__ import annotations

import json
import os
import traceback
import unittest
from types import TracebackType
from typing import Any

from django.test.runner import DiscoverRunner

ErrorInfo = tuple[type[BaseException], BaseException, TracebackType] | tuple[None, None, None]

# The worse outcome wins when a test reports more than once (subtests).
_RANK = {"passed": 0, "skipped": 1, "expected failure": 1, "unexpected success": 2, "failed": 3, "error": 4}


class RecordingResult(unittest.TextTestResult):
    """A text result that also keeps each test's outcome and writes them on ``stopTestRun``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, str]] = {}

    def _record(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        entry = self.outcomes.setdefault(test.id(), {"outcome": outcome, "detail": ""})
        if _RANK[outcome] > _RANK[entry["outcome"]]:
            entry["outcome"] = outcome
        if detail:
            entry["detail"] = (entry["detail"] + "\n" + detail).strip()

    @staticmethod
    def _describe(err: ErrorInfo) -> str:
        return "".join(traceback.format_exception(*err)).strip()

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: ErrorInfo) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", self._describe(err))

    def addError(self, test: unittest.TestCase, err: ErrorInfo) -> None:
        super().addError(test, err)
        self._record(test, "error", self._describe(err))

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: ErrorInfo) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "unexpected success")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase,
                   err: ErrorInfo | None) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = err[0] is not None and issubclass(err[0], test.failureException)
            outcome = "failed" if failed else "error"
            self._record(test, outcome, f"{subtest.id()}:\n{self._describe(err)}")

    def stopTestRun(self) -> None:
        super().stopTestRun()
        with open(os.environ["SYNCSMTP_SUITE_RESULTS"], "w", encoding="utf-8") as file:
            json.dump(self.outcomes, file, indent=1, sort_keys=True)


class RecordingRunner(DiscoverRunner):  # type: ignore[misc]  # Django is not typed
    """Django's runner, with :class:`RecordingResult` and no parallel processes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parallel"] = 1
        super().__init__(*args, **kwargs)

    def get_resultclass(self) -> type[unittest.TextTestResult]:
        return RecordingResult
