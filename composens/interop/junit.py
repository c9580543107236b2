"""Check results as JUnit XML, the report format GitLab, Jenkins and GitHub Actions display.

One <testsuites> with one <testsuite>; a <testcase> per check, classname `SUITE.SERVICE` (Jenkins
groups by it), with <failure>, <error> or <skipped> when it did not pass, and the attempts and
round trips in <system-out>, with the flight recorder's capture of a failure as an `[[ATTACHMENT|path]]`
line there (the form GitLab's test reports and Jenkins' JUnit Attachments plugin link to the file).
Built with ElementTree, so every value is escaped.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from composens.model.checks import CheckResult

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


def _testcase(suite: ET.Element, result: CheckResult, suite_name: str) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        {
            "classname": _clean(f"{suite_name}.{result.service}"),
            "name": _clean(result.name),
            "time": _time(result.seconds),
        },
    )
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
        lines.append(f"[[ATTACHMENT|{result.capture}]]")
    return _clean("\n".join(lines))


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
