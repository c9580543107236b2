"""The record of what composens made: kept on disk under a lock (store), and rebuilt when damaged (recovery)."""
