"""Where the command is in composens' arguments, past compose's global options: read before anything is imported."""

from __future__ import annotations

# Commands composens handles itself (or wraps); everything else is compose's.
OWN_COMMANDS = {
    "up", "down", "netns", "watch", "plan", "graph", "test", "link", "netem", "capture",
    "start", "restart", "stop", "kill", "rm", "import", "scenario", "extcap",
}  # fmt: skip
# Compose commands composens takes over only with an option of its own: `ps --netns`, `export --format`.
OWN_WITH_OPTION = {"ps": "--netns", "export": "--format"}
GLOBALS_WITH_VALUE = {
    "-f", "--file", "-p", "--project-name", "--profile", "--env-file", "--project-directory",
    "--ansi", "--progress", "--parallel",
}  # fmt: skip
GLOBAL_FLAGS = {"--compatibility"}


def command_index(args: list[str], with_value: set[str], flags: set[str]) -> int | None:
    """Where the command word is, past the global options given (those taking a value, and flags); None when another
    option comes first (--help, --version, a typo: the CLI answers those) or there is no command."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in with_value:
            i += 2
        elif arg.split("=", 1)[0] in with_value or arg in flags:
            i += 1
        elif arg.startswith("-"):
            return None
        else:
            return i
    return None


def passthrough_command(args: list[str]) -> str | None:
    """Return the compose command if `args` can go to docker compose untouched, else None."""
    i = command_index(args, GLOBALS_WITH_VALUE, GLOBAL_FLAGS)  # --debug is composens': not past it
    if i is None:
        return None
    command, rest = args[i], args[i + 1 :]
    own_option = OWN_WITH_OPTION.get(command)
    if command in OWN_COMMANDS or (own_option and any(a.split("=", 1)[0] == own_option for a in rest)):
        return None
    return command


# Options of compose commands that take a value, so their values are not taken for service names.
VALUE_OPTIONS = {
    "up": {"--attach", "--exit-code-from", "--no-attach", "--pull", "--scale", "-t", "--timeout", "--wait-timeout"},
    "down": {"--rmi", "-t", "--timeout"},
    "stop": {"-t", "--timeout"},
    "restart": {"-t", "--timeout"},
    "kill": {"-s", "--signal"},
    "start": {"--wait-timeout"},
    "rm": set(),
}


EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": ["-h", "--help"]}


def service_args(command: str, args: list[str]) -> list[str]:
    """Pick the SERVICE arguments out of a compose command's arguments."""
    takes_value = VALUE_OPTIONS.get(command, set())
    services: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in takes_value
        else:
            services.append(arg)
    return services


def is_detached(args: list[str]) -> bool:
    for arg in args:
        if arg in ("--detach", "--wait"):
            return True
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].isalpha() and "d" in arg[1:]:
            return True
    return False
