"""The record on disk: read under no lock to look, or under the lock to change, and written whole before each change.

The record lives in /run (tmpfs, like /var/run/netns), so a reboot clears both together. Writers hold an
exclusive flock; the file is replaced by rename, so a crash leaves the old or the new record, never half of one.
A record that cannot be read or checked (composens.model.record) is moved aside, never taken for an empty one.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from composens.model.errors import PermissionProblem, RecordDamaged
from composens.model.record import RECOVER_HINT, State
from composens.system.world import WORLD, reader


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "state.json"

    def read(self) -> State:
        """Read the record without locking, for commands that only look."""
        state = self._load()
        if isinstance(state, str):
            raise RecordDamaged(f"the record {self.path} cannot be read ({state}); {RECOVER_HINT}")
        if state.damaged:
            raise RecordDamaged(f"the record was damaged and moved to {state.damaged}; {RECOVER_HINT}")
        return state

    def _load(self) -> State | str:
        """The record, or why it cannot be trusted."""
        try:
            data: bytes | None = WORLD.read("record", str(self.path))
            return State.from_json(data.decode()) if data is not None else State()
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as e:
            return f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        except OSError as e:
            return e.strerror or str(e)

    @contextmanager
    def locked(self, *, recovering: bool = False) -> Iterator[State]:
        """Hold the lock, yield the record, and save it when the block ends (also after an error).

        A record that cannot be trusted is moved aside (its bytes kept) and refused: RecordDamaged,
        unless `recovering`, which gets an empty record to rebuild.
        """
        lock = self._open_lock()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self._load()
            if isinstance(state, str):
                moved = self._move_aside()
                self._save(State(damaged=str(moved)))
                if not recovering:
                    raise RecordDamaged(
                        f"the record could not be read ({state}); it was moved to {moved}; {RECOVER_HINT}"
                    )
                state = State(damaged=str(moved))
            elif state.damaged and not recovering:
                raise RecordDamaged(f"the record was damaged and moved to {state.damaged}; {RECOVER_HINT}")
            if recovering and state.damaged:
                state = State(damaged=state.damaged)  # rebuilt from what is on disk, not from the damaged bytes
            state.save = lambda: self._save(state)
            try:
                yield state
            finally:
                self._save(state)
        finally:
            os.close(lock)

    def _open_lock(self) -> int:
        # The modes as found are a reading: a run that finds them loosened puts them back, and a replay must not
        # answer for it.
        WORLD.witness("modes", str(self.directory))
        try:
            self.ensure_directory()
            if not (self.directory / "lock").exists():
                WORLD.changed("the record's lock")
            with WORLD.derived():  # its being there and its mode are the "modes" reading
                lock = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError as e:
            raise PermissionProblem(f"cannot write {self.directory}: composens needs root (run it with sudo)") from e
        if os.fstat(lock).st_mode & 0o777 != 0o600:
            WORLD.changed("the mode of the record's lock")
            os.fchmod(lock, 0o600)
        return lock

    def ensure_directory(self) -> None:
        # Modes set explicitly: mkdir's and open's follow the umask, and under umask 0 the record
        # of what root may delete would be anyone's to write.
        if not self.directory.is_dir():
            WORLD.changed(f"the folder {self.directory}")
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o777 != 0o700:
            WORLD.changed(f"the mode of {self.directory}")
            os.chmod(self.directory, 0o700)

    def _move_aside(self) -> Path:
        moved = self.directory / f"state.json.damaged-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.replace(self.path, moved)
        return moved

    def _save(self, state: State) -> None:
        text = state.to_json()
        try:
            with WORLD.derived():  # under the lock, the bytes the "record" reading found
                if self.path.read_text() == text and self.path.stat().st_mode & 0o777 == 0o600:
                    return  # as it is on disk: nothing to write (nor to sync)
        except (OSError, UnicodeDecodeError):
            pass
        WORLD.changed("the record")
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# The readings of the record, made again from plain arguments (composens.system.world).


@reader("record")
def _record(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None


@reader("modes")
def _modes(folder: str) -> list[int | None]:
    """The modes of the record's folder, its lock and the record (None where absent), as the store keeps them."""
    found: list[int | None] = []
    for path in (folder, os.path.join(folder, "lock"), os.path.join(folder, "state.json")):
        try:
            found.append(os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            found.append(None)
    return found
