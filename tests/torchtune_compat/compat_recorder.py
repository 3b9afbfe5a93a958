"""pytest plugin for the vendored-suite run: writes each test's outcome and each collection
error to the JSON file named by ``--compat-record`` (read by test_torchtune_compat.py)."""

from __future__ import annotations

import json

_outcomes: dict[str, str] = {}
_errors: dict[str, str] = {}
_messages: dict[str, str] = {}


def _short(report) -> str:
    """The one-line reason of a failure (the exception line pytest shows)."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


def pytest_addoption(parser) -> None:
    parser.addoption("--compat-record", default=None, help="write test outcomes to this JSON file")


def pytest_collectreport(report) -> None:
    if report.failed:
        _errors[report.nodeid] = _short(report)


def pytest_runtest_logreport(report) -> None:
    previous = _outcomes.get(report.nodeid)
    if report.failed:
        _outcomes[report.nodeid] = "failed"
        _messages.setdefault(report.nodeid, _short(report))
    elif report.skipped and previous != "failed":
        _outcomes[report.nodeid] = "skipped"
    elif report.when == "call" and previous is None:
        _outcomes[report.nodeid] = "passed"


def pytest_sessionfinish(session) -> None:
    path = session.config.getoption("--compat-record")
    if path:
        with open(path, "w") as f:
            json.dump({"outcomes": _outcomes, "messages": _messages, "collection_errors": _errors}, f, indent=1)
