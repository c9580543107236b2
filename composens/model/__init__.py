"""The model: what a compose project declares for composens, and the data composens reports. Pure.

topology (services, links, LANs, addresses, routes), hosts (a lab over several machines), conditions, checks,
capture (what to capture, the flight recorder's settings), packets (captured packets, their merge, a ring),
macs, names, startwait (the start gate's wait), declared (the whole declaration parsed), containers and entries
(the engine's containers and /var/run/netns entries as composens sees them), record (what composens made),
report (rows, drift, results), errors (one exit code per kind of failure).

Imports: the standard library only; no other layer of composens (import-linter holds it).
"""
