"""Seeds and error bars for run tables: group runs, mean ± std per column, paired differences.

A *group* is a set of runs that share a setting. By default two runs share a setting when their
logged configuration (params, plus the identity tags ``policy``, ``at_loss``, ``data``,
``target``, ``threat``) is equal apart from the seed and the bookkeeping fields
(:data:`IGNORED_PARAMS`): a seed sweep of one method is one group. ``group_by`` names the
fields that define a group instead (``policy.name``, a tag name, or ``params.<k>`` /
``tags.<k>``).

A *paired* comparison of two groups matches their runs by seed and reports, per column, the
mean of the per-seed differences A − B, their standard deviation, the number of pairs and a
95 % t-interval of the mean difference: "LAS-AT beats PGD-AT" becomes a statement with an error
bar, and the seed-to-seed variation that both methods share cancels.

Pure functions over plain records: :mod:`runners.compare` reads the runs and prints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeGuard

#: params that never define a setting: the seed and bookkeeping.
IGNORED_PARAMS = frozenset({"seed", "run_name", "checkpoint_dir", "resume", "progress", "device",
                            "experiment", "data.root", "tracking.lease_s"})
#: prefixes of params that never define a setting: ``lease.<n>``, each writer of the run
#: (runners/run_lease.py).
IGNORED_PREFIXES = ("lease.",)
#: run tags that identify a setting (runners.cotrain sets them).
IDENTITY_TAGS = ("policy", "at_loss", "data", "target", "threat")


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (ddof = 1; None below 2 values) and count of a column."""

    mean: float | None
    std: float | None
    n: int


def column_stat(values: Sequence[float | None]) -> Stat:
    """Mean ± std over the finite values (missing or NaN values are left out)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Stat(None, None, 0)
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return Stat(mean, None, len(vals))
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return Stat(mean, math.sqrt(var), len(vals))


def t_quantile_975(dof: int) -> float:
    """Two-sided 95 % Student-t quantile for ``dof`` degrees of freedom (dof ≥ 1)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


@dataclass(frozen=True)
class Group:
    """Runs of one setting.

    Attributes:
        label: what distinguishes this group from the others (``policy.name=las_at``).
        key: the (field, value) pairs that define the group.
        members: indices of its runs in the input order.
        seeds: the seed of each member (same order; None where a run logged none).
    """

    label: str
    key: tuple[tuple[str, str], ...]
    members: tuple[int, ...]
    seeds: tuple[str | None, ...]


def setting_of(params: Mapping[str, str], tags: Mapping[str, str],
               group_by: Sequence[str] = ()) -> tuple[tuple[str, str], ...]:
    """The (field, value) pairs that define a run's setting (see the module docstring)."""
    if group_by:
        return tuple((k, lookup(k, params, tags)) for k in group_by)
    items = {k: v for k, v in params.items()
             if k not in IGNORED_PARAMS and not k.startswith(IGNORED_PREFIXES)}
    # identity tags stand in for the params that name the same thing (runs logged without)
    items.update({f"tags.{t}": tags[t] for t in IDENTITY_TAGS
                  if t in tags and f"{t}.name" not in params})
    return tuple(sorted(items.items()))


def lookup(field: str, params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    """A run's value of ``field``: ``tags.<k>``, ``params.<k>``, else a tag, else a param;
    "–" when the run has neither."""
    if field.startswith("tags."):
        return tags.get(field[5:], "–")
    if field.startswith("params."):
        return params.get(field[7:], "–")
    return tags.get(field, params.get(field, "–"))


def group_runs(settings: Sequence[tuple[tuple[str, str], ...]],
               seeds: Sequence[str | None]) -> list[Group]:
    """Group runs with equal settings (first-seen order); label each by what differs."""
    order: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, s in enumerate(settings):
        order.setdefault(s, []).append(i)
    keys = list(order)
    varying = _varying_fields(keys)
    groups = []
    for key in keys:
        shown = [(k, v) for k, v in key if k in varying] if varying else list(key[:1])
        label = ", ".join(f"{k.removeprefix('tags.')}={v}" for k, v in shown) or "all runs"
        members = tuple(order[key])
        groups.append(Group(label, key, members, tuple(seeds[i] for i in members)))
    return groups


def _varying_fields(keys: list[tuple[tuple[str, str], ...]]) -> set[str]:
    """Fields whose value differs between the settings (a field absent in one counts)."""
    if len(keys) < 2:
        return set()
    dicts = [dict(k) for k in keys]
    fields = set().union(*dicts)
    return {f for f in fields if len({d.get(f) for d in dicts}) > 1}


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed differences A − B of one column.

    Attributes:
        mean, std: of the differences (std None below 2 pairs).
        n: pairs with both values.
        ci95: half-width of the 95 % t-interval of the mean (None below 2 pairs).
    """

    mean: float | None
    std: float | None
    n: int
    ci95: float | None


def paired_difference(a: Mapping[str, float | None], b: Mapping[str, float | None]
                      ) -> PairedDifference:
    """Differences over the seeds both groups have: {seed: value} × 2 -> statistics."""
    diffs = [va - vb for va, vb in ((a[s], b[s]) for s in a if s in b)
             if _finite(va) and _finite(vb)]
    stat = column_stat(diffs)
    ci = None if stat.std is None else t_quantile_975(stat.n - 1) * stat.std / math.sqrt(stat.n)
    return PairedDifference(stat.mean, stat.std, stat.n, ci)


def _finite(v: float | None) -> TypeGuard[float]:
    return v is not None and math.isfinite(v)


def matches(group: Group, token: str) -> bool:
    """Whether a user's token names the group: its label, or ``&``-joined parts each of which
    is a value or a ``field=value`` of the group's setting (``pgd_at&epochs=30``)."""
    if token == group.label:
        return True
    items = {v for _, v in group.key} | {f"{k.removeprefix('tags.')}={v}" for k, v in group.key}
    return all(part in items for part in token.split("&"))


def find_group(groups: Sequence[Group], token: str) -> Group:
    """The one group a token names (:func:`matches`).

    Raises:
        ValueError: no group or several match (the message lists the labels).
    """
    hits = [g for g in groups if matches(g, token)]
    if len(hits) == 1:
        return hits[0]
    labels = "; ".join(g.label for g in groups)
    what = "no group" if not hits else f"{len(hits)} groups"
    raise ValueError(f"paired: {what} match {token!r} (join parts with '&', e.g. "
                     f"'pgd_at&epochs=30', quoted on the command line); groups: {labels}")


def per_seed(values: Sequence[float | None], group: Group) -> dict[str, float | None]:
    """{seed: value} of a group's members for a column (runs without a seed are left out;
    runs that share a seed are averaged)."""
    by_seed: dict[str, list[float]] = {}
    for i, s in zip(group.members, group.seeds):
        if s is not None and _finite(values[i]):
            by_seed.setdefault(s, []).append(values[i])  # type: ignore[arg-type]
    return {s: sum(v) / len(v) for s, v in by_seed.items()}


def fmt_stat(stat: Stat, scale: float, digits: int, group_n: int) -> str:
    """``mean ± std`` (``mean`` alone for one value), with ``(n=k)`` when values are missing."""
    if stat.mean is None:
        return "–"
    text = f"{scale * stat.mean:.{digits}f}"
    if stat.std is not None:
        text += f" ± {scale * stat.std:.{digits}f}"
    if stat.n < group_n:
        text += f" (n={stat.n})"
    return text


def fmt_difference(d: PairedDifference, scale: float, digits: int) -> str:
    """``+mean ± std [95 % CI ±h]`` of a paired difference."""
    if d.mean is None:
        return "–"
    text = f"{scale * d.mean:+.{digits}f}"
    if d.std is not None and d.ci95 is not None:
        text += f" ± {scale * d.std:.{digits}f} [±{scale * d.ci95:.{digits}f}]"
    return text

