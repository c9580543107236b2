"""The kernel: /var/run/netns entries (netns), reading namespaces over netlink or ip (netlink, reading), work
inside a namespace from a thread (entering), changing interfaces (wiring, the only module that does), waiting until
wired interfaces are usable (ready), stopping processes (processes) and capturing packets (capture).
"""
