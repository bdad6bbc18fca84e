"""Attributions of one (user, item) score to the model's inputs, with Captum. Pure torch, no I/O.

Two inputs can be explained, whichever the model has:

- the user's history (models with ``bag_logits(bag)``, e.g. Mult-VAE): one value per history item,
  against the empty bag;
- the item's content tokens (models with ``forward_with_tokens`` and ``content.token_embedding``,
  e.g. the hybrid NeuMF): one value per distinct token, against an all-padding text.

Both methods satisfy completeness: the values sum to ``score - baseline_score``. Integrated
Gradients up to the integral's approximation error (the convergence delta, reported as ``delta``);
Shapley value sampling exactly (each sampled permutation's marginal contributions telescope to the
difference), its values being seeded estimates of the Shapley values. Captum's KernelSHAP is not
offered: it fits its regression with scikit-learn, which the pinned stack does not include.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerIntegratedGradients, ShapleyValueSampling
from torch import Tensor, nn

METHODS = ("ig", "shapley_sampling")
PADDING = 0  # token id 0 pads the content texts
PER_EVAL = 64  # ablated inputs per forward call of Shapley value sampling


@dataclass(frozen=True)
class Attribution:
    """What pushed one score up or down.

    ``features`` are history item indices or token ids (ascending), ``values`` their attributions
    (same order). ``score`` is the model's raw score of the pair, ``baseline_score`` its score with
    the explained input removed (empty history, all-padding text), and ``delta`` is
    ``sum(values) - (score - baseline_score)``: about 0 (IG: the integral's approximation error).
    """

    features: list[int]
    values: list[float]
    score: float
    baseline_score: float
    delta: float


def has_history_input(model: nn.Module) -> bool:
    return callable(getattr(model, "bag_logits", None))


def has_token_input(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_with_tokens", None)) and hasattr(model, "content_tokens")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"attribution method {method!r} is not one of {METHODS}; set explain.method")


def _shapley_sampling(forward, inputs: Tensor, baselines: Tensor, feature_mask: Tensor | None,
                      n_samples: int, seed: int) -> Tensor:
    # Captum draws the permutations from torch's global generator: seed a forked one so the result
    # depends on the seed only, and the caller's random state is left as it was.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ShapleyValueSampling(forward).attribute(inputs, baselines=baselines, feature_mask=feature_mask,
                                                       n_samples=n_samples, perturbations_per_eval=PER_EVAL)


def history_attributions(model: nn.Module, history: Tensor, item: int, weights: Tensor | None = None, *,
                         method: str = "ig", n_steps: int = 64, n_samples: int = 25, seed: int = 0) -> Attribution:
    """Attribute the logit of ``item`` given the user's history bag to each history item.

    Parameters
    ----------
    model : nn.Module
        In eval mode, with ``bag_logits(bag: float [B, num_items]) -> logits [B, num_items]``;
        ``ig`` also needs Mult-VAE's layout (see ``_normalized_bag_gradients``).
    history : Tensor
        Long [n]: the user's distinct history item indices (n >= 1).
    weights : Tensor, optional
        Float [n]: each history item's value in the bag, as in training (the labels); None = 1.
    item : int
        Index of the recommended item whose logit is explained.
    method, n_steps, n_samples, seed
        ``ig`` (Integrated Gradients, ``n_steps``) or ``shapley_sampling`` (``n_samples``
        permutations drawn with ``seed``).

    Returns
    -------
    Attribution
        ``features`` = history item indices; baseline = the empty bag.

    Notes
    -----
    Shapley sampling removes history items from the bag. IG cannot integrate along the raw bag:
    Mult-VAE L2-normalises it first, so every scaled bag ``a * x`` (a > 0) scores like ``x`` and
    the whole change happens in the jump from the empty bag, which no path integral sees (the
    values would sum to 0). IG therefore integrates along the normalised bag, from 0 (which is
    what the empty bag normalises to) to ``x / |x|``; completeness holds in that space.
    """
    _check_method(method)
    history, order = torch.sort(history.long())
    present = (torch.ones(len(history)) if weights is None else weights.float()[order]).unsqueeze(0)
    if history.numel() == 0 or bool((history[1:] == history[:-1]).any()):
        raise ValueError(f"the history must hold distinct items, at least one; got {history.tolist()[:20]}")
    onehot = torch.zeros(history.numel(), _num_items(model))
    onehot[torch.arange(history.numel()), history] = 1.0

    def logit(weights: Tensor) -> Tensor:
        return model.bag_logits(weights @ onehot)[:, item]

    empty = torch.zeros_like(present)
    if method == "ig":
        values = _normalized_bag_ig(model, logit, present, history, n_steps)
    else:
        values = _shapley_sampling(logit, present, empty, None, n_samples, seed).detach()[0]
    with torch.no_grad():
        score, base = float(logit(present).item()), float(logit(empty).item())
    return Attribution([int(i) for i in history], [float(v) for v in values], score, base,
                       float(values.sum().item()) - (score - base))


def _normalized_bag_ig(model: nn.Module, logit, present: Tensor, history: Tensor, n_steps: int) -> Tensor:
    """IG of ``logit`` along the L2-normalised bag, one value per history item, [n].

    Mult-VAE's first layer is affine in the normalised bag z: ``h = z @ encoder_input.weight + b``,
    and ``encoder`` takes h. Captum integrates the gradient with respect to h along the path
    (LayerIntegratedGradients on ``encoder``'s input, not multiplied by the input difference); by
    the chain rule item i's attribution is ``z_i * (encoder_input.weight[i] . integrated gradient)``,
    and the values sum to the IG of h, i.e. to ``score - baseline_score`` up to the integral's error.
    """
    lig = LayerIntegratedGradients(logit, model.encoder, multiply_by_inputs=False)
    grads = lig.attribute(present, baselines=torch.zeros_like(present), n_steps=n_steps,
                          attribute_to_layer_input=True)
    grads = (grads[0] if isinstance(grads, tuple) else grads).detach()[0]  # [width]
    normalized = F.normalize(present, dim=1)[0]  # as bag_logits normalises the bag
    with torch.no_grad():
        return normalized * (model.encoder_input.weight[history] @ grads)


def _num_items(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "num_items"):
        raise ValueError(f"{type(model).__name__} has no cfg.num_items: cannot size the history bag")
    return int(cfg.num_items)


def token_attributions(model: nn.Module, user: int, item: int, *, method: str = "ig", n_steps: int = 64,
                       n_samples: int = 25, seed: int = 0) -> Attribution:
    """Attribute the raw score of (``user``, ``item``) to each distinct content token of the item.

    Parameters
    ----------
    model : nn.Module
        In eval mode, with buffer ``content_tokens`` (long [num_items, max_tokens], 0 = padding),
        ``forward_with_tokens(user_idx, item_idx, tokens)`` and, for ``ig``, the text tower
        ``content`` with ``token_embedding`` and ``from_embeddings(embedded, present)`` (the hybrid
        NeuMF's ``TextCNN``).
    user, item : int
        The pair's indices.
    method, n_steps, n_samples, seed
        As in ``history_attributions``.

    Returns
    -------
    Attribution
        ``features`` = token ids (padding excluded; empty for an item without text); baseline =
        the item's text with every token replaced by padding.

    Notes
    -----
    IG integrates over a weight per token position that scales both its embedding and its
    non-padding mask from 0 (the position is padding) to 1, and sums a token's positions. Scaling
    the embeddings alone (LayerIntegratedGradients on ``token_embedding`` against padding) is not
    complete here: the text CNN keeps the real tokens' mask along that path, so its start (zero
    embeddings over real positions, whose convolutions still emit their biases) is not the
    all-padding text (a zero content vector), and the attributions missed most of the difference
    in tests. Shapley sampling replaces every occurrence of a token by padding together, so a
    repeated token gets one Shapley value.
    """
    _check_method(method)
    tokens = model.content_tokens[item].long().unsqueeze(0)  # [1, L]
    padding = torch.full_like(tokens, PADDING)
    users, items = torch.tensor([user]), torch.tensor([item])

    def score_of(tok: Tensor, u: Tensor, i: Tensor) -> Tensor:
        # Shapley sampling ablates a float copy of the ids; the values stay whole ids.
        return model.forward_with_tokens(u.expand(tok.shape[0]), i.expand(tok.shape[0]), tok.round().long())

    with torch.no_grad():
        score = float(score_of(tokens, users, items).item())
        base = float(score_of(padding, users, items).item())
    ids = torch.unique(tokens[tokens != PADDING])
    if ids.numel() == 0:
        return Attribution([], [], score, base, -(score - base))
    if method == "ig":
        per_position = _token_weight_ig(model, users, items, tokens, n_steps)
        values = [float(per_position[tokens[0] == t].sum().item()) for t in ids]
        return Attribution([int(t) for t in ids], values, score, base, sum(values) - (score - base))
    # One feature per distinct token (all its positions), padding positions in a group of their
    # own whose removal changes nothing.
    group = torch.searchsorted(ids, tokens.clamp(min=0))
    group = torch.where(tokens == PADDING, torch.full_like(group, ids.numel()), group)
    per_position = _shapley_sampling(lambda tok: score_of(tok, users, items), tokens.float(), padding.float(),
                                group, n_samples, seed)[0]
    values = [float(per_position[tokens[0] == t][0].item()) for t in ids]
    return Attribution([int(t) for t in ids], values, score, base, sum(values) - (score - base))


def _token_weight_ig(model: nn.Module, users: Tensor, items: Tensor, tokens: Tensor, n_steps: int) -> Tensor:
    """IG of the pair's score over per-position token weights w in [0, 1], [L] (see
    ``token_attributions``): the text tower's output is replaced, through a forward hook, by
    ``content.from_embeddings(w * embeddings, w * mask)``, which is the real content vector at
    w = 1 and the all-padding one (zero) at w = 0."""
    content = model.content
    embedded = content.token_embedding(tokens).detach()  # [1, L, dim]
    present = (tokens != PADDING).float()                # [1, L]

    def score_of(weights: Tensor) -> Tensor:
        n = weights.shape[0]
        vectors = content.from_embeddings(embedded * weights[:, :, None], present * weights)
        handle = content.register_forward_hook(lambda module, args, output: vectors)
        try:
            return model.forward_with_tokens(users.expand(n), items.expand(n), tokens.expand(n, -1))
        finally:
            handle.remove()

    weights = IntegratedGradients(score_of).attribute(present, baselines=torch.zeros_like(present), n_steps=n_steps)
    return weights.detach()[0]
