"""Effects: everything composens does to, or reads of, the engine, the kernel and the disk, grouped by what it touches.

docker (the compose CLI, the engine's API, the config cache), kernel (netns entries, netlink, reading and wiring
namespaces, processes, capture), record (the record on disk, its recovery), run (checks' probes, exec commands,
the start gate); world (WORLD: every reading by kind, every change said; composens.replay observes it at the
edge) and faults (the crash points tests use).

Imports: composens.plan and composens.model; inside, run -> record -> kernel | docker -> world | faults.
"""
