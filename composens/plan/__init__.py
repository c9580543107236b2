"""The plan: a lab as declared against the lab as it is, worked out into changes and drift. Pure.

live (what a namespace has now), changes (each change as the command that makes it), converge (the changes that
bring a lab to its file, and its drift), ready (when a wired interface is usable: carrier seen by the kernel and
by IPv6).

Imports: composens.model only.
"""
