"""Evaluation attacks: a contract test over every registered attack of every built-in geometry,
and the registry's rules (names per geometry, the checks' roles, refused registrations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from learned_at.envs.attacks.autoattack import make_autoattack
from learned_at.envs.attacks.base import AttackContext, AttackRole, BatchAttack, Clean
from learned_at.envs.attacks.gradient import PGD
from learned_at.envs.attacks.registry import (EvalAttackRegistry, geometry_attacks,
                                              parse_eval_attack)
from learned_at.envs.geometry import make_geometry

pytestmark = pytest.mark.usefixtures("one_thread")

#: one name per registered attack class of each built-in geometry, with its budget
EXAMPLES = {
    "linf": (0.1, ["clean", "fgsm", "pgd2x2", "cw2", "autoattack", "autoattack_apgd", "square10",
                   "transfer_pgd2"]),
    "l2": (0.5, ["clean", "fgsm", "pgd2", "cw2x2", "autoattack", "autoattack_apgd", "square10",
                 "transfer_fgsm"]),
    "l0": (2, ["clean", "fgsm", "pgd2", "spgd_p3", "spgd_u3", "sparse_rs10",
               "sparse_autoattack2x10", "transfer_pgd2"]),
}


def fast_autoattack(model, geometry, eps, seed, device):
    """The standard adversary with a handful of iterations: for test speed only."""
    aa = make_autoattack(model, geometry, eps, seed, device)
    for apgd in (aa.apgd, aa.apgd_targeted):
        apgd.n_iter = apgd.n_iter_orig = 2
        apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 1, 1, 1
    aa.apgd_targeted.n_target_classes = 1
    aa.fab.n_iter, aa.fab.n_target_classes = 2, 1
    aa.square.n_queries = 5
    return aa


def test_examples_cover_every_registered_attack():
    for threat, (_, names) in EXAMPLES.items():
        table = geometry_attacks(threat)
        assert {type(parse_eval_attack(n, threat)) for n in names} == set(table.classes), threat
        assert AttackRole.ENSEMBLE in table.ensemble.roles
        assert AttackRole.BLACKBOX in table.blackbox.roles
        assert len(table.with_role(AttackRole.CLEAN)) == 1


@pytest.mark.parametrize("threat", sorted(EXAMPLES))
def test_contract(threat, tiny_net, batch):
    """Every attack: its name round-trips, its variants parse back to what they are, and it
    returns an (N,) bool mask on the inputs' device (pyautoattack's only when installed)."""
    x, y = batch
    eps, names = EXAMPLES[threat]
    geometry = make_geometry(threat)
    context = AttackContext(batch_size=8, generator=torch.Generator().manual_seed(0),
                            surrogate=tiny_net, make_adversary=fast_autoattack)
    for name in names:
        attack = parse_eval_attack(name, threat)
        assert attack.name == name and attack.spelling and isinstance(attack.roles, AttackRole)
        assert parse_eval_attack(f" {name} ", threat) == attack
        stronger = attack.stronger()
        if stronger is not None:
            assert parse_eval_attack(stronger.name, threat) == stronger
            assert attack.not_stronger_than(stronger) and not stronger.not_stronger_than(attack)
        if attack.strength() is None:
            assert not attack.not_stronger_than(attack)
        try:
            type(attack).check_available()
        except ImportError:
            continue
        outcome = attack.robust_mask(tiny_net, x, y, geometry, eps, context)
        assert outcome.robust.shape == y.shape and outcome.robust.dtype == torch.bool, name
        for stage in outcome.stages.values():
            assert 0.0 <= stage["acc"] <= 1.0
    query_attack = geometry_attacks(threat).blackbox
    assert parse_eval_attack(query_attack.with_queries(7).name, threat).strength() == (7,)


def test_unknown_and_inapplicable_names_list_the_geometry_spellings():
    with pytest.raises(ValueError, match=r"unknown attack 'pgd' for threat=linf; valid: clean, "
                                         r"fgsm, pgd<K>\[x<R>\], cw<K>\[x<R>\], autoattack"):
        parse_eval_attack("pgd", "linf")
    with pytest.raises(ValueError, match=r"does not apply to threat=l0; its attacks: .*spgd_p"):
        parse_eval_attack("square", "l0")
    with pytest.raises(ValueError, match=r"does not apply to threat=l0"):
        parse_eval_attack("transfer_cw5", "l0")  # transfer applies, cw does not
    with pytest.raises(ValueError, match=r"no evaluation attacks are registered for "
                                         r"threat=nowhere"):
        parse_eval_attack("pgd5", "nowhere")


@dataclass(frozen=True)
class _Twin(BatchAttack):
    """Parses ``pgd<K>`` too: an ambiguous spelling."""

    name: str
    spelling: ClassVar[str] = "pgd<K>"
    roles: ClassVar[AttackRole] = AttackRole.WHITEBOX

    @classmethod
    def parse(cls, name: str) -> _Twin | None:
        return cls(name) if name.startswith("pgd") else None


def test_registrations_are_checked():
    registry = EvalAttackRegistry()
    registry.register("toy", Clean)
    registry.register("toy", Clean)  # twice: a no-op
    assert registry.attacks("toy").classes == (Clean,)
    with pytest.raises(ValueError, match="not an ensemble attack"):
        registry.register("toy", PGD, ensemble=True)
    with pytest.raises(ValueError, match="not a query-based black-box attack"):
        registry.register("toy", PGD, blackbox=True)
    registry.register("toy", PGD)
    registry.register("toy", _Twin)
    with pytest.raises(ValueError, match="ambiguous: PGD, _Twin"):
        registry.parse("pgd3", "toy")
    registry.unregister("toy", _Twin)
    assert registry.parse("pgd3", "toy") == PGD("pgd3", 3)
    square = geometry_attacks("linf").blackbox
    registry.register("toy", square, blackbox=True)
    with pytest.raises(ValueError, match="already has the black-box attack"):
        registry.register("toy", geometry_attacks("l0").blackbox, blackbox=True)
    registry.unregister("toy", square)
    assert registry.attacks("toy").blackbox is None
