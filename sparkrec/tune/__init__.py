"""Hyper-parameter search on the validation split (``jobs/tune.py``; see ``search.run_tune``)."""
