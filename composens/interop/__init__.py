"""Other tools' formats: containerlab topologies in and out (clab), JUnit XML (junit).

Imports: composens.model only.
"""
