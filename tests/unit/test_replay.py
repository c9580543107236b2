"""composens.replay: which commands are replayed, what the key covers, and when a run is (not) recorded."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from composens import replay
from composens.lab import core as labcore
from composens.system import world as system_world
from composens.system.kernel.processes import started_at
from composens.system.world import WORLD


def test_only_the_commands_that_read_are_replayed() -> None:
    assert replay.command_of(["ps", "--netns"]) == ("ps",)
    assert replay.command_of(["-p", "lab", "-f", "x.yml", "--debug", "ps", "--netns", "--format", "json"]) == ("ps",)
    assert replay.command_of(["--host=h1", "netns", "link"]) == ("netns", "link")
    assert replay.command_of(["netns", "show", "r1"]) == ("netns", "show")
    for args in (
        ["ps"],  # compose's own
        ["ps", "--netns", "--help"],
        ["netns", "unlink"],
        ["netns", "prune"],
        ["up", "-d"],
        ["--version"],
        ["plan"],
        [],
    ):
        assert replay.command_of(args) is None, args


def test_the_key_covers_arguments_environment_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    key = replay.key_of(["ps", "--netns"], {"A": "1"})
    assert key == replay.key_of(["ps", "--netns"], {"A": "1", "_": "/usr/bin/composens"})  # the shell's own
    assert key != replay.key_of(["ps", "--netns", "--format", "json"], {"A": "1"})
    assert key != replay.key_of(["ps", "--netns"], {"A": "2"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert key != replay.key_of(["ps", "--netns"], {"A": "1"})


def test_the_record_lock_is_labcores() -> None:
    assert replay.STATE_DIR == labcore.STATE_DIR


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder standing for the lab: the readings are of its files (the folder kind), the config a constant."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(system_world._READERS, "config", system_world.Reader(lambda: "the config"))
    monkeypatch.delenv(replay.OFF, raising=False)
    monkeypatch.setenv(replay.NOTE, str(tmp_path / "notes"))
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "r1").write_text("up")
    stdout, stderr = sys.stdout, sys.stderr
    yield lab
    WORLD.observer = None  # a test that failed midway leaves neither a recording nor its tees behind
    sys.stdout, sys.stderr = stdout, stderr


def recorded_run(lab: Path, folder: Path, *, out: str = "table\n", err: str = "", code: int = 0) -> None:
    """A run of `ps --netns` that reads the config and the lab's folder and prints `out` and `err`."""
    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    WORLD.read("folder", str(lab))
    print(out, end="")
    print(err, end="", file=sys.stderr)
    replay.finish(recording, code, folder)


def notes(lab: Path) -> list[str]:
    return (lab.parent / "notes").read_text().splitlines()


def test_a_run_is_replayed_until_a_reading_differs(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "replays"
    recorded_run(world, folder, out="r1 up\n", err="composens: a warning\n")
    capsys.readouterr()
    assert replay.answer(["ps", "--netns"], folder=folder) == 0
    assert capsys.readouterr() == ("r1 up\n", "composens: a warning\n")
    assert replay.answer(["ps", "--netns", "--format", "json"], folder=folder) is None  # another command
    (world / "r1").write_text("down")
    assert replay.answer(["ps", "--netns"], folder=folder) is None
    assert capsys.readouterr() == ("", "")
    assert notes(world) == [
        "recorded 2 readings",
        "replayed",
        "worked out: not recorded before",
        f"worked out: folder ['{world}'] differs",
    ]


def test_a_reading_or_a_change_made_past_the_world_keeps_a_run_from_being_recorded(world: Path, tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    (world / "r2").write_text("up")

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    WORLD.read("folder", str(world))
    (world / "r2").read_text()  # an adapter that forgot WORLD: a replay would never read this again
    replay.finish(recording, 0, folder)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    os.mkdir(world / "made")  # a change WORLD was not told of
    replay.finish(recording, 0, folder)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    subprocess.run(["true"], check=True)  # a process: whatever it reads is unseen
    replay.finish(recording, 0, folder)

    assert not folder.exists()
    assert notes(world) == [
        f"not recorded: open {str(world / 'r2')!r} outside composens.system.world",
        f"not recorded: os.mkdir {str(world / 'made')!r} outside composens.system.world",
        "not recorded: subprocess.Popen 'true' outside composens.system.world",
    ]


def test_reading_through_the_world_and_importing_code_leave_a_run_recordable(world: Path, tmp_path: Path) -> None:
    import importlib

    folder = tmp_path / "replays"
    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    WORLD.read("folder", str(world))  # the folder reader opens each file: inside a reading
    with WORLD.derived():
        (world / "r1").read_text()  # what an observed reading decides (the config cache, say)
    importlib.import_module("composens.system.kernel.netlink")  # Python reads code, not the lab
    replay.finish(recording, 0, folder)
    assert notes(world) == ["recorded 2 readings"]


def test_output_keeps_its_order_across_the_two_streams(world: Path, tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    recorded_run(world, folder, out="one\n", err="two\n")
    document = json.loads(next(folder.glob("*.json")).read_text())
    assert document["printed"] == [[1, "one\n"], [2, "two\n"]]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct(next(folder.glob("*.json")).stat().st_mode & 0o777) == "0o600"


def test_runs_that_failed_changed_or_read_inconsistently_are_not_recorded(world: Path, tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    recorded_run(world, folder, code=1)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    WORLD.changed("the entry x")
    replay.finish(recording, 0, folder)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    recording.read("folder", (str(world),), "one thing")
    recording.read("folder", (str(world),), "and then another")
    replay.finish(recording, 0, folder)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("config")
    sys.stdout.buffer  # noqa: B018 - bytes past the text stream are not kept
    replay.finish(recording, 0, folder)

    recording = replay.start(["ps", "--netns"])
    assert recording is not None
    WORLD.read("folder", str(world))
    replay.finish(recording, 0, folder)

    assert not folder.exists()
    assert notes(world) == [
        "not recorded: exit code 1",
        "not recorded: changed the entry x",
        f"not recorded: folder ({str(world)!r},) read twice and found different",
        "not recorded: wrote bytes",
        "not recorded: the project was not read",
    ]


def test_a_damaged_or_foreign_recording_is_worked_out_again(world: Path, tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    recorded_run(world, folder)
    (path,) = folder.glob("*.json")
    for damaged in ("{", json.dumps({"format": "composens-replay 0"}), json.dumps({**json.loads(path.read_text()),
                    "readings": [["a kind this composens does not know", [], "x"]]})):  # fmt: skip
        path.write_text(damaged)
        assert replay.answer(["ps", "--netns"], folder=folder) is None
    assert notes(world)[1:] == [
        "worked out: the recording cannot be read",
        "worked out: the recording is not one of this composens",
        "worked out: the recording is not one of this composens",
    ]


def test_replaying_is_off_on_request(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "replays"
    recorded_run(world, folder)
    monkeypatch.setenv(replay.OFF, "1")
    assert replay.answer(["ps", "--netns"], folder=folder) is None
    assert replay.start(["ps", "--netns"]) is None


def test_a_tee_passes_everything_else_through() -> None:
    stream = io.StringIO()
    recording = replay.Recording("k", lock=False)
    tee = replay._Tee(stream, 1, recording.printed, recording)
    tee.write("a")
    tee.writelines(["b", "c"])
    assert stream.getvalue() == "abc"
    assert not tee.isatty()
    assert recording.printed == [(1, "a"), (1, "b"), (1, "c")]


def test_asking_for_a_note_does_not_change_the_key_and_a_bad_note_path_is_no_failure(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = replay.key_of(["ps", "--netns"], {"A": "1"})
    assert key == replay.key_of(["ps", "--netns"], {"A": "1", replay.NOTE: "/dev/stderr"})
    monkeypatch.setenv(replay.NOTE, str(tmp_path / "no such folder" / "notes"))
    recorded_run(world, tmp_path / "replays")
    assert replay.answer(["ps", "--netns"], folder=tmp_path / "replays") == 0


def test_a_replay_interleaves_the_two_streams_as_the_run_did(world: Path, tmp_path: Path) -> None:
    folder = tmp_path / "replays"
    record = (
        "import sys; from composens import replay; "
        "recording = replay.start(['ps', '--netns']); from composens.system import world; world._READERS['config'] = world.Reader(lambda: 'the config'); world.WORLD.read('config'); "
        "[print(line, file=sys.stderr if 'warning' in line else sys.stdout, flush=True) "
        " for line in ('row 1', 'composens: a warning', 'row 2')]; "
        f"replay.finish(recording, 0, Path({str(folder)!r}))"
    )
    answer = (
        "import sys; from composens import replay; from composens.system import world; world._READERS['config'] = world.Reader(lambda: 'the config'); "
        f"sys.exit(replay.answer(['ps', '--netns'], folder=Path({str(folder)!r})))"
    )
    # Both streams into one pipe, where stdout is block-buffered unless each write is flushed.
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for script in (record, answer):
        done = subprocess.run(
            [sys.executable, "-c", "from pathlib import Path; " + script], cwd=tmp_path, env=environ,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True,
        )  # fmt: skip
        assert done.stdout == "row 1\ncomposens: a warning\nrow 2\n"
    assert notes(world)[-2:] == ["recorded 1 readings", "replayed"]


def test_a_folder_reading_tells_a_symlink_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "flag").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    assert system_world.folder(str(tmp_path)) == [
        ("flag", b""),
        ("link", ("symlink", str(tmp_path / "nowhere"), False)),
    ]
    (tmp_path / "nowhere").touch()
    assert system_world.folder(str(tmp_path))[1] == ("link", ("symlink", str(tmp_path / "nowhere"), True))
    assert system_world.folder(str(tmp_path / "absent")) is None


def test_an_exec_claim_still_running_elsewhere_is_not_recorded_as_nothing_to_do(world: Path, tmp_path: Path) -> None:
    from composens.system.run import execs

    claim = tmp_path / "claim.json"
    claim.write_text(json.dumps({"owner": [os.getpid(), started_at(os.getpid())], "results": None}))
    recording = replay.start(["netns", "link"])
    assert recording is not None
    assert execs._claim(claim) is False  # left to its owner, who is alive
    replay.finish(recording, 0, tmp_path / "replays")
    assert notes(world)[-1] == "not recorded: an exec claim in progress"


def test_a_gate_flag_kept_only_by_its_time_is_not_recorded(world: Path, tmp_path: Path) -> None:
    from composens.system.run import startgate

    flags = startgate.wired_dir(tmp_path, "lab")
    flags.mkdir(parents=True)
    (flags / "123-456").touch()
    recording = replay.start(["netns", "link"])
    assert recording is not None
    startgate.release(tmp_path, "lab", [], [], listed_at=0.0)  # written after the (pretended) listing: kept
    replay.finish(recording, 0, tmp_path / "replays")
    assert (flags / "123-456").exists()
    assert notes(world)[-1].startswith("not recorded: a gate")


def test_the_config_key_leaves_out_composens_own_switches_unless_a_file_names_them(tmp_path: Path) -> None:
    from composens.system.docker.configcache import cache_key
    from composens.system.docker.options import ComposeOptions

    (tmp_path / "compose.yaml").write_text("services: {a: {image: busybox}}\n")
    plain = cache_key(ComposeOptions(), tmp_path, {"HOME": "/root"})
    assert plain is not None
    assert cache_key(ComposeOptions(), tmp_path, {"HOME": "/root", replay.NOTE: "/dev/stderr"}) == plain
    assert cache_key(ComposeOptions(), tmp_path, {"HOME": "/root", replay.OFF: "1"}) == plain
    (tmp_path / "compose.yaml").write_text("services: {a: {image: busybox, command: ['${COMPOSENS_REPLAY_NOTE}']}}\n")
    named = cache_key(ComposeOptions(), tmp_path, {"HOME": "/root"})
    assert cache_key(ComposeOptions(), tmp_path, {"HOME": "/root", replay.NOTE: "/dev/stderr"}) != named


def test_the_record_folders_modes_as_found_are_a_reading(world: Path, tmp_path: Path) -> None:
    from composens.system.record.store import StateStore

    store = StateStore(tmp_path / "state")
    with store.locked():
        pass  # makes the folder, the lock and the record
    folder = tmp_path / "replays"
    recording = replay.start(["netns", "link"])
    assert recording is not None
    WORLD.read("config")
    with store.locked():
        pass  # finds all as it should be: changes nothing
    replay.finish(recording, 0, folder)
    assert notes(world)[-1].startswith("recorded")
    (tmp_path / "state").chmod(0o755)
    assert replay.answer(["netns", "link"], folder=folder) is None
    assert notes(world)[-1] == f"worked out: modes ['{tmp_path / 'state'}'] differs"


def test_a_namespace_whose_dumps_are_unchanged_is_not_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from composens.system.kernel import netlink

    args = ("r1", "/run/docker/netns/x", "/run/docker/netns/x", True, False)
    readings = [
        ("namespace", args, replay.digest_of("the namespace")),
        ("namespace-dumps", args, replay.digest_of("dumps 1")),
    ]
    whole: list[tuple[object, ...]] = []
    monkeypatch.setitem(
        system_world._READERS, "namespace", system_world.Reader(lambda *a: whole.append(a) or "the namespace")
    )
    monkeypatch.setattr(netlink, "read_dumps_digests", lambda paths: ["dumps 1" for _ in paths])
    assert replay._first_different(readings) is None
    assert whole == []
    monkeypatch.setattr(netlink, "read_dumps_digests", lambda paths: ["dumps 2" for _ in paths])  # a bridge's timers
    assert replay._first_different(readings) is None
    assert whole == [args]  # read whole, and found the same
    monkeypatch.setitem(system_world._READERS, "namespace", system_world.Reader(lambda *a: "another namespace"))
    assert replay._first_different(readings) == ("namespace", args)


def test_one_thread_enters_each_namespace_and_a_failed_entry_is_that_ones_answer() -> None:
    from composens.system.kernel import entering

    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        found = entering.in_each_netns([-1, own, -1], lambda: "made")
    finally:
        os.close(own)
    assert isinstance(found[0], OSError)
    assert found[1] == "made"
    assert isinstance(found[2], OSError)
