"""Malle: find modified copies of images.

The engine reproduces a five-stage experiment, one module per stage:

1. ``malle.sampling``    pick originals from a dataset folder
2. ``malle.augment``     make modified copies with replayable op chains
3. ``malle.descriptors`` encode images (CNN embeddings, perceptual hashes)
4. ``malle.search``      FAISS indexes with deterministic tie-breaking
5. ``malle.evaluate``    class- and instance-level Recall@K

``malle.experiment`` runs them in order and caches every stage on disk.
"""

__version__ = "0.1.0"
