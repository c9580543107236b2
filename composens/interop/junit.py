"""Check results and scenario verdicts as JUnit XML, the report format GitLab, Jenkins and GitHub Actions display.

Checks: one <testsuites> with one <testsuite>; a <testcase> per check, classname `SUITE.SERVICE` (Jenkins
groups by it), with <failure>, <error> or <skipped> when it did not pass, and the attempts and
round trips in <system-out>, with the flight recorder's capture of a failure as an `[[ATTACHMENT|path]]`
line there (the form GitLab's test reports and Jenkins' JUnit Attachments plugin link to the file). Scenarios: a
<testsuite> per scenario, a <testcase> per expectation (classname `SUITE.SCENARIO`) with <failure> when it did not
pass, its figure and window in <system-out> (and the recorder's capture of a failure, as for a check); a step that
failed is a case with <error>, an expectation never reached (the scenario stopped first) is <skipped>. Built with
ElementTree, so every value is escaped.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from composens.model.checks import CheckResult
from composens.model.scenarios import ScenarioReport

# Characters XML 1.0 cannot carry even escaped (ANSI colour codes in a command's output, say).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ELEMENT = {"fail": "failure", "error": "error", "skipped": "skipped"}


def junit_xml(results: Sequence[CheckResult], suite_name: str, *, seconds: float | None = None) -> str:
    """Write the results as a JUnit XML document; seconds is the run's wall time (default: the sum)."""
    total = sum(r.seconds for r in results) if seconds is None else seconds
    counts = {
        "name": _clean(suite_name),
        "tests": str(len(results)),
        "failures": str(sum(r.result == "fail" for r in results)),
        "errors": str(sum(r.result == "error" for r in results)),
        "skipped": str(sum(r.result == "skipped" for r in results)),
        "time": _time(total),
    }
    root = ET.Element("testsuites", counts)
    suite = ET.SubElement(root, "testsuite", counts)
    for result in results:
        _testcase(suite, result, suite_name)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _case(suite: ET.Element, classname: str, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(suite, "testcase", {"classname": classname, "name": _clean(name), "time": _time(seconds)})


def _attachment(path: str) -> str:
    """The line CI servers (Jenkins, GitLab) show a test's file by."""
    return f"[[ATTACHMENT|{path}]]"


def _testcase(suite: ET.Element, result: CheckResult, suite_name: str) -> None:
    case = _case(suite, _clean(f"{suite_name}.{result.service}"), result.name, result.seconds)
    if result.result in _ELEMENT:
        outcome = ET.SubElement(case, _ELEMENT[result.result], {"message": _clean(result.reason or result.result)})
        if result.result != "skipped":
            outcome.set("type", result.kind)
            outcome.text = _clean(result.reason or result.result)
    out = ET.SubElement(case, "system-out")
    out.text = _details(result)


def _details(result: CheckResult) -> str:
    lines = [f"{result.kind} on {result.service}: {result.result} after {result.attempts} attempt(s)"]
    if result.rtts_ms:
        lines.append("round trips (ms): " + " ".join(f"{rtt:.3f}" for rtt in result.rtts_ms))
    if result.capture:
        lines.append(_attachment(result.capture))
    return _clean("\n".join(lines))


def scenarios_junit(reports: Sequence[ScenarioReport], suite_name: str) -> str:
    """Write scenario runs as a JUnit XML document: a suite per scenario, a case per expectation."""
    root = ET.Element("testsuites", {"name": _clean(suite_name)})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for report in reports:
        suite = ET.SubElement(root, "testsuite", {"name": _clean(f"{suite_name}.{report.name}")})
        counts = dict.fromkeys(totals, 0)
        classname = _clean(f"{suite_name}.{report.name}")
        for verdict in report.verdicts:
            case = _case(suite, classname, verdict.name, verdict.window[1] - verdict.window[0])
            if not verdict.passed:
                failure = ET.SubElement(
                    case, "failure", {"message": _clean(verdict.reason or verdict.text), "type": verdict.kind}
                )
                failure.text = _clean(verdict.reason or verdict.text)
                counts["failures"] += 1
            out = ET.SubElement(case, "system-out")
            start, end = verdict.window
            out.text = _clean(
                f"{verdict.text}\nstep {verdict.step + 1}; window {start:.3f} to {end:.3f} s after the start "
                f"(wall clock {report.wall(start):.6f} to {report.wall(end):.6f})"
                + (f"\n{_attachment(verdict.capture)}" if verdict.capture else "")
            )
            counts["tests"] += 1
        for step in report.steps:
            if step.error is None:
                continue
            case = _case(suite, classname, f"step {step.index + 1}: {step.text}", step.ended - step.started)
            error = ET.SubElement(case, "error", {"message": _clean(step.error), "type": step.kind})
            error.text = _clean(step.error)
            counts["tests"] += 1
            counts["errors"] += 1
        judged = {v.step for v in report.verdicts}
        for index, text in enumerate(report.planned):
            if text.startswith("expect ") and index not in judged:
                case = _case(suite, classname, text, 0)
                why = report.stopped or "not reached"
                ET.SubElement(case, "skipped", {"message": _clean(f"not judged: {why}")})
                counts["tests"] += 1
                counts["skipped"] += 1
        for problem in report.restore_errors:
            case = _case(suite, classname, "restore", 0)
            ET.SubElement(case, "error", {"message": _clean(problem), "type": "restore"}).text = _clean(problem)
            counts["tests"] += 1
            counts["errors"] += 1
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", _time(report.seconds))
        suite.set("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_at)))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _time(sum(r.seconds for r in reports)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
