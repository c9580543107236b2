"""Checks: parsing and its golden errors, verdicts, the runner with fake probes, JUnit output."""

from __future__ import annotations

import struct
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from composens.interop import junit
from composens.model import checks, declared
from composens.model.checks import Check, CheckResult, CheckUpdate, Exec, Ping
from composens.model.errors import ConfigError, EngineRefused
from composens.system.docker.engine import ExecState
from composens.system.run import probe
from composens.system.run.probe import Attempt, ProbeError, Target

CASES = Path(__file__).resolve().parents[1] / "topology"
INVALID = sorted((CASES / "invalid-checks").glob("*.yml"))

SERVICES = {
    "node1": {"image": "i", "network_mode": "none"},
    "node2": {"image": "i", "network_mode": "none"},
    "router1": {"image": "i"},
}


def parse_file(config: dict[str, Any]) -> tuple[Check, ...]:
    """Parse a whole compose file's checks: the topology without them, then the checks against it."""
    extension = dict(config.get("x-composens") or {})
    raw = extension.pop("checks", None)
    topo = declared.parse({**config, "x-composens": extension}, source="docker-compose.yml")
    return checks.parse_checks(raw, topo)


def parse(raw: Any) -> tuple[Check, ...]:
    return parse_file({"name": "lab", "services": SERVICES, "x-composens": {"checks": raw}})


# --------------------------------------------------------------------------- parsing


def test_valid_checks_parse_with_defaults() -> None:
    got = parse(
        [
            {"name": "node1 reaches node2 over IPv4", "ping": {"from": "node1", "to": "198.18.0.2"}},
            {"name": "isolated", "ping": {"from": "node1", "to": "2001:DB8:0::9", "expect": "failure", "count": 1}},
            {
                "name": "ospf neighbours full",
                "exec": {"service": "router1", "command": ["vtysh", "-c", "show ip ospf neighbor"], "timeout": 5},
                "stdout_contains": "Full",
                "stdout_matches": "^1\\.1\\.1\\.1 ",
                "wait": 60,
            },
            {"exec": {"service": "router1", "command": "ip route | grep -q default"}, "exit_code": 1},
            {"ping": {"from": "node2", "to": "198.18.0.1", "timeout": 0.5}},
        ]
    )
    assert got == (
        Check("node1 reaches node2 over IPv4", Ping("node1", "198.18.0.2")),
        Check("isolated", Ping("node1", "2001:db8::9", count=1, expect="failure")),
        Check(
            "ospf neighbours full",
            Exec(
                "router1",
                ("vtysh", "-c", "show ip ospf neighbor"),
                timeout=5.0,
                stdout_contains="Full",
                stdout_matches="^1\\.1\\.1\\.1 ",
            ),
            wait=60.0,
        ),
        Check(
            "router1: ip route | grep -q default",
            Exec("router1", ("sh", "-c", "ip route | grep -q default"), exit_code=1),
        ),
        Check("node2: ping 198.18.0.1", Ping("node2", "198.18.0.1", timeout=0.5)),
    )
    assert [(c.kind, c.service) for c in got] == [
        ("ping", "node1"),
        ("ping", "node1"),
        ("exec", "router1"),
        ("exec", "router1"),
        ("ping", "node2"),
    ]


def test_no_checks_is_an_empty_suite() -> None:
    assert parse(None) == ()
    assert parse([]) == ()


def test_default_name_of_a_list_command_is_shell_quoted() -> None:
    (check,) = parse([{"exec": {"service": "router1", "command": ["vtysh", "-c", "show ip route"]}}])
    assert check.name == "router1: vtysh -c 'show ip route'"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_gives_its_exact_error(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: ")
    with pytest.raises(ConfigError) as caught:
        parse_file(yaml.safe_load(path.read_text()))
    assert caught.value.message == first.removeprefix("# error: ")


def test_invalid_suite_is_not_empty() -> None:
    assert len(INVALID) >= 10


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("ping", "replies", "problem", "verdict"),
    [
        (Ping("a", "198.18.0.2"), 3, None, None),
        (Ping("a", "198.18.0.2"), 1, None, None),
        (Ping("a", "198.18.0.2"), 0, "Network is unreachable", "0/3 replies: Network is unreachable"),
        (Ping("a", "198.18.0.2", expect="failure"), 0, "Network is unreachable", None),
        (Ping("a", "198.18.0.2", count=5, expect="failure"), 1, None, "1/5 replies, expected none"),
    ],
)
def test_evaluate_ping(ping: Ping, replies: int, problem: str | None, verdict: str | None) -> None:
    assert checks.evaluate_ping(ping, replies, problem) == verdict


OSPF = Exec("r1", ("vtysh",), stdout_contains="Full", stdout_matches=r"^1\.1\.1\.1\s")


@pytest.mark.parametrize(
    ("spec", "code", "stdout", "stderr", "verdict"),
    [
        (OSPF, 0, "Neighbor ID\n1.1.1.1  1 Full/DR\n", "", None),
        (
            OSPF,
            0,
            "Neighbor ID\n1.1.1.1  1 Init/DROther\n",
            "",
            "stdout lacks 'Full': Neighbor ID | 1.1.1.1  1 Init/DROther",
        ),
        (OSPF, 0, "2.2.2.2  1 Full/DR\n", "", "stdout does not match '^1\\\\.1\\\\.1\\\\.1\\\\s': 2.2.2.2  1 Full/DR"),
        (OSPF, 1, "", "line 1\nline 2\n% Unknown command\n", "exit code 1, expected 0: line 2 | % Unknown command"),
        (OSPF, 127, "", "", "exit code 127, expected 0: (no output)"),
        (Exec("r1", ("false",), exit_code=1), 1, "", "", None),
    ],
)
def test_evaluate_exec(spec: Exec, code: int, stdout: str, stderr: str, verdict: str | None) -> None:
    assert checks.evaluate_exec(spec, code, stdout, stderr) == verdict


def test_tail_keeps_the_end_of_long_output_on_one_line() -> None:
    short = checks.tail("x" * 500 + "\nlast words\n")
    assert len(short) == checks.TAIL_CHARS
    assert short.startswith("…")
    assert short.endswith("x | last words")


# --------------------------------------------------------------------------- the runner


class FakeClock:
    """Time that passes only when the runner sleeps or a fake probe says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def ping_check(name: str, service: str = "node1", wait: float | None = None) -> Check:
    return Check(name, Ping(service, "198.18.0.2"), wait)


TARGETS = {
    name: Target(name, f"id-{name}", f"/var/run/docker/netns/{name}", running=True) for name in ("node1", "node2")
}


def scripted(clock: FakeClock, script: dict[str, list[Attempt | Exception]], took: float = 0.0) -> probe.Probe:
    """A probe that plays each check's attempts in turn; each takes `took` seconds of fake time."""
    lock = threading.Lock()

    def fake(check: Check, target: Target) -> Attempt:
        with lock:
            outcome = script[check.name].pop(0)
            clock.now += took
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return fake


def run(
    checks_: list[Check],
    script: dict[str, list[Attempt | Exception]],
    *,
    took: float = 0.0,
    targets: dict[str, Target] = TARGETS,
    on_update: Callable[[CheckUpdate], None] | None = None,
    **options: Any,
) -> tuple[CheckResult, ...]:
    clock = FakeClock()
    return probe.run_checks(
        checks_,
        targets,
        probe=scripted(clock, script, took),
        clock=clock,
        sleep=clock.sleep,
        on_update=on_update,
        **options,
    )


FAIL = Attempt("0/3 replies")
PASS = Attempt(None, (0.5, 0.4, 0.3))


def test_waiting_check_passing_on_third_attempt() -> None:
    updates: list[CheckUpdate] = []
    (result,) = run([ping_check("reach", wait=10)], {"reach": [FAIL, FAIL, PASS]}, on_update=updates.append)
    assert result == CheckResult("reach", "node1", "ping", "pass", 3, 2.0, None, (0.5, 0.4, 0.3))
    assert [(u.state, u.attempts, u.remaining) for u in updates] == [
        ("waiting", 1, 10.0),
        ("waiting", 2, 9.0),
        ("pass", 3, None),
    ]
    assert updates[0].reason == "0/3 replies"


def test_waiting_check_fails_when_its_time_is_up() -> None:
    (result,) = run([ping_check("reach", wait=2.5)], {"reach": [FAIL, FAIL, FAIL]})
    # Attempts start at 0, 1 and 2 s; the next would start at 3 s, after the wait.
    assert (result.result, result.attempts, result.seconds, result.reason) == ("fail", 3, 2.0, "0/3 replies")


def test_slow_attempts_are_retried_as_soon_as_they_end() -> None:
    (result,) = run([ping_check("reach", wait=5)], {"reach": [FAIL, FAIL, PASS]}, took=1.5)
    assert (result.result, result.attempts, result.seconds) == ("pass", 3, 4.5)


def test_check_without_wait_is_tried_once() -> None:
    (result,) = run([ping_check("reach")], {"reach": [FAIL, PASS]})
    assert (result.result, result.attempts, result.reason) == ("fail", 1, "0/3 replies")


def test_service_not_running_fails_its_checks_without_trying() -> None:
    targets = {**TARGETS, "node2": Target("node2", None, None, running=False)}
    results = run(
        [ping_check("from node2", "node2", wait=30), ping_check("from node1"), ping_check("from nowhere", "node9")],
        {"from node1": [PASS]},
        targets=targets,
    )
    assert [(r.name, r.result, r.attempts, r.reason) for r in results] == [
        ("from node2", "fail", 0, "service node2 is not running"),
        ("from node1", "pass", 1, None),
        ("from nowhere", "fail", 0, "service node9 is not running"),
    ]


def test_exception_while_running_a_check_is_an_error_result() -> None:
    results = run(
        [ping_check("gone", wait=10), ping_check("bug")],
        {
            "gone": [ProbeError("ping from node1 failed: /var/run/docker/netns/x: No such file or directory")],
            "bug": [RuntimeError("boom\nsecond line")],
        },
    )
    assert [(r.result, r.attempts, r.reason) for r in results] == [
        ("error", 1, "ping from node1 failed: /var/run/docker/netns/x: No such file or directory"),
        ("error", 1, "RuntimeError: boom"),
    ]


def test_fail_fast_stops_the_waiting_and_skips_the_untried() -> None:
    suite = [ping_check("converging", wait=30), ping_check("broken"), ping_check("later")]
    script: dict[str, list[Attempt | Exception]] = {"converging": [FAIL, PASS], "broken": [FAIL], "later": [PASS]}
    results = run(suite, {k: list(v) for k, v in script.items()}, parallel=1, fail_fast=True)
    assert [(r.name, r.result, r.attempts, r.reason) for r in results] == [
        ("converging", "fail", 1, "0/3 replies (not retried: fail-fast)"),
        ("broken", "fail", 1, "0/3 replies"),
        ("later", "skipped", 0, "not run: fail-fast after 'broken' failed"),
    ]
    without = run(suite, {k: list(v) for k, v in script.items()}, parallel=1)
    assert [r.result for r in without] == ["pass", "fail", "pass"]


def test_fail_fast_counts_a_service_that_is_not_running() -> None:
    targets = {**TARGETS, "node2": Target("node2", None, None, running=False)}
    results = run(
        [ping_check("down", "node2"), ping_check("up")], {"up": [PASS]}, targets=targets, parallel=1, fail_fast=True
    )
    assert [r.result for r in results] == ["fail", "skipped"]


def test_parallel_bounds_the_attempts_under_way() -> None:
    active, most = 0, 0
    lock = threading.Lock()
    # Each attempt waits until two others run beside it: fewer workers break the barrier, more raise `most`.
    barrier = threading.Barrier(3, timeout=10)

    def fake(check: Check, target: Target) -> Attempt:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        barrier.wait()
        with lock:
            active -= 1
        return PASS

    clock = FakeClock()
    results = probe.run_checks(
        [ping_check(f"c{i}") for i in range(9)], TARGETS, parallel=3, probe=fake, clock=clock, sleep=clock.sleep
    )
    assert [r.result for r in results] == ["pass"] * 9
    assert most == 3


def test_updates_come_from_the_calling_thread_one_per_attempt() -> None:
    threads: set[int] = set()
    updates: list[CheckUpdate] = []

    def record(update: CheckUpdate) -> None:
        threads.add(threading.get_ident())
        updates.append(update)

    run(
        [ping_check("a", wait=5), ping_check("b")],
        {"a": [FAIL, PASS], "b": [PASS]},
        on_update=record,
        parallel=4,
    )
    assert threads == {threading.get_ident()}
    assert sorted((u.name, u.state) for u in updates) == [("a", "pass"), ("a", "waiting"), ("b", "pass")]


def test_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError, match="parallel"):
        probe.run_checks([], {}, parallel=0)


# --------------------------------------------------------------------------- real probes, no kernel


FAKE_DOCKER = (
    "import sys, time\n"
    "args = sys.argv[1:]\n"
    "assert args[:2] == ['exec', 'cid'], args\n"
    "if args[2] == 'sleep': time.sleep(float(args[3]))\n"
    "print('\\n'.join(args[2:]))\n"
    "print('to stderr', file=sys.stderr)\n"
    "sys.exit(int(args[-1]) if args[-1].isdigit() else 0)\n"
)
DOCKER = (sys.executable, "-c", FAKE_DOCKER)
ROUTER = Target("router1", "cid", None, running=True)


def test_docker_exec_captures_exit_code_and_output() -> None:
    out = probe.docker_exec("cid", ["echo", "hello world", "3"], timeout=10, docker=DOCKER)
    assert out == probe.ExecOutput(3, "echo\nhello world\n3\n", "to stderr\n")


def test_exec_attempt_judges_the_output() -> None:
    passing = Check("ok", Exec("router1", ("show", "Full")), None)
    failing = Check("no", Exec("router1", ("show", "Init", "1"), stdout_contains="Full"), None)
    assert probe.attempt(passing, ROUTER, docker=DOCKER, use_api=False) == Attempt(None)
    assert probe.attempt(failing, ROUTER, docker=DOCKER, use_api=False) == Attempt("exit code 1, expected 0: to stderr")


def test_exec_attempt_that_times_out_fails() -> None:
    slow = Check("slow", Exec("router1", ("sleep", "30"), timeout=0.3), None)
    assert probe.attempt(slow, ROUTER, docker=DOCKER, use_api=False) == Attempt(
        "timed out after 0.3 s (left running: docker exec cannot stop it)"
    )


def test_missing_docker_is_a_probe_error() -> None:
    with pytest.raises(ProbeError, match="not found: install docker"):
        probe.docker_exec("cid", ["true"], timeout=1, docker=("/nonexistent/docker",))


@pytest.mark.parametrize(
    ("code", "stderr", "reason"),
    [
        (1, "Error response from daemon: Container c is paused, unpause the container before exec",
         "docker exec failed: Container c is paused, unpause the container before exec"),
        (1, "Error response from daemon: No such container: c", "docker exec failed: No such container: c"),
        (126, 'OCI runtime exec failed: exec failed: exec: "nope": executable file not found in $PATH: unknown',
         'docker exec failed: OCI runtime exec failed: exec failed: exec: "nope": executable file not found in $PATH: '
         "unknown"),
    ],
)  # fmt: skip
def test_docker_execs_own_failures_are_errors_not_exit_codes(code: int, stderr: str, reason: str) -> None:
    failing = (sys.executable, "-c", f"import sys; print({stderr!r}, file=sys.stderr); sys.exit({code})")
    with pytest.raises(ProbeError) as raised:
        probe.docker_exec("cid", ["exit 1"], timeout=10, docker=failing)
    assert str(raised.value) == reason


@pytest.mark.parametrize(("code", "stderr"), [(1, "Error: no route"), (126, "sh: permission denied"), (127, "")])
def test_a_commands_own_exit_code_is_kept_whatever_it_is(code: int, stderr: str) -> None:
    command = (sys.executable, "-c", f"import sys; print({stderr!r}, file=sys.stderr); sys.exit({code})")
    assert probe.docker_exec("cid", ["x"], timeout=10, docker=command).exit_code == code


class FakeExecAPI:
    """The engine's answers to one exec, for engine_exec's judgement of them."""

    def __init__(self, *, refuse: str | None = None, state: Any = None, output: bytes = b"") -> None:
        self.refuse, self.state, self.output = refuse, state, output

    def exec_create(self, container_id: str, command: Any) -> str:
        if self.refuse:
            raise EngineRefused(self.refuse)
        return "e1"

    def exec_start(self, exec_id: str) -> Any:
        api = self

        class Stream:
            stdout, stderr, system_error = bytearray(api.output), bytearray(), bytearray()

            def __enter__(self) -> Any:
                return self

            def __exit__(self, *exc: object) -> None:
                pass

            def read(self, until: float) -> bool:
                return True

        return Stream()

    def exec_inspect(self, exec_id: str) -> Any:
        return self.state


def test_an_exec_the_engine_refuses_is_an_error_in_its_words() -> None:
    api: Any = FakeExecAPI(refuse="Container c is paused, unpause the container before exec")
    with pytest.raises(ProbeError, match="docker refused the exec: Container c is paused"):
        probe.engine_exec(api, "c", ["true"], timeout=5)


def test_an_exec_that_never_started_is_an_error_though_its_exit_code_was_expected() -> None:
    said = b'OCI runtime exec failed: exec failed: exec: "nope": executable file not found in $PATH: unknown\r\n'
    api: Any = FakeExecAPI(state=ExecState(False, 126, 0), output=said)
    with pytest.raises(ProbeError, match="docker could not run 'nope': OCI runtime exec failed"):
        probe.engine_exec(api, "c", ["nope"], timeout=5)


def test_an_exec_that_ran_gives_its_own_exit_code_and_output() -> None:
    api: Any = FakeExecAPI(state=ExecState(False, 126, 4242), output=b"hello\n")
    assert probe.engine_exec(api, "c", ["sh", "-c", "exit 126"], timeout=5) == probe.ExecOutput(126, "hello\n", "")


def test_checksum_of_a_packet_with_its_checksum_is_zero() -> None:
    header = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7)
    payload = b"odd-length payload"
    filled = struct.pack("!BBHHH", 8, 0, probe.checksum(header + payload), 0x1234, 7)
    assert probe.checksum(filled + payload) == 0


# --------------------------------------------------------------------------- JUnit


def test_junit_xml_counts_and_elements() -> None:
    results = [
        CheckResult("reach", "node1", "ping", "pass", 1, 0.41, None, (0.5, 0.25)),
        CheckResult('ospf <"full"> & ready', "router1", "exec", "fail", 3, 2.5, "stdout lacks 'Full': \x1b[31mInit"),
        CheckResult("gone", "node2", "ping", "error", 1, 0.0, "ping from node2 failed: No such file or directory"),
        CheckResult("later", "node2", "ping", "skipped", 0, 0.0, "not run: fail-fast after 'ospf' failed"),
    ]
    root = ET.fromstring(junit.junit_xml(results, "lab", seconds=3.2))
    assert root.tag == "testsuites"
    (suite,) = root
    for element in (root, suite):
        assert {k: element.get(k) for k in ("name", "tests", "failures", "errors", "skipped", "time")} == {
            "name": "lab",
            "tests": "4",
            "failures": "1",
            "errors": "1",
            "skipped": "1",
            "time": "3.200",
        }
    cases = suite.findall("testcase")
    assert [(c.get("classname"), c.get("name"), c.get("time")) for c in cases] == [
        ("lab.node1", "reach", "0.410"),
        ("lab.router1", 'ospf <"full"> & ready', "2.500"),
        ("lab.node2", "gone", "0.000"),
        ("lab.node2", "later", "0.000"),
    ]
    assert [[child.tag for child in c] for c in cases] == [
        ["system-out"],
        ["failure", "system-out"],
        ["error", "system-out"],
        ["skipped", "system-out"],
    ]
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "stdout lacks 'Full': \ufffd[31mInit"
    assert failure.get("type") == "exec"
    assert cases[0].findtext("system-out") == "ping on node1: pass after 1 attempt(s)\nround trips (ms): 0.500 0.250"


def test_junit_suite_time_defaults_to_the_sum() -> None:
    results = [
        CheckResult("a", "n", "ping", "pass", 1, 0.25, None),
        CheckResult("b", "n", "ping", "pass", 1, 0.5, None),
    ]
    assert ET.fromstring(junit.junit_xml(results, "s")).get("time") == "0.750"


def test_junit_names_a_failures_capture_as_an_attachment_line() -> None:
    results = [
        CheckResult("reach", "node1", "ping", "fail", 1, 1.4, "0/3 replies", capture="/ci/caps/reach.pcapng"),
        CheckResult("fine", "node1", "ping", "pass", 1, 0.4, None),
    ]
    cases = ET.fromstring(junit.junit_xml(results, "lab")).findall("testsuite/testcase")
    assert [c.findtext("system-out") for c in cases] == [
        "ping on node1: fail after 1 attempt(s)\n[[ATTACHMENT|/ci/caps/reach.pcapng]]",
        "ping on node1: pass after 1 attempt(s)",
    ]
