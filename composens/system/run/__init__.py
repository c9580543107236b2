"""What runs inside a lab: checks' pings and execs (probe), the file's exec commands once wired (execs), and the
gate in front of services that start once wired (startgate), a scenario's continuous probes (monitor) and its timed
runner (scenario).
"""
