"""The start gate and exec bookkeeping: pure parts and files on disk, no engine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from composens.model import declared, startwait, topology
from composens.system.kernel.processes import started_at
from composens.system.run import execs, startgate


@pytest.mark.parametrize(
    ("service", "image", "argv"),
    [
        ({}, {"Entrypoint": None, "Cmd": ["sh", "-c", "echo $HOME"]}, ["sh", "-c", "echo $$HOME"]),
        ({"command": ["run", "x"]}, {"Entrypoint": ["/init"], "Cmd": ["default"]}, ["/init", "run", "x"]),
        ({"entrypoint": ["/mine"]}, {"Entrypoint": ["/init"], "Cmd": ["default"]}, ["/mine"]),  # CMD dropped
        ({"entrypoint": [], "command": None}, {"Entrypoint": ["/init"], "Cmd": ["default"]}, ["default"]),
        ({"entrypoint": ["/mine"], "command": ["a"]}, {"Cmd": ["b"]}, ["/mine", "a"]),
    ],
)
def test_the_command_is_merged_as_the_engine_merges_it(service: dict, image: dict, argv: list[str]) -> None:
    assert startwait.command_of(service, image) == argv


def test_wrap_puts_the_wait_in_front_binds_the_flags_and_labels_the_container() -> None:
    config = {"name": "p", "services": {"r1": {"image": "i", "labels": {"a": "b"}}, "r2": {"image": "i"}}}
    wrapped = startwait.wrap(config, {"r1": 30}, {"r1": ["/init", "$$X"]}, "/run/composens/wired/p")
    r1 = wrapped["services"]["r1"]
    assert r1["entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "$$" in r1["entrypoint"][2]  # the script's own $ escaped for compose
    assert "$" not in r1["entrypoint"][2].replace("$$", "")
    assert r1["command"] == ["/init", "$$X"]
    assert r1["volumes"][-1]["bind"] == {"create_host_path": True}
    assert r1["labels"] == {"a": "b", startwait.GATED_LABEL: "30"}
    assert wrapped["services"]["r2"] == {"image": "i"}
    assert config["services"]["r1"] == {"image": "i", "labels": {"a": "b"}}  # the input is left as it was


def test_the_wait_passes_when_its_flag_is_there_and_gives_up_after_its_limit(tmp_path: Path) -> None:
    script = startwait.wait_script(1).replace(startwait.WIRED_MOUNT, str(tmp_path))
    flag = startwait.flag_name(os.stat("/proc/self/ns/net").st_ino, started_at(1) or 0)
    (tmp_path / flag).touch()
    done = subprocess.run(["sh", "-c", script, "wait", "echo", "a b"], capture_output=True, text=True, timeout=10)
    assert (done.stdout, done.stderr) == ("a b\n", "")
    (tmp_path / flag).unlink()
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", script, "wait", "echo", "anyway"], capture_output=True, text=True, timeout=10)
    assert done.stdout == "anyway\n"
    assert "not wired after 1 s" in done.stderr
    assert time.monotonic() - started >= 0.9


def test_release_keeps_a_flag_written_after_the_listing(tmp_path: Path) -> None:
    folder = startgate.wired_dir(tmp_path, "p")
    folder.mkdir(parents=True)
    (folder / "1-1").touch()  # a start gone before this run listed the containers
    os.utime(folder / "1-1", (time.time() - 60, time.time() - 60))
    listed_at = time.time() - 1
    (folder / "2-2").touch()  # another run's, for a start this run did not see
    me = os.getpid()
    startgate.release(tmp_path, "p", [(7, me)], [(7, me)], listed_at)
    names = {p.name for p in folder.iterdir()}
    assert names == {"2-2", startwait.flag_name(7, started_at(me) or 0)}


def lab_with_exec() -> topology.Topology:
    config = {"name": "p", "services": {"a": {"x-composens": {"exec": ["true", ["echo", "x"]]}}}}
    return declared.parse(config, source="f")


def test_an_exec_claim_left_by_a_dead_run_is_taken_over_and_a_live_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from composens.model.report import ExecResult

    ran: list[str] = []
    monkeypatch.setattr(
        execs,
        "_run",
        lambda service, container, command, docker, use_api: (
            ran.append(execs.shown(command)) or ExecResult(service, execs.shown(command), 0, "")
        ),
    )
    me = os.getpid()
    key = startwait.flag_name(9, started_at(me) or 0)
    place = execs.folder(tmp_path, "p")
    place.mkdir(parents=True)
    (place / f"{key}.json").write_text(json.dumps({"owner": [me, started_at(me)], "results": None}))
    assert execs.run_pending(tmp_path, lab_with_exec(), [("a", "c", 9, me)], [(9, me)], (), listed_at=0) == []
    dead = subprocess.Popen(["true"])
    dead.wait()
    (place / f"{key}.json").write_text(json.dumps({"owner": [dead.pid, 1], "results": None}))
    results = execs.run_pending(tmp_path, lab_with_exec(), [("a", "c", 9, me)], [(9, me)], (), listed_at=0)
    assert ran == ["true", "echo x"]
    assert [r.command for r in results] == ["true", "echo x"]
    assert [r.command for r in execs.results_of(tmp_path, "p", "a", 9, me)] == ["true", "echo x"]


def test_an_exec_run_cut_short_says_what_did_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(execs, "_run", interrupted)
    me = os.getpid()
    with pytest.raises(KeyboardInterrupt):
        execs.run_pending(tmp_path, lab_with_exec(), [("a", "c", 9, me)], [(9, me)], (), listed_at=0)
    found = execs.results_of(tmp_path, "p", "a", 9, me)
    assert [(r.command, r.exit_code, r.output) for r in found] == [
        ("true", None, "not run: composens was interrupted"),
        ("echo x", None, "not run: composens was interrupted"),
    ]


def test_wrap_puts_a_delay_alone_in_front_with_no_gate_to_open() -> None:
    config = {"name": "p", "services": {"r1": {"image": "i", "labels": {"a": "b"}}}}
    wrapped = startwait.wrap(config, {}, {"r1": ["/init"]}, "/run/composens/wired/p", {"r1": 7})
    r1 = wrapped["services"]["r1"]
    assert r1["entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "sleep 7 & pause=$$!" in r1["entrypoint"][2]
    assert startwait.WIRED_MOUNT not in r1["entrypoint"][2]
    assert r1["command"] == ["/init"]
    assert "volumes" not in r1
    assert r1["labels"] == {"a": "b"}  # no gate label: nothing for composens to open


def test_a_delay_comes_before_the_wait_for_the_wiring() -> None:
    script = startwait.wait_script(30, 5)
    assert script.index("sleep 5 &") < script.index(startwait.WIRED_MOUNT)
    assert startwait.wait_script(30) == startwait.wait_script(30, 0)
    assert "sleep 5" not in startwait.wait_script(30)


def test_the_delay_sleeps_then_runs_the_command_and_a_stop_ends_it_at_once() -> None:
    script = startwait.wait_script(None, 1)
    started = time.monotonic()
    done = subprocess.run(["sh", "-c", script, "wait", "echo", "a b"], capture_output=True, text=True, timeout=10)
    assert (done.stdout, done.stderr) == ("a b\n", "")
    assert time.monotonic() - started >= 0.9
    # The pipe stays open while any process holds it: it closes only once the shell and its sleep are both gone.
    waiting = subprocess.Popen(["sh", "-c", startwait.wait_script(None, 3600), "wait", "echo", "never"], text=True,
                               stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        children = Path(f"/proc/{waiting.pid}/task/{waiting.pid}/children")
        deadline = time.monotonic() + 10
        while not children.read_text().split() and time.monotonic() < deadline:
            time.sleep(0.01)  # the sleep has started once the shell has set its traps
        waiting.terminate()
        assert waiting.communicate(timeout=10)[0] == ""
        assert waiting.returncode == 143
    finally:  # nothing left behind, whatever failed
        with contextlib.suppress(ProcessLookupError):
            os.killpg(waiting.pid, signal.SIGKILL)


def test_start_delay_is_read_from_x_composens() -> None:
    config = {"name": "p", "services": {"a": {"x-composens": {"start_delay": 5}}, "b": {}}}
    topo = declared.parse(config, source="f")
    assert (topo.services["a"].start_delay, topo.services["b"].start_delay) == (5, 0)
    assert startgate.delayed(topo) == {"a": 5}
