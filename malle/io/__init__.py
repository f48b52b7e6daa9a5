"""Core: what enters and leaves the disk.

- ``images``: safe image loading (``load_rgb``); a bad file is a ``BadImage`` with a one-line reason.
- ``cache``: fingerprints, atomic writes and verified folders, shared by every cached artifact.
- ``shards``: embeddings on disk as Parquet shards with a verified manifest.
- ``naming``: file names that are unique and never too long; ``tables``: small helpers over tables.
"""
