"""The lab: experiments that measure every method on modified copies of a dataset.

- ``experiment``: ``ExperimentConfig`` and ``Experiment``, the facade the CLI, the dashboard and the bench use;
- ``stages``: the cached stage graph (one module per stage, run by ``stages.runner.StageRunner``);
- ``results``: ``Results``, the tables derived from a run's stages;
- ``published``: the reference experiment's published numbers and its table format.

The lab builds on the core (``malle.io``, ``malle.data``, ``malle.ops``, ``malle.descriptors``,
``malle.inference``, ``malle.retrieval``, ``malle.tricks``, ``malle.evaluation``) and never imports the products.
"""
