"""What composens shows: data in, text, tables and pictures out. render (the only module that imports rich),
picture (DOT and Mermaid), graphviz (DOT to SVG or PNG through `dot`).

Imports: composens.model only.
"""
