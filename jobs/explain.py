"""Explain the published model `<name>`'s recommendations with Captum attributions (which history
items or content tokens pushed each score up or down) and publish `<lake>/explanations/<name>/`
(`attributions/` Parquet in original IDs, `summary.json` with the convergence deltas).

By default the pairs are the top recommendations in `scores/<name>/` (run jobs/score.py first);
`explain.pairs=<Parquet of user_id, item_id>` explains given pairs instead.

    ./spark-submit.sh jobs/explain.py --conf conf/demo.yaml explain.users=[u1,u42] explain.items_per_user=3
"""
import sys

from sparkrec.cli import run_job
from sparkrec.config import Config
from sparkrec.explain.job import run_explain
from sparkrec.session import get_spark


def explain(cfg: Config) -> None:
    manifest = run_explain(get_spark(cfg.spark), cfg)
    print(f"explained {manifest['pairs_explained']} pairs ({manifest['method']}, kinds {manifest['kinds']}); "
          f"{len(manifest['skipped'])} skipped; max |convergence delta| {manifest['max_abs_delta']:.2e}")
    print(f"explanations: {manifest['version']}")


def main(argv=None) -> int:
    return run_job(explain, argv, prog="explain", doc=__doc__)


if __name__ == "__main__":
    sys.exit(main())
