"""Core: how codes are compared and searched.

- ``metrics``: one object per metric (cosine on L2-normalised rows, Hamming on packed bits);
- ``indexes``: which FAISS index holds a database (an index-factory string, or ``auto``);
- ``topk``: top-K search with deterministic ties.
"""
