"""Core: which images a run uses.

- ``sampling``: the dataset's files and the originals drawn from them (``discover``, ``sample``);
- ``pools``: the spare images split into pools (distractor queries, database distractors, background).
"""
