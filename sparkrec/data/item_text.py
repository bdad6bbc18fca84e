"""Item text -> fixed-length token-ID arrays, as pure DataFrame functions (no I/O, nothing per item
on the driver).

Run order: per source, text -> normalised tokens per item (:func:`movie_tokens`,
:func:`tag_tokens`, :func:`table_tokens`) -> one ordered token list per item
(:func:`concat_item_tokens`) -> truncate to ``max_tokens`` -> vocabulary by document frequency
(:func:`token_document_frequency`, the only thing the caller collects: at most ``vocab_size``
rows) -> token IDs, padded (:func:`token_ids`) -> one row per prepared item
(:func:`content_table`).

Normalisation: lower case, every run of characters that is not a letter or digit is a separator
(so "Sci-Fi" -> "sci", "fi" as a word). Genres stay whole (``genre:sci_fi``) and a trailing
title year becomes ``year:1995`` and ``decade:1990s``, since those mean more as one token.
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkrec.columns import INDEX, ITEM_ID, ITEM_IDX, ORIGINAL_ID

TOKENS = "tokens"            # array<string>, in text order
TOKEN = "token"
TOKEN_ID = "token_id"
DOC_FREQ = "doc_freq"
NUM_TOKENS = "num_tokens"    # real (non-padding) tokens after truncation
HAS_TEXT = "has_text"
TRAINED = "trained"
PAD, UNKNOWN = "<pad>", "<unk>"
PAD_ID, UNKNOWN_ID = 0, 1
SPECIAL_TOKENS = (PAD, UNKNOWN)   # token ids 0 and 1; real tokens start at 2

_SEPARATORS = r"[^\p{L}\p{N}]+"
_TITLE_YEAR = r"\(\s*(\d{4})\s*\)\s*$"
NO_GENRES = "(no genres listed)"


def words(text: Column) -> Column:
    """Lower-cased words of ``text`` (array<string>; empty for null or blank text)."""
    cleaned = F.trim(F.regexp_replace(F.lower(F.coalesce(text, F.lit(""))), _SEPARATORS, " "))
    return F.filter(F.split(cleaned, " "), lambda w: w != "")


def movie_tokens(movies: DataFrame, title_year: bool = True, *, item_col: str = "movieId",
                 title_col: str = "title", genres_col: str = "genres") -> DataFrame:
    """Tokens of MovieLens ``movies.csv`` rows: title words, then year tokens, then genres.

    Returns
    -------
    DataFrame
        ``item_id`` string, ``tokens`` array<string> (``year:YYYY``, ``decade:YYY0s`` when
        ``title_year`` and the title ends in "(YYYY)"; ``genre:<name>`` per genre, none for
        "(no genres listed)").
    """
    title = F.col(title_col)
    year = F.regexp_extract(title, _TITLE_YEAR, 1)
    empty = F.array().cast("array<string>")
    year_tokens = empty
    if title_year:
        title = F.regexp_replace(title, _TITLE_YEAR, "")
        year_tokens = F.when(year != "", F.array(F.concat(F.lit("year:"), year),
                                                 F.concat(F.lit("decade:"), F.substring(year, 1, 3), F.lit("0s"))))
        year_tokens = F.coalesce(year_tokens, empty)
    genres = F.filter(F.split(F.coalesce(F.col(genres_col), F.lit("")), r"\|"),
                      lambda g: (F.trim(g) != "") & (F.lower(F.trim(g)) != NO_GENRES))
    genre_tokens = F.transform(genres, lambda g: F.concat(
        F.lit("genre:"), F.regexp_replace(F.trim(F.regexp_replace(F.lower(g), _SEPARATORS, " ")), " ", "_")))
    tokens = F.concat(words(title), year_tokens, genre_tokens)
    return movies.select(F.col(item_col).cast("string").alias(ITEM_ID), tokens.alias(TOKENS))


def tag_tokens(tags: DataFrame, *, item_col: str = "movieId", tag_col: str = "tag") -> DataFrame:
    """Tag words aggregated per item: each distinct word once, the most applied first.

    A word's weight is the number of tag rows (applications, by any user) that contain it; ties
    go alphabetically, so the order is deterministic.

    Returns
    -------
    DataFrame
        ``item_id`` string, ``tokens`` array<string> (distinct words); items without a usable tag
        are absent.
    """
    applied = (tags.select(F.col(item_col).cast("string").alias(ITEM_ID),
                           F.explode(F.array_distinct(words(F.col(tag_col)))).alias(TOKEN))
               .groupBy(ITEM_ID, TOKEN).agg(F.count(F.lit(1)).alias("_n")))
    ordered = F.array_sort(F.collect_list(F.struct((-F.col("_n")).alias("_neg"), F.col(TOKEN))))
    return applied.groupBy(ITEM_ID).agg(F.transform(ordered, lambda s: s[TOKEN]).alias(TOKENS))


def table_tokens(table: DataFrame, item_col: str, text_cols: list[str]) -> DataFrame:
    """Words of an item-features table: the text columns' words in the given column order.

    A text column may hold a string or an array of strings (joined with spaces). Several rows of
    one item are concatenated in an arbitrary but fixed order (sorted by their text).

    Returns
    -------
    DataFrame
        ``item_id`` string (rows with a null ID are dropped), ``tokens`` array<string>.
    """
    types = dict(table.dtypes)
    texts = [F.concat_ws(" ", F.col(f"`{c}`")) if types[c].startswith("array") else F.col(f"`{c}`").cast("string")
             for c in text_cols]
    per_row = F.concat(*[words(t) for t in texts]) if len(texts) > 1 else words(texts[0])
    rows = (table.select(F.col(f"`{item_col}`").cast("string").alias(ITEM_ID), per_row.alias(TOKENS))
            .where(F.col(ITEM_ID).isNotNull()))
    merged = F.array_sort(F.collect_list(F.struct(F.array_join(TOKENS, " ").alias("_key"), F.col(TOKENS))))
    return rows.groupBy(ITEM_ID).agg(F.flatten(F.transform(merged, lambda s: s[TOKENS])).alias(TOKENS))


def concat_item_tokens(*sources: DataFrame) -> DataFrame:
    """One token list per item: each source's tokens in argument order (items missing from a
    source contribute nothing from it).

    Returns
    -------
    DataFrame
        ``item_id`` string (unique), ``tokens`` array<string>.
    """
    renamed = [s.select(ITEM_ID, F.col(TOKENS).alias(f"_t{i}")) for i, s in enumerate(sources)]
    joined = reduce(lambda a, b: a.join(b, ITEM_ID, "full_outer"), renamed)
    empty = F.array().cast("array<string>")
    return joined.select(ITEM_ID, F.concat(*[F.coalesce(f"_t{i}", empty) for i in range(len(sources))]).alias(TOKENS))


def truncate(item_tokens: DataFrame, max_tokens: int) -> DataFrame:
    """``item_tokens`` with each list cut to its first ``max_tokens`` tokens."""
    return item_tokens.withColumn(TOKENS, F.slice(TOKENS, 1, max_tokens))


def token_document_frequency(item_tokens: DataFrame, vocab_size: int, min_count: int) -> DataFrame:
    """The kept vocabulary: the ``vocab_size`` tokens used by the most items, each by at least
    ``min_count`` items.

    Returns
    -------
    DataFrame
        ``token`` string, ``doc_freq`` long; at most ``vocab_size`` rows, ordered by descending
        ``doc_freq`` then token (the token-ID order: row i gets id i + 2).
    """
    per_item = item_tokens.select(F.explode(F.array_distinct(TOKENS)).alias(TOKEN))
    return (per_item.groupBy(TOKEN).agg(F.count(F.lit(1)).alias(DOC_FREQ))
            .where(F.col(DOC_FREQ) >= min_count)
            .orderBy(F.desc(DOC_FREQ), F.asc(TOKEN)).limit(vocab_size))


def token_ids(item_tokens: DataFrame, vocab: DataFrame, max_tokens: int) -> DataFrame:
    """Token IDs per item, padded with 0 to ``max_tokens``; tokens outside ``vocab`` become 1.

    Parameters
    ----------
    item_tokens
        ``item_id``, ``tokens`` (already truncated to ``max_tokens``).
    vocab
        ``token`` string, ``token_id`` int (>= 2): small, broadcast to every task.

    Returns
    -------
    DataFrame
        ``item_id`` string, ``tokens`` array<int> of length ``max_tokens``, ``num_tokens`` int
        (real tokens, before padding). Items with no tokens are kept (all padding).
    """
    exploded = item_tokens.select(ITEM_ID, F.posexplode(F.slice(TOKENS, 1, max_tokens)).alias("_pos", TOKEN))
    mapped = (exploded.join(F.broadcast(vocab.select(TOKEN, TOKEN_ID)), TOKEN, "left")
              .select(ITEM_ID, "_pos", F.coalesce(F.col(TOKEN_ID), F.lit(UNKNOWN_ID)).cast("int").alias(TOKEN_ID)))
    in_order = F.array_sort(F.collect_list(F.struct("_pos", TOKEN_ID)))
    ids = mapped.groupBy(ITEM_ID).agg(F.transform(in_order, lambda s: s[TOKEN_ID]).alias("_ids"))
    padded = F.concat(F.col("_ids"), F.array_repeat(F.lit(PAD_ID), F.lit(max_tokens) - F.size("_ids")))
    return (item_tokens.select(ITEM_ID).join(ids, ITEM_ID, "left")
            .withColumn("_ids", F.coalesce("_ids", F.array().cast("array<int>")))
            .select(ITEM_ID, padded.alias(TOKENS), F.size("_ids").alias(NUM_TOKENS)))


def content_table(item_vocab: DataFrame, item_token_ids: DataFrame, train: DataFrame, max_tokens: int) -> DataFrame:
    """One row per prepared item: its token IDs and whether it can be known by ID.

    Parameters
    ----------
    item_vocab
        The prepared ``item_vocab`` (``original_id``, ``index``).
    item_token_ids
        Output of :func:`token_ids`.
    train
        The prepared train split (``item_idx``): items with an ID embedding worth using.

    Returns
    -------
    DataFrame
        ``item_idx`` long (every vocabulary item exactly once), ``tokens`` array<int>
        (``max_tokens``, 0 = padding), ``num_tokens`` int, ``has_text`` boolean (at least one
        token), ``trained`` boolean (the item has train-split interactions).
    """
    trained = train.select(ITEM_IDX).distinct().withColumn(TRAINED, F.lit(True))
    empty = F.array_repeat(F.lit(PAD_ID), max_tokens)
    return (item_vocab.select(F.col(ORIGINAL_ID).alias(ITEM_ID), F.col(INDEX).alias(ITEM_IDX))
            .join(item_token_ids, ITEM_ID, "left")
            .join(trained, ITEM_IDX, "left")
            .select(ITEM_IDX, F.coalesce(TOKENS, empty).alias(TOKENS),
                    F.coalesce(NUM_TOKENS, F.lit(0)).alias(NUM_TOKENS),
                    (F.coalesce(NUM_TOKENS, F.lit(0)) > 0).alias(HAS_TEXT),
                    F.coalesce(TRAINED, F.lit(False)).alias(TRAINED)))
