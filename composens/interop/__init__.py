"""Other tools' formats: containerlab topologies in and out (clab), JUnit XML (junit), pcapng captures (pcapng).

Imports: composens.model only.
"""
