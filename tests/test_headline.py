"""The pipeline job's last line: the model against the best baseline on the primary metric, with
the paired interval (no Spark: from a run summary)."""
from sparkrec.pipeline.run import headline


def summary(model: dict, baselines: dict) -> dict:
    return {"stages": {"evaluate": {"outputs": {"model": model, "baselines": baselines}}}}


def gap(difference, low, high):
    return {"difference": difference, "low": low, "high": high, "units": 100}


def test_implicit_data_compare_full_ranking_ndcg_with_the_best_baseline():
    line = headline(summary({"full": {"ndcg@10": 0.30, "ndcg@5": 0.25}}, {
        "popularity": {"full": {"ndcg@10": 0.10}, "model_minus_baseline": {"full": {"ndcg@10": gap(0.2, 0.15, 0.25)}}},
        "ease": {"full": {"ndcg@10": 0.28}, "model_minus_baseline": {"full": {"ndcg@10": gap(0.02, -0.01, 0.05)}}}}))
    assert line == ("full-ranking ndcg@10 0.3000 vs best baseline ease 0.2800: difference +0.0200, "
                    "95% interval [-0.0100, +0.0500], within the noise")


def test_explicit_data_compare_rmse_lower_is_better():
    line = headline(summary({"rating": {"rmse": 0.80}, "full": {"ndcg@10": 0.1}}, {
        "bias": {"rating": {"rmse": 0.90}, "model_minus_baseline": {"rating": {"rmse": gap(-0.1, -0.12, -0.08)}}},
        "als_explicit": {"rating": {"rmse": 0.85},
                         "model_minus_baseline": {"rating": {"rmse": gap(-0.05, -0.07, -0.03)}}}}))
    assert line.startswith("rmse 0.8000 vs best baseline als_explicit 0.8500") and line.endswith("better beyond the noise")
