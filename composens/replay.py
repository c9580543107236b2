"""Answer a command that only reads again, without working it out again, while nothing it read has changed.

`ps --netns`, `netns show` and `netns link` on a lab nobody touched give the same answer every time, and
most of what they spend goes on working it out: importing the CLI, parsing the file and the record, the
diff, the table (bench/README.md). So a run of one of them is recorded: the launcher installs a Recording as
the observer of composens.system.world.WORLD, through which every reading of the world is made (the config's
cache key, the record's bytes, the containers as the engine lists and inspects them, each netns entry and its
mark, each namespace's links, addresses, routes and qdiscs, a namespace's inode and cookie, a start's exec
results, the gate and exec folders, the hub's sysctls, the kernel's qdisc kinds, the record folder's modes):
the recording keeps a digest of what each reading returned, and what the run printed, in order, and its exit
code. A later run with the same arguments, working folder, environment, terminal and composens code makes the
same readings again with the same readers (the engine and every namespace are still asked, every time) and,
when each digest is equal, prints what the recorded run printed. Its answer is worked out from readings equal
to the recorded ones, so it is the answer working it out again would give; a drift made by hand changes a
reading, and that run works it out again and is recorded in its turn.

Nothing below this module knows of replaying: readings and changes go through WORLD, and this observer is
installed at the edge. A read of the disk or a socket, or a process started, outside any reading of WORLD while
a run is recorded (an adapter that forgot WORLD) is seen by an audit hook and keeps that run from being
recorded, so a reading that bypasses WORLD costs speed, never a stale answer.

Not recorded: a run that changed anything (an entry, a mark, an interface, a sysctl, a gate, an exec
claim, the record, a folder or a mode composens keeps): replaying its answer would skip the change; a run
that failed; a run that read twice and saw two different things; a config compose's cache cannot key; a
run that waited on something a reading cannot repeat (an exec command another run is still running, a
file kept only because it is newer than the listing); a run whose output went past the text streams; and a
run that read outside WORLD. A lab over several hosts is recorded like any other: which host this is comes
from --host or COMPOSENS_HOST (in the key) or from the host's addresses (a reading). COMPOSENS_NO_REPLAY=1
turns replaying off. Replays are kept in /run/composens/replay (root's, 0700), at most KEEP of them,
named by the digest of their key: nothing of the environment is written down.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from composens.cli.arguments import GLOBAL_FLAGS, GLOBALS_WITH_VALUE, command_index
from composens.system.world import WORLD, reader_of

try:
    from _blake2 import blake2b  # hashlib's own BLAKE2; hashlib itself loads OpenSSL first (4 to 15 ms)
except ImportError:  # pragma: no cover - an interpreter without it
    from hashlib import blake2b

STATE_DIR = Path("/run/composens")  # lab.core.STATE_DIR, where the record and its lock are
REPLAY_DIR = STATE_DIR / "replay"
FORMAT = "composens-replay 1"
KEEP = 64  # replays kept; the oldest written go first
OFF = "COMPOSENS_NO_REPLAY"
SHELL_BOOKKEEPING = ("_",)  # set by the shell to the command being run: different on every way of calling
NOTE = "COMPOSENS_REPLAY_NOTE"  # a file to which each run says whether it was replayed or recorded, and why not
NOT_IN_KEY = (*SHELL_BOOKKEEPING, NOTE)  # a note is asked for to see why a recording was or was not replayed
PACKAGE = Path(__file__).parent

Args = tuple[Any, ...]


def command_of(args: Sequence[str]) -> tuple[str, ...] | None:
    """The command words (`ps`, `netns link`, ...) when `args` ask for a command that may be replayed, else None."""
    i = command_index(list(args), GLOBALS_WITH_VALUE | {"--host"}, GLOBAL_FLAGS | {"--debug"})
    if i is None:
        return None
    command, rest = args[i], args[i + 1 :]
    if any(a in ("-h", "--help") for a in rest):
        return None
    if command == "ps" and "--netns" in rest:
        return ("ps",)
    if command == "netns" and rest[:1] in (["link"], ["show"]):
        return ("netns", rest[0])
    return None


def key_of(args: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The digest of everything a command's answer depends on besides what it reads while it runs: its
    arguments, working folder, environment, terminal (the table's width and colours) and composens itself."""
    digest = blake2b(digest_size=32)

    def add(part: object) -> None:
        data = repr(part).encode(errors="surrogateescape")
        digest.update(len(data).to_bytes(8, "little") + data)

    try:
        add((FORMAT, list(args), os.getcwd(), os.geteuid(), sys.executable, sys.version))
        add(sorted(item for item in environ.items() if item[0] not in NOT_IN_KEY))
        for fd in (0, 1, 2):
            add(_terminal(fd))
        for folder, subfolders, files in os.walk(PACKAGE):  # the code that worked the answer out
            subfolders.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                st = os.stat(os.path.join(folder, name))
                add((os.path.relpath(os.path.join(folder, name), PACKAGE), st.st_size, st.st_mtime_ns, st.st_ino))
        for folder in sys.path:  # and the libraries it used (rich draws the table): installing one touches these
            if folder.endswith(("site-packages", "dist-packages")) and os.path.isdir(folder):
                st = os.stat(folder)
                add((folder, st.st_mtime_ns, st.st_ino))
        add(_protocol_names())
    except OSError:
        return None
    return digest.hexdigest()


def _protocol_names() -> list[tuple[str, bytes]]:
    """iproute2's names of route protocols, which a namespace's routes are read with (netlink.protocol_name)."""
    from composens.system.kernel.netlink import PROTOCOL_FILES, PROTOCOL_FOLDERS

    found = []
    paths = [Path(p) for p in PROTOCOL_FILES]
    for folder in PROTOCOL_FOLDERS:
        try:
            paths += sorted(Path(folder).iterdir())
        except OSError:
            continue
    for path in paths:
        try:
            found.append((str(path), path.read_bytes()))  # a few hundred bytes: their contents, not their times
        except OSError:
            continue
    return found


def _terminal(fd: int) -> tuple[bool, tuple[int, int] | None]:
    try:
        tty = os.isatty(fd)
    except OSError:
        return False, None
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return tty, None
    return tty, (size.columns, size.lines)


def digest_of(value: object) -> str:
    return blake2b(repr(value).encode(errors="surrogateescape"), digest_size=16).hexdigest()


# --------------------------------------------------------------------------- recording


class Recording:
    """What one run read, what it printed, and whether it may be replayed: the observer of WORLD while it runs."""

    def __init__(self, key: str, lock: bool) -> None:
        self.key = key
        self.lock = lock  # netns link reads under the record's lock; its replay does too
        self.readings: dict[tuple[str, str], str] = {}
        self.printed: list[tuple[int, str]] = []
        self.refused: str | None = None
        self._guard = threading.Lock()

    def read(self, kind: str, args: Args, value: object) -> None:
        self._note(kind, args, digest_of(value))

    def failed(self, kind: str, args: Args, error: Exception) -> None:
        self._note(kind, args, digest_of(_failure(error)))

    def changed(self, what: str) -> None:
        self.refuse(f"changed {what}")

    def refuse(self, why: str) -> None:
        if self.refused is None:
            self.refused = why

    def _note(self, kind: str, args: Args, digest: str) -> None:
        where = (kind, json.dumps(args))
        with self._guard:
            before = self.readings.setdefault(where, digest)
        if before != digest:
            self.refuse(f"{kind} {args!r} read twice and found different")


def _failure(e: Exception) -> tuple[str, str]:
    return type(e).__name__, str(e)


class _Tee:
    """A text stream that also keeps what is written to it, in order with the other stream's."""

    def __init__(self, stream: Any, fd: int, printed: list[tuple[int, str]], recording: Recording) -> None:
        self._stream = stream
        self._fd = fd
        self._printed = printed
        self._recording = recording

    def write(self, text: str) -> int:
        if text:
            self._printed.append((self._fd, text))
        return int(self._stream.write(text))

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    @property
    def buffer(self) -> Any:  # bytes past the text stream: not kept, so not replayable
        self._recording.refuse("wrote bytes")
        return self._stream.buffer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def start(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> Recording | None:
    """Record this run, when its command may be replayed."""
    command = command_of(args)
    if command is None or environ.get(OFF) == "1":
        return None
    key = key_of(args, environ)
    if key is None:
        return None
    recording = Recording(key, lock=command == ("netns", "link"))
    sys.stdout = _Tee(sys.stdout, 1, recording.printed, recording)
    sys.stderr = _Tee(sys.stderr, 2, recording.printed, recording)
    WORLD.observer = recording
    _watch_for_stray_io()
    return recording


# Audit events that read or change the world (sys.audit; CPython raises them for its own calls), watched while a
# run is recorded: one outside every reading of WORLD is a reading no replay would make again, or a change WORLD
# was not told of. Stat, readlink and access raise no event: those stay the adapters' to route through WORLD.
STRAY_EVENTS = {
    "open", "os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "socket.connect", "socket.bind",
    "subprocess.Popen", "os.posix_spawn", "os.exec", "os.system", "os.symlink", "os.link", "os.remove",
    "os.rename", "os.mkdir", "os.rmdir", "os.chmod", "os.chown", "os.setxattr", "os.removexattr", "os.truncate",
}  # fmt: skip
CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")


def _watch_for_stray_io() -> None:
    """Refuse the recording of a run that touches the world outside WORLD (an adapter that forgot it): a hook
    cannot be removed, so it is added once and asks whether a run is being recorded."""
    global _watching
    if not _watching:
        sys.addaudithook(_audit)
        _watching = True


_watching = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event not in STRAY_EVENTS:
        return
    recording = WORLD.observer
    if not isinstance(recording, Recording) or recording.refused is not None or WORLD.reading:
        return
    target = args[0] if args else None
    if event in ("open", "os.listdir", "os.scandir") and _is_code(target):
        return  # Python importing modules (and listing their folders), not a reading of the lab
    if event == "open" and isinstance(target, int):
        return  # a descriptor already open (os.fdopen)
    recording.refuse(f"{event} {target!r} outside composens.system.world")


def _is_code(target: object) -> bool:
    if target is None:
        return True  # scandir/listdir of the working folder: importlib's own
    path = os.fsdecode(target) if isinstance(target, str | bytes) else str(target)
    if path.endswith(CODE_SUFFIXES) or path.startswith(_CODE_FOLDERS) or os.path.basename(path) == "__pycache__":
        return True
    # importlib lists each folder of sys.path as it looks for a module (the working folder, under `python -m`)
    return os.path.abspath(path) in {os.path.abspath(folder or ".") for folder in sys.path}


_CODE_FOLDERS = tuple(
    folder.rstrip(os.sep) + os.sep for folder in {sys.prefix, sys.base_prefix, sys.exec_prefix, str(PACKAGE)} if folder
)  # Python's own and composens' code: never where a lab's files are


def finish(recording: Recording, code: object, folder: Path = REPLAY_DIR) -> None:
    """Stop recording; keep the run for replaying if it may be."""
    WORLD.observer = None
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, _Tee):
            setattr(sys, name, stream._stream)
    if code not in (None, 0):
        recording.refuse(f"exit code {code}")
    if not any(kind == "config" for kind, _ in recording.readings):
        recording.refuse("the project was not read")
    if recording.refused is not None:
        _note(f"not recorded: {recording.refused}")
        return
    document = {
        "format": FORMAT,
        "lock": recording.lock,
        "readings": [[kind, json.loads(args), digest] for (kind, args), digest in sorted(recording.readings.items())],
        "printed": recording.printed,
    }
    try:
        folder.parent.mkdir(mode=0o700, exist_ok=True)  # /run/composens, as the record's store makes it
        folder.mkdir(mode=0o700, exist_ok=True)
        temporary = folder / f".{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(document, f)
        os.replace(temporary, folder / f"{recording.key}.json")
        _trim(folder)
    except OSError as e:
        _note(f"not recorded: {e}")  # a replay that cannot be kept is no replay
        return
    _note(f"recorded {len(recording.readings)} readings")


def _note(line: str) -> None:
    path = os.environ.get(NOTE)
    if path:
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError:
            pass  # a note that cannot be written is no reason to fail the command


def _trim(folder: Path) -> None:
    dated = []
    for path in folder.glob("*.json"):
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue  # trimmed by another run meanwhile
    for _, old in sorted(dated)[:-KEEP]:
        old.unlink(missing_ok=True)


# --------------------------------------------------------------------------- replaying


def answer(args: Sequence[str], environ: Mapping[str, str] = os.environ, folder: Path = REPLAY_DIR) -> int | None:
    """Print what the recorded run of this command printed and return its exit code, when every reading it made
    finds the same again; None when there is no such run (the caller works the answer out)."""
    if command_of(args) is None or environ.get(OFF) == "1":
        return None
    key = key_of(args, environ)
    if key is None:
        return None
    try:
        document = json.loads((folder / f"{key}.json").read_bytes())
    except FileNotFoundError:
        _note("worked out: not recorded before")
        return None
    except (OSError, ValueError):
        _note("worked out: the recording cannot be read")
        return None
    try:
        if document["format"] != FORMAT:
            raise ValueError(document["format"])
        readings = [(str(kind), tuple(args_), str(digest)) for kind, args_, digest in document["readings"]]
        printed = [(int(fd), str(text)) for fd, text in document["printed"]]
        for kind, _, _ in readings:
            reader_of(kind)  # KeyError: a kind this composens does not read
    except (KeyError, TypeError, ValueError):
        _note("worked out: the recording is not one of this composens")
        return None
    lock = _take_lock() if document.get("lock") else None
    try:
        differs = _first_different(readings)
    finally:
        if lock is not None:
            os.close(lock)
    if differs is not None:
        _note(f"worked out: {differs[0]} {list(differs[1])} differs")
        return None
    _note("replayed")
    for fd, text in printed:  # each flushed, as the recorded run flushed each line: the two streams interleave alike
        stream = sys.stdout if fd == 1 else sys.stderr
        stream.write(text)
        stream.flush()
    return 0


def _take_lock() -> int | None:
    import fcntl

    try:
        lock = os.open(STATE_DIR / "lock", os.O_RDWR)
    except OSError:
        return None
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _first_different(readings: list[tuple[str, Args, str]]) -> tuple[str, Args] | None:
    """Make each reading again, the engine's in a thread of its own; return one that finds something else, or None
    when all find the same.

    A namespace read from its netlink dumps alone is the same when its dumps are: those are compared first,
    unparsed, all in one go, and the namespace is read whole only when they differ (a bridge's timers, say)."""
    dumps = {json.dumps(list(args)): digest for kind, args, digest in readings if kind == "namespace-dumps"}
    engine = [(kind, args, digest) for kind, args, digest in readings if kind in ENGINE_KINDS]
    answered: list[tuple[str, Args] | None] = []
    asking = threading.Thread(target=lambda: answered.append(_first_failing(engine)), daemon=True)
    asking.start()
    rest = _first_failing([r for r in readings if r[0] not in ENGINE_KINDS and r[0] != "namespace-dumps"], dumps)
    asking.join()
    return rest or (answered[0] if answered else ("engine", ()))


ENGINE_KINDS = ("containers", "inspect")


def _first_failing(
    readings: list[tuple[str, Args, str]], dumps: Mapping[str, str] | None = None
) -> tuple[str, Args] | None:
    """The first reading that finds something else now. A namespace with a digest of its dumps in `dumps` is the
    same when its dumps are (all asked for together), else when its whole reading is."""
    dumps = dumps or {}
    shortcut = {
        json.dumps(list(args)): args[1]
        for kind, args, _ in readings
        if kind == "namespace" and json.dumps(list(args)) in dumps
    }
    now: dict[str, str | None] = {}
    if shortcut:
        from composens.system.kernel import netlink

        dumped = sorted(set(shortcut.values()))
        try:
            now = dict(zip(dumped, netlink.read_dumps_digests(dumped), strict=True))
        except Exception:
            now = {}  # each namespace is then read whole
    for kind, args, digest in readings:
        key = json.dumps(list(args))
        if kind == "namespace" and key in shortcut and digest_of(now.get(shortcut[key])) == dumps[key]:
            continue
        if digest_of(_read(kind, args)) != digest:
            return kind, args
    return None


def _read(kind: str, args: Args) -> object:
    try:
        found = reader_of(kind)
        return found.shown(found.read(*args))
    except Exception as e:
        return _failure(e)
