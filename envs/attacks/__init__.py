"""Evaluation attacks: one class per attack, registered per threat geometry.

* :mod:`envs.attacks.base`: the interface (:class:`EvalAttack`, :class:`BatchAttack`), its
  :class:`AttackContext` and :class:`AttackOutcome`, the checks' :class:`AttackRole`, ``clean``;
* :mod:`envs.attacks.registry`: which attacks apply to which geometry, and parsing names;
* :mod:`envs.attacks.catalog`: the built-in registrations (the table of attacks per geometry);
* :mod:`envs.attacks.gradient` (``fgsm``, ``pgd<K>[x<R>]``, ``cw<K>[x<R>]``),
  :mod:`envs.attacks.transfer` (``transfer_<attack>``), :mod:`envs.attacks.autoattack`
  (``autoattack``, pyautoattack), :mod:`envs.attacks.square` (``square[<Q>]``),
  :mod:`envs.attacks.sparse` (L0: ``spgd_p``, ``spgd_u``, ``sparse_rs``,
  ``sparse_autoattack``) over the sparse attack maths in :mod:`envs.attacks.spgd`,
  :mod:`envs.attacks.sparse_rs` and :mod:`envs.attacks.saa`.
"""

from learned_at.envs.attacks.base import (AttackContext, AttackOutcome, AttackRole, BatchAttack,
                                          EvalAttack)
from learned_at.envs.attacks.registry import (geometry_attacks, parse_eval_attack,
                                              register_eval_attack, unregister_eval_attack)

__all__ = ["AttackContext", "AttackOutcome", "AttackRole", "BatchAttack", "EvalAttack",
           "geometry_attacks", "parse_eval_attack", "register_eval_attack",
           "unregister_eval_attack"]
