"""Item content: tokenisation in Spark, the hybrid NeuMF and cold-start items, end to end.

The planted lake holds a generated implicit log whose item text carries each item's planted
cluster and factor signs (``generate_item_text``), prepared with 20% of the items held out as
cold (every interaction in test), so only content can rank them.
"""
import re

import pytest
import torch

from jobs.prepare_content import main as prepare_content_main
from sparkrec import lake
from sparkrec.config import load_config
from sparkrec.data import item_text
from sparkrec.data.content import content_root, run_prepare_content
from sparkrec.data.prepare import load_manifest, run_prepare
from sparkrec.data.synthetic import generate_interactions, generate_item_text, write_synthetic
from sparkrec.errors import SparkrecError
from sparkrec.evaluate.cold_item_protocol import POPULARITY, evaluate_cold_items
from sparkrec.evaluate.report import cold_items_section
from sparkrec.evaluate.run import run_evaluate
from sparkrec.evaluate.subjects import TrainedModel
from sparkrec.models.hybrid import HybridNCF
from sparkrec.models.block_scoring import make_scorer
from sparkrec.models.decomposed_ncf import DecomposedNCF
from sparkrec.score.job import run_score
from sparkrec.models.store import load_model
from sparkrec.train.feed import plan_shards
from sparkrec.train.launch import run_training

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,"American President, The (1995)",Comedy|Drama|Romance
3,Heat (1995),Action|Crime
4,Sci-Fi Story,(no genres listed)
"""
TAGS = """userId,movieId,tag,timestamp
1,1,pixar,1
2,1,Pixar,2
3,1,fun story,3
1,3,heist,4
"""

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def movielens_lake(spark, tmp_path_factory):
    """A tiny MovieLens folder (movie 5 is rated but has no text) prepared into a lake."""
    root = tmp_path_factory.mktemp("ml-content")
    data = root / "ml"
    data.mkdir()
    (data / "movies.csv").write_text(MOVIES)
    (data / "tags.csv").write_text(TAGS)
    ratings = [f"{u},{m},4.0,{100 * u + m}" for u in range(1, 4) for m in range(1, 6)]
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(ratings) + "\n")
    overrides = [f"lake={root}/lake", f"input.path={data}", "input.format=movielens", "prepare.num_files=1",
                 "prepare.split.kind=random", "prepare.split.fractions=[1.0,0.0,0.0]",
                 "content.source=movielens", f"content.path={data}", "content.max_tokens=8",
                 "content.min_count=2", "content.cnn_widths=[1,2]"]
    cfg = load_config(None, overrides)
    run_prepare(spark, cfg)
    return cfg, overrides


def test_movielens_text_becomes_padded_token_ids(spark, movielens_lake):
    cfg, overrides = movielens_lake
    assert prepare_content_main([*overrides, "spark.shuffle_partitions=2"]) == 0
    manifest = lake.resolve(content_root(cfg.lake))
    vocab = lake.read_json(manifest["paths"]["token_vocab"])
    # Document frequency over the (truncated) texts of the 5 prepared items; min_count=2.
    assert vocab == ["<pad>", "<unk>", "decade:1990s", "year:1995", "story"]
    assert manifest["data_hash"] == load_manifest(cfg.lake)["data_hash"]
    items = spark.read.parquet(load_manifest(cfg.lake)["paths"]["item_vocab"])
    table = {r["original_id"]: (list(r["tokens"]), r["num_tokens"], r["has_text"], r["trained"]) for r in
             spark.read.parquet(manifest["paths"]["items"]).join(items.withColumnRenamed("index", "item_idx"),
                                                                 "item_idx").collect()}
    # 1: toy story year decade adventure animation children | pixar (x2) fun story: cut at 8.
    assert table["1"] == ([1, 4, 3, 2, 1, 1, 1, 1], 8, True, True)
    assert table["2"] == ([1, 1, 1, 3, 2, 1, 1, 1], 8, True, True)   # american president the ...
    assert table["3"] == ([1, 3, 2, 1, 1, 1, 0, 0], 6, True, True)   # heat year decade action crime heist
    assert table["4"] == ([1, 1, 4, 0, 0, 0, 0, 0], 3, True, True)   # sci fi story, no year, no genres
    assert table["5"] == ([0] * 8, 0, False, True)                   # rated, no text
    c = manifest["counts"]
    assert (c["num_items"], c["items_with_text"], c["items_without_text"], c["matched_items"],
            c["truncated_items"], c["source_rows"], c["tag_rows"]) == (5, 4, 1, 4, 1, 4, 4)


def test_words_tags_and_vocabulary_bound(spark):
    movies = spark.createDataFrame([("7", "Amélie (Fabuleux destin, Le) (2001)", "Comedy|Film-Noir")],
                                   "movieId string, title string, genres string")
    assert item_text.movie_tokens(movies).first()["tokens"] == [
        "amélie", "fabuleux", "destin", "le", "year:2001", "decade:2000s", "genre:comedy", "genre:film_noir"]
    assert item_text.movie_tokens(movies, title_year=False).first()["tokens"][:5] == [
        "amélie", "fabuleux", "destin", "le", "2001"]
    tags = spark.createDataFrame([("7", "b a"), ("7", "b"), ("7", "C!")], "movieId string, tag string")
    assert item_text.tag_tokens(tags).first()["tokens"] == ["b", "a", "c"]   # most applied first, ties a-z
    docs = spark.createDataFrame([("i1", ["x", "y", "y"]), ("i2", ["y", "z"]), ("i3", ["z", "w"])],
                                 "item_id string, tokens array<string>")
    top = item_text.token_document_frequency(docs, vocab_size=2, min_count=1).collect()
    assert [(r["token"], r["doc_freq"]) for r in top] == [("y", 2), ("z", 2)]


def test_content_refuses_missing_movies_file(spark, movielens_lake, tmp_path):
    cfg, _ = movielens_lake
    cfg = cfg.model_copy(update={"content": cfg.content.model_copy(update={"path": str(tmp_path)})})
    with pytest.raises(SparkrecError, match="no movies.csv"):
        run_prepare_content(spark, cfg)


# -- planted data: hybrid vs popularity on cold items --------------------------------------------

GENERATE = ["generate.num_rows=24000", "generate.num_users=300", "generate.num_items=600", "generate.candidates=32",
            "generate.popularity_exponent=0.7", "generate.partitions=2", "generate.kind=implicit",
            "input.columns.rating=null"]
HYBRID = ["train.model=hybrid", "train.epochs=8", "train.batch_size=256", "train.lr=0.005", "train.factors=8",
          "train.mlp_layers=[32,16,8]", "train.threads_per_worker=2", "train.log_every_steps=100000",
          "content.source=table", "content.max_tokens=12", "content.min_count=1", "content.cnn_widths=[1,2]",
          "content.cnn_filters=32", "content.token_dim=16", "content.id_dropout=0.5",
          "evaluate.baselines=[popularity]", "evaluate.k=[10]"]


@pytest.fixture(scope="module")
def planted(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted-content")
    cfg = load_config(None, [f"lake={root}/lake", f"input.path={root}/raw", f"content.path={root}/items",
                             "name=hybrid", *GENERATE, *HYBRID, "prepare.split.kind=leave_last_out",
                             "prepare.split.validation=false", "prepare.split.cold_item_fraction=0.2",
                             "prepare.num_files=2"])
    write_synthetic(generate_interactions(spark, cfg.generate, cfg.input.columns), cfg.input.path, "parquet")
    generate_item_text(spark, cfg.generate, factor_words=6).write.parquet(cfg.content.path)
    prepared = run_prepare(spark, cfg)
    content = run_prepare_content(spark, cfg)
    summary = run_training(None, cfg)
    return {"cfg": cfg, "prepared": prepared, "content": content, "summary": summary}


def test_hybrid_beats_popularity_on_cold_items(spark, planted):
    content = planted["content"]["counts"]
    assert content["cold_items_with_text"] > 30 and content["items_without_text"] == 0
    metrics = run_evaluate(spark, planted["cfg"])
    cold = metrics["cold_items"]
    assert cold["users"] > 100 and cold["cold_items"] == planted["prepared"]["num_items"] - content["trained_items"]
    hybrid, popularity = cold["results"]["hybrid"], cold["results"][POPULARITY]
    print("cold items:", {k: (hybrid[k], popularity[k]) for k in ("hr@10", "ndcg@10")})
    # ~8 cold positives per user among ~110 cold items: popularity's arbitrary order already hits
    # often. Over seeds 42, 1, 2, 3 (2026-12-06) popularity scored HR@10 0.56-0.73 and NDCG@10
    # 0.07-0.12, the hybrid 0.88-0.96 and 0.23-0.30: margins of at least 0.23 and 0.11. A ratio
    # bound (2x) failed on seed 42 by 1% when the file order of prepared rows changed, so the
    # bounds are margins, set below the smallest measured one.
    assert hybrid["hr@10"] > popularity["hr@10"] + 0.15
    assert hybrid["ndcg@10"] > popularity["ndcg@10"] + 0.08
    page = lake.read_bytes(metrics["report"]).decode("utf-8")
    section = page[page.index("<h2>Cold items"):page.index("<h2>Training curves")]
    assert f"{cold['cold_items']} cold items, {cold['positives']} relevant test pairs of {cold['users']} users" in section
    assert re.search(rf"<th>hybrid <small>\(model\)</small></th><td><b>{hybrid['hr@10']:.4f}</b></td>"
                     rf"<td><b>{hybrid['ndcg@10']:.4f}</b></td><td>{hybrid['users']}</td>", section)
    assert f"<td>{popularity['hr@10']:.4f}</td><td>{popularity['ndcg@10']:.4f}</td>" in section
    # Warm items still ranked by the model (full protocol over trained items).
    full = metrics["results"]
    print("warm items, full ranking hr@10:", full["hybrid"]["full"]["hr@10"], full["popularity"]["full"]["hr@10"])
    assert full["hybrid"]["full"]["hr@10"] > full["popularity"]["full"]["hr@10"]


def test_neumf_is_reported_unable_to_rank_cold_items(spark, planted):
    cfg = planted["cfg"]
    neumf = cfg.model_copy(update={"name": "neumf",
                                   "train": cfg.train.model_copy(update={"model": "neumf", "epochs": 1})})
    run_training(None, neumf)
    prepared = load_manifest(cfg.lake)
    train = spark.read.parquet(prepared["splits"]["train"]["path"])
    test = spark.read.parquet(prepared["splits"]["test"]["path"])
    subject = TrainedModel.load(spark, cfg.lake, "neumf", prepared, {"train": train, "test": test}, ["train"])
    cold = evaluate_cold_items(subject, train, test.select("user_idx", "item_idx").distinct(),
                               train.select("user_idx", "item_idx"), prepared["num_items"], [10])
    assert cold["results"]["neumf"]["scored"] is False and "no item content" in cold["results"]["neumf"]["reason"]
    assert cold["results"][POPULARITY]["users"] == cold["users"] > 0
    section = cold_items_section({"cold_items": cold, "k": [10], "results": {},
                                  "protocols": {"cold_items": {"description": "cold"}}})
    assert "<b>neumf</b> not scored: a neumf model has no item content" in section
    assert "<th>neumf" not in section and "<th>popularity <small>(baseline)</small></th>" in section


def test_score_job_serves_cold_items_for_hybrid(spark, planted):
    cfg, content = planted["cfg"], planted["content"]["counts"]
    manifest = run_score(spark, cfg)
    assert manifest["candidate_items"] == content["num_items"]   # trained + every cold item with text
    prepared = load_manifest(cfg.lake)
    cold_ids = {r["original_id"] for r in spark.read.parquet(prepared["paths"]["item_vocab"])
                .join(spark.read.parquet(prepared["splits"]["train"]["path"])
                      .selectExpr("item_idx as index"), "index", "left_anti").collect()}
    table = spark.read.parquet(manifest["version"])
    served_cold = table.where(table.item_id.isin(sorted(cold_ids))).count()
    assert len(cold_ids) > 30 and served_cold > 0
    assert manifest["rows"] == table.count()


def test_hybrid_survives_save_load_and_fast_scoring(planted):
    model, meta = load_model(planted["cfg"].lake, "hybrid")
    assert isinstance(model, HybridNCF) and meta["model"]["kind"] == "hybrid"
    assert meta["model"]["token_vocab"][:2] == ["<pad>", "<unk>"]
    assert model.content_tokens.shape == (meta["num_items"], 12) and model.content_tokens.any()
    assert int(model.id_mask.sum()) == planted["content"]["counts"]["trained_items"]
    scorer = make_scorer(model, meta["num_items"])   # raises if as_ncf disagrees with forward
    assert isinstance(scorer, DecomposedNCF)
    users = torch.arange(meta["num_users"])[:64]
    fast = scorer.block(scorer.user_state(users), 0, meta["num_items"])
    with torch.inference_mode():
        direct = model(users.repeat_interleave(meta["num_items"]),
                       torch.arange(meta["num_items"]).repeat(len(users))).view(len(users), -1)
    assert torch.allclose(fast, direct, rtol=1e-4, atol=1e-5)
    # forward is forward_with_tokens on the stored tokens; other tokens change the score.
    items = torch.arange(8)
    with torch.inference_mode():
        same = model.forward_with_tokens(users[:8], items, model.content_tokens[items])
        blank = model.forward_with_tokens(users[:8], items, torch.zeros_like(model.content_tokens[items]))
    assert torch.equal(same, model(users[:8], items)) and not torch.allclose(same, blank)


@pytest.mark.distributed
@pytest.mark.timeout(300)
def test_two_ddp_workers_train_hybrid_to_identical_weights(spark, planted):
    cfg = planted["cfg"]
    train = cfg.train.model_copy(update={"backend": "torch", "num_workers": 2, "epochs": 1, "batch_size": 1024,
                                         "threads_per_worker": 1})
    summary = run_training(spark, cfg.model_copy(update={"name": "hybrid-ddp", "train": train}))
    assert len(summary["weights_by_rank"]) == 2 and summary["weights_by_rank"][0] == summary["weights_by_rank"][1]
    plan = plan_shards(planted["prepared"], "train", world=2, batch_size=1024)
    assert [epoch["rows_by_rank"] for epoch in summary["history"]] == [list(plan.shard_rows)]
    assert sum(plan.shard_rows) == planted["prepared"]["splits"]["train"]["rows"]
    model, meta = load_model(cfg.lake, "hybrid-ddp")
    assert isinstance(model, HybridNCF) and meta["config"]["train"]["backend"] == "torch"
    assert int(model.id_mask.sum()) == planted["content"]["counts"]["trained_items"]
