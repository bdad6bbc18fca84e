"""The history-based user tower as a module: causality, padding, serving = training, no user table."""
import pytest
import torch

from sparkrec.models.block_scoring import DotProductScorer, Histories, make_scorer, top_k_items
from sparkrec.models.sequence import SequenceConfig, SequenceModel, warm_started


def config(**overrides):
    base = dict(kind="sequence", num_items=30, factors=8, max_len=6, encoder="attention", blocks=2, heads=2,
                dropout=0.0, implicit=True, rating_min=1.0, rating_max=5.0, use_bias=True, dense_items=False)
    return SequenceConfig(**{**base, **overrides})


@pytest.mark.parametrize("encoder", ["attention", "mean"])
def test_a_state_depends_only_on_the_items_before_it(encoder):
    torch.manual_seed(0)
    model = SequenceModel(config(encoder=encoder)).eval()
    items = torch.tensor([[-1, -1, 3, 4, 5, 6]])
    changed = items.clone()
    changed[0, 5] = 9   # only the last item differs
    with torch.no_grad():
        a, b = model.states(items), model.states(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5], b[:, 5])


def test_padding_and_out_of_vocabulary_items_change_nothing():
    torch.manual_seed(0)
    model = SequenceModel(config()).eval()
    with torch.no_grad():
        plain, _ = model.user_vectors(torch.tensor([[-1, -1, -1, 3, 4, 5]]))
        # An item added to the vocabulary after training (index >= num_items) is padding to the model.
        unknown, _ = model.user_vectors(torch.tensor([[-1, -1, 99, 3, 4, 5]]))
    torch.testing.assert_close(plain, unknown)


def test_the_model_has_no_per_user_parameters():
    small, large = SequenceModel(config()), SequenceModel(config())
    assert sum(p.numel() for p in small.parameters()) == sum(p.numel() for p in large.parameters())
    assert config().num_users is None


def test_explicit_leave_one_out_never_sees_the_label_it_predicts():
    torch.manual_seed(0)
    model = SequenceModel(config(implicit=False, encoder="mean")).eval()
    items = torch.tensor([[-1, 2, 3, 4]])
    labels = torch.tensor([[0.0, 4.0, 1.0, 5.0]])
    other = labels.clone()
    other[0, 3] = 1.0   # the rating of item 4 changes
    with torch.no_grad():
        a, b = model.leave_one_out(items, labels), model.leave_one_out(items, other)
    assert a[0, 3] == b[0, 3]                      # its own prediction is unaffected
    assert not torch.allclose(a[0, 1:3], b[0, 1:3])  # the others' predictions use it


def test_explicit_serving_equals_the_pooled_prediction_over_the_whole_history():
    torch.manual_seed(0)
    model = SequenceModel(config(implicit=False, encoder="mean")).eval()
    items, labels = torch.tensor([[-1, 2, 3, 4]]), torch.tensor([[0.0, 4.0, 1.0, 5.0]])
    with torch.no_grad():
        vectors, constants = model.user_vectors(items, labels)
        served = model.scores(vectors, constants, torch.tensor([[7]]))
        # Leave-one-out with item 7 added as a fourth history item predicts it from the other three.
        loo = model.leave_one_out(torch.tensor([[2, 3, 4, 7]]), torch.tensor([[4.0, 1.0, 5.0, 3.0]]))
    assert served.item() == pytest.approx(loo[0, 3].item(), rel=1e-5)


def test_top_k_from_histories_matches_brute_force():
    torch.manual_seed(1)
    model = SequenceModel(config()).eval()
    histories = Histories(torch.tensor([[-1, -1, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]))
    scorer = make_scorer(model, 30)
    assert isinstance(scorer, DotProductScorer)
    scores, items, counts = top_k_items(scorer, histories, 5, chunk=7, seen_rows=torch.tensor([0, 0]),
                                        seen_items=torch.tensor([1, 2]))
    with torch.no_grad():
        vectors, constants = model.user_vectors(histories.items)
        table, bias = model.item_table()
        full = vectors @ table.T + bias + constants[:, None]
    full[0, [1, 2]] = float("-inf")
    expected = full.topk(5, dim=1)
    torch.testing.assert_close(items, expected.indices)
    torch.testing.assert_close(scores, expected.values)


def test_warm_start_keeps_known_items_and_adds_new_ones():
    torch.manual_seed(0)
    old = SequenceModel(config())
    new = warm_started(config(num_items=35), old)
    torch.testing.assert_close(new.item_embedding.weight[:30], old.item_embedding.weight[:30])
    assert torch.all(new.item_embedding.weight[35] == 0)      # the padding row moved to the new end
    torch.testing.assert_close(new.positions.weight, old.positions.weight)
