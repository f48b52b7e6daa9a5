"""Matching tricks that ISC2021's winners layered over a global descriptor, as small pure functions.

- ``normalise``: score normalisation against a background set (SSCD, ISC2021);
- ``regions``: the query also searched as overlapping windows, best score kept (insets, collages);
- ``verify``: local-feature geometric verification of the top candidates, fused with the global score.

Each works on any float (cosine) descriptor. Stages that apply them to a run (the ``METHOD+norm``,
``METHOD+regions`` and ``METHOD+verify`` methods, ``malle.lab.stages.trick_layers``) build on these functions.
"""
