"""sparkrec: deep-learning recommendation training at data-lake scale on Apache Spark.

Package order (``LAYERS``): a package imports only the foundation modules (``errors``,
``columns``, ``config``, ``lake``, ``hashing``, ``session``, ``cli``) and packages listed before
it, never one after it, and nothing imports ``jobs/`` (tests/test_layers.py checks this).

1. ``models``: the ``nn.Module`` families, their config dataclasses and the model store
   (``models/store.py``: where a trained model lives, how it is rebuilt, which prepared data it
   belongs to).
2. ``data``: prepare, the raw log to ``prepared/``, ``content/`` and ``vectors/``.
3. ``train``: the loop, launchers and checkpoints; publishes ``models/<name>``.
4. ``score``: the score engine (top-K, pair scores, the popularity fallback) and the score job.
5. ``explain``: attributions of the recommendations the score job served.
6. ``evaluate``: protocols, baselines and the report; it scores models through the score engine
   (so it judges what is served) and digests the published explanations.
7. ``tune``: hyper-parameter search on the validation split (trains models, judges baselines).
8. ``pipeline``: every stage, the quality gate and the run history.
"""
__version__ = "0.1.0"

LAYERS = ("models", "data", "train", "score", "explain", "evaluate", "tune", "pipeline")
