"""The `--timeline` picture of scenario runs: one SVG, read at a glance.

For each scenario, on one time axis: the steps as marks (a line where each took effect, a flap's every down and
up), then a lane per probe: its round trips as a line (the lane's height is its largest), its lost requests in
red, its outages as red bands with their length, and each expectation's verdict as a mark at its window's end
(green passed, red failed). Requests are gathered per pixel column, so a minute of 10 ms probes (6,000 requests)
is a few hundred shapes, not thousands. Written by hand: the picture is boxes, lines and text, and Graphviz lays
out graphs, not time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape

from composens.model.scenarios import ProbeRecord, ScenarioReport, outages, seconds_text

WIDTH = 1100
LEFT = 170  # lane labels
RIGHT = 30
TITLE = 34
MARKS = 26  # the row of step labels
LANE = 64
LANE_GAP = 10
AXIS = 34
GAP = 24
CHAR = 6.5  # px: the width of a character at font size 11, near enough to keep a label inside the picture
FONT = "font-family='sans-serif'"
GREEN, RED, GREY, BLUE = "#2e7d32", "#c62828", "#9e9e9e", "#1565c0"


def timeline_svg(reports: Sequence[ScenarioReport]) -> str:
    """Draw every scenario's run, one under the other, as an SVG document."""
    blocks: list[str] = []
    y = 10.0
    for report in reports:
        block, height = _scenario(report, y)
        blocks.append(block)
        y += height + GAP
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{y:.0f}' viewBox='0 0 {WIDTH} {y:.0f}'>\n"
        f"<rect width='{WIDTH}' height='{y:.0f}' fill='white'/>\n" + "".join(blocks) + "</svg>\n"
    )


def _text(
    x: float, y: float, text: str, *, anchor: str = "start", fill: str = "black", size: int = 11, extra: str = ""
) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' fill='{fill}' {FONT} font-size='{size}' {extra}>"
        f"{escape(text)}</text>\n"
    )


def _label(at: float, y: float, text: str, fill: str) -> str:
    """A label starting at `at`, or ending there when it would run past the picture's right edge."""
    if at + 2 + CHAR * len(text) > WIDTH - 4:
        return _text(at - 2, y, text, anchor="end", fill=fill)
    return _text(at + 2, y, text, fill=fill)


def _scenario(report: ScenarioReport, top: float) -> tuple[str, float]:
    span = max(report.seconds, max((v.window[1] for v in report.verdicts), default=0.0), 0.001)
    plot = WIDTH - LEFT - RIGHT

    def x(seconds: float) -> float:
        return LEFT + plot * min(max(seconds, 0.0), span) / span

    lanes_top = top + TITLE + MARKS
    height = TITLE + MARKS + len(report.probes) * (LANE + LANE_GAP) + AXIS
    out = [f"<g class='scenario'>\n<title>{escape(report.name)}</title>\n"]
    colour = GREEN if report.passed else RED
    title = f"{report.name}: {report.outcome} ({seconds_text(report.seconds)})"
    out.append(_text(10, top + 18, title, fill=colour, size=14, extra="font-weight='bold'"))
    if report.description:
        out.append(_text(10 + 9 * len(title), top + 18, report.description, fill=GREY))
    bottom = lanes_top + len(report.probes) * (LANE + LANE_GAP)
    # Steps: a label above the lanes where each took effect; their lines are drawn over the lanes, below.
    label_row = 0
    step_lines: list[str] = []
    for step in report.steps:
        marks = step.marks or (((step.effective, step.text),) if step.effective is not None else ())
        for when, what in marks:
            colour_step = RED if step.error else BLUE
            step_lines.append(
                f"<line x1='{x(when):.1f}' y1='{lanes_top - 4:.1f}' x2='{x(when):.1f}' y2='{bottom:.1f}' "
                f"stroke='{colour_step}' stroke-dasharray='3,3' stroke-width='1'>"
                f"<title>{escape(what)} at {seconds_text(when)}</title></line>\n"
            )
        if marks:
            label_y = top + TITLE + 10 + 12 * (label_row % 2)
            label_row += 1
            out.append(_label(x(marks[0][0]), label_y, f"{step.index + 1}. {step.text}", fill=BLUE))
    for i, record in enumerate(report.probes):
        lane_top = lanes_top + i * (LANE + LANE_GAP)
        out.append(_lane(record, lane_top, span, x))
        for verdict in report.verdicts:
            if verdict.subject != record.probe.name:
                continue
            vx = x(verdict.window[1])
            colour_verdict = GREEN if verdict.passed else RED
            out.append(
                f"<circle cx='{vx:.1f}' cy='{lane_top + 6:.1f}' r='5' fill='{colour_verdict}'>"
                f"<title>{escape(verdict.name)}: {escape(verdict.text)}</title></circle>\n"
            )
    out.extend(step_lines)  # over the lanes' backgrounds, so each mark crosses every lane
    out.append(_axis(bottom, span, x))
    out.append("</g>\n")
    return "".join(out), height


def _lane(record: ProbeRecord, top: float, span: float, place: Callable[[float], float]) -> str:
    probe = record.probe
    out = [
        f"<rect x='{LEFT}' y='{top:.1f}' width='{WIDTH - LEFT - RIGHT}' height='{LANE}' fill='#f7f7f7' "
        "stroke='#dddddd'/>\n",
        _text(10, top + 16, probe.name, extra="font-weight='bold'"),
        _text(10, top + 30, f"{probe.kind} {probe.service} -> {probe.to}", fill=GREY),
    ]
    requests = record.requests
    rtts = [r.rtt for r in requests if r.rtt is not None]
    largest = max(rtts, default=0.0) or 0.001
    out.append(_text(10, top + 44, f"{seconds_text(probe.interval)}; max rtt {seconds_text(largest)}", fill=GREY))
    lost = sum(1 for r in requests if r.lost)
    out.append(_text(10, top + 58, f"{len(requests)} sent, {lost} lost", fill=RED if lost else GREY))
    # Gather per pixel column: the largest round trip, and whether any request there was lost.
    columns: dict[int, tuple[float, bool]] = {}
    for request in requests:
        column = int(place(request.sent))
        biggest, any_lost = columns.get(column, (0.0, False))
        columns[column] = (max(biggest, request.rtt or 0.0), any_lost or request.lost)
    for outage in outages(requests):
        end = outage.end if outage.end is not None else span
        left, right = place(outage.start), place(end)
        out.append(
            f"<rect x='{left:.1f}' y='{top:.1f}' width='{max(right - left, 1.5):.1f}' height='{LANE}' "
            f"fill='{RED}' fill-opacity='0.18'><title>outage {seconds_text(outage.start)} to "
            f"{seconds_text(end)}: {seconds_text(end - outage.start)}, {outage.lost} lost</title></rect>\n"
        )
        if right - left > 40:
            out.append(
                _text(
                    (left + right) / 2, top + LANE / 2 + 4, seconds_text(end - outage.start), anchor="middle", fill=RED
                )
            )
    # The round trips as a line broken where only lost requests fell: an outage is a gap, not a slope across it.
    runs: list[list[str]] = [[]]
    for column in sorted(columns):
        biggest, any_lost = columns[column]
        if any_lost:
            out.append(
                f"<line x1='{column}.5' y1='{top + LANE - 10:.1f}' x2='{column}.5' y2='{top + LANE:.1f}' "
                f"stroke='{RED}' stroke-width='1'/>\n"
            )
        if biggest:
            height = (LANE - 14) * math.sqrt(biggest / largest)  # square root: small round trips stay visible
            runs[-1].append(f"{column}.5,{top + LANE - 12 - height:.1f}")
        elif runs[-1]:
            runs.append([])
    for points in runs:
        if points:
            out.append(f"<polyline points='{' '.join(points)}' fill='none' stroke='{GREEN}' stroke-width='1'/>\n")
    return "".join(out)


def _axis(y: float, span: float, place: Callable[[float], float]) -> str:
    step = _tick(span)
    out = [f"<line x1='{LEFT}' y1='{y:.1f}' x2='{WIDTH - RIGHT}' y2='{y:.1f}' stroke='black'/>\n"]
    count = int(span / step) + 1
    for i in range(count):
        at = i * step
        px = place(at)
        out.append(f"<line x1='{px:.1f}' y1='{y:.1f}' x2='{px:.1f}' y2='{y + 5:.1f}' stroke='black'/>\n")
        out.append(_text(px, y + 17, f"{at:g} s", anchor="middle"))
    return "".join(out)


def _tick(span: float) -> float:
    """A round step for about ten ticks over the span."""
    raw = span / 10
    power: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
