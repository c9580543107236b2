"""composens: docker compose for network labs."""

__version__ = "0.1.0"
