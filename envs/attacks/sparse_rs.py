"""Sparse-RS (Croce, Andriushchenko, Singh, Flammarion & Hein, AAAI 2022), L0 variant: a
score-based black-box random search. It only *queries logits*: the model is called through
``predict`` under ``torch.no_grad()``, never differentiated.

Per sample (all samples advance together, as tensors):

* start: k random pixels, each set to a random corner of the colour cube ({0, 1} per channel);
* each iteration proposes a candidate that moves e = max(⌊p(t)·k⌋, 1) of the perturbed pixels
  back to their clean value and perturbs e new pixels with a random corner colour different
  from their current one; the candidate is kept when it raises the loss (CE, as in
  Sparse-AutoAttack) or is misclassified;
* p(t) follows the reference schedule from ``p_init`` = 0.8 (halved at 50 of 10 000 queries,
  then /4, /5, /6, /8, /10, /12, /15, /20 at 200, 500, 1000, 2000, 4000, 6000, 8000), rescaled
  to the query budget;
* a sample stops once misclassified; it never uses more than ``queries`` queries.

Departures from the reference (CityU-MLO/sPGD ``autoattack/rs_attacks.py``, the Sparse-RS
authors' code), each on purpose: the e positions are drawn per sample (the reference draws one
set of positions for the whole batch and a per-image Python loop), the new colour always
differs from the current one (the reference enforces it only when e = 1), and with k ≥ H·W
(no unperturbed pixel left) the moved pixels are re-coloured instead of restored.
Finished samples are dropped from the batch every ``compact_every`` iterations (one host sync
each), not every iteration.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from learned_at.envs.attack_loss import margin_loss
from learned_at.envs.geometry.base import Scalar
from learned_at.envs.geometry.l0 import budget_pixels, topk_mask

#: (fraction of 10 000 queries passed, divisor of p_init) of the reference schedule.
_SCHEDULE = ((50, 2), (200, 4), (500, 5), (1000, 6), (2000, 8), (4000, 10), (6000, 12),
             (8000, 15))


def fraction_of_pixels(it: int, queries: int, p_init: float) -> float:
    """The reference p(t): the fraction of the budget that one proposal moves."""
    t = int(it / queries * 10_000)
    if t <= 0:
        return p_init
    for bound, div in _SCHEDULE:
        if t <= bound:
            return p_init / div
    return p_init / 20


def _positions(selectable: torch.Tensor, count: torch.Tensor, generator: torch.Generator | None
               ) -> torch.Tensor:
    """``count`` uniformly chosen True entries per row. (N, P) bool, (N,) -> (N, P) bool."""
    keys = torch.rand(selectable.shape, generator=generator, device=selectable.device)
    return topk_mask(keys + 2.0 * selectable, count) & selectable


def _new_colours(current: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform random corner of {0, 1}^C per pixel, different from the current colour when
    that is a corner itself. (N, C, P) -> (N, C, P)."""
    c = current.shape[1]
    bits = (2 ** torch.arange(c, device=current.device)).view(1, c, 1)
    is_corner = ((current == 0) | (current == 1)).all(1)  # (N, P)
    old = (current.round().long() * bits).sum(1)
    choices = 2 ** c - is_corner.long()
    u = (torch.rand(old.shape, generator=generator, device=current.device) * choices).long()
    u = torch.minimum(u, choices - 1)
    code = u + (is_corner & (u >= old)).long()
    return ((code.unsqueeze(1) // bits) % 2).to(current.dtype)


def _scores(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(margin z_y − max_{j≠y} z_j, loss −CE to be minimised), each (N,)."""
    logits = predict(x)
    return -margin_loss(logits, y), -F.cross_entropy(logits, y, reduction="none")


@torch.no_grad()
def sparse_rs(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              y: torch.Tensor, k: Scalar, *, queries: int = 10_000, p_init: float = 0.8,
              generator: torch.Generator | None = None, compact_every: int = 10
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted L0 Sparse-RS (module docstring).

    Args:
        predict: logits of a batch, (n, C, H, W) -> (n, K); the only access to the model.
        x: (N, C, H, W) in [0, 1]; y: (N,) int64; k: float or (N,) pixel budgets.
        queries: the most logit queries per sample.
        p_init: initial fraction of the budget moved per proposal.
        generator: every random draw.
        compact_every: iterations between drops of finished samples.

    Returns:
        x_adv (N, C, H, W) with at most k changed pixels, and the queries used (N,) int64.
    """
    n, c, h, w = x.shape
    pixels = h * w
    kk = budget_pixels(k, x).clamp(max=pixels)
    flat = x.reshape(n, c, pixels)
    perturbed = topk_mask(torch.rand((n, pixels), generator=generator, device=x.device), kk)
    corners = _new_colours(torch.full_like(flat, 0.5), generator)
    best = torch.where(perturbed.unsqueeze(1), corners, flat)
    margin, loss = _scores(predict, best.view_as(x), y)
    used = torch.ones(n, dtype=torch.long, device=x.device)
    live = torch.arange(n, device=x.device)
    for it in range(1, max(queries, 1)):
        if (it - 1) % compact_every == 0:
            live = live[(margin.index_select(0, live) > 0) & (kk.index_select(0, live) > 0)]
            if live.numel() == 0:  # host sync (above): every sample is fooled or has k = 0
                break
        xs, ks, ys = flat.index_select(0, live), kk.index_select(0, live), y.index_select(0, live)
        cur, on = best.index_select(0, live), perturbed.index_select(0, live)
        frac = fraction_of_pixels(it, queries, p_init)
        e = torch.clamp((frac * ks).floor().long(), min=1)
        full = ks >= pixels  # no unperturbed pixel to move to: re-colour instead
        out = _positions(on, torch.minimum(e, ks), generator)
        into = torch.where(full.view(-1, 1), out,
                           _positions(~on, torch.minimum(e, pixels - ks), generator))
        cand = torch.where((out & ~full.view(-1, 1)).unsqueeze(1), xs, cur)
        cand = torch.where(into.unsqueeze(1), _new_colours(cand, generator), cand)
        m_new, l_new = _scores(predict, cand.view(-1, c, h, w), ys)
        still = margin.index_select(0, live) > 0
        better = l_new < loss.index_select(0, live)
        accept = still & (better | (m_new < 0))
        used.index_add_(0, live, still.long())
        on_new = torch.where(full.view(-1, 1), on, (on & ~out) | into)
        best.index_copy_(0, live, torch.where(accept.view(-1, 1, 1), cand, cur))
        perturbed.index_copy_(0, live, torch.where(accept.view(-1, 1), on_new, on))
        margin.index_copy_(0, live, torch.where(accept, m_new, margin.index_select(0, live)))
        loss.index_copy_(0, live, torch.where(still & better, l_new, loss.index_select(0, live)))
    return best.view_as(x), used
