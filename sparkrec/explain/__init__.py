"""Explanations: Captum attributions of a (user, recommended item) score to the model's inputs.

Library entry points: ``history_attributions`` / ``token_attributions`` (one pair, pure torch, in
``attributions``) and ``run_explain(spark, cfg)`` (the job: publishes ``explanations/<name>/``).
"""
