"""The docker engine: the compose CLI (compose), the engine's HTTP API (engine), compose's global options
(options), and what `docker compose config` said, kept while its inputs stay (configcache).
"""
