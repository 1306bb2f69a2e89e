"""The built-in evaluation attacks of each built-in geometry (imported by the registry the first
time it is read, :mod:`envs.attacks.registry`).

========  ==============================================================================
threat    attacks (ensemble †, black-box check ‡)
========  ==============================================================================
linf, l2  clean, fgsm, pgd<K>[x<R>], cw<K>[x<R>], autoattack †, autoattack_apgd, square[<Q>] ‡,
          transfer_<fgsm|pgd..|cw..>
l0        clean, fgsm, pgd<K>[x<R>] (sPGD steps of the geometry), spgd_p[<K>], spgd_u[<K>],
          sparse_rs[<Q>] ‡, sparse_autoattack[<K>x<Q>] †, transfer_<fgsm|pgd..>
========  ==============================================================================

AutoAttack and Square use the geometry's :attr:`~envs.geometry.base.Geometry.autoattack_norm`
(``Linf``, ``L2``); L0 has none, so neither is registered for it.
"""

from learned_at.envs.attacks.autoattack import AutoAttack
from learned_at.envs.attacks.autoattack_apgd import AutoAttackApgd
from learned_at.envs.attacks.base import Clean
from learned_at.envs.attacks.gradient import CW, FGSM, PGD
from learned_at.envs.attacks.registry import register_eval_attack
from learned_at.envs.attacks.sparse import (SparseAutoAttack, SparsePGDProjected,
                                            SparsePGDUnprojected, SparseRS)
from learned_at.envs.attacks.square import Square
from learned_at.envs.attacks.transfer import Transfer

for _threat in ("linf", "l2"):
    register_eval_attack(_threat, Clean)
    register_eval_attack(_threat, FGSM)
    register_eval_attack(_threat, PGD)
    register_eval_attack(_threat, CW)
    register_eval_attack(_threat, AutoAttack, ensemble=True)
    register_eval_attack(_threat, AutoAttackApgd)
    register_eval_attack(_threat, Square, blackbox=True)
    register_eval_attack(_threat, Transfer)

register_eval_attack("l0", Clean)
register_eval_attack("l0", FGSM)
register_eval_attack("l0", PGD)
register_eval_attack("l0", SparsePGDProjected)
register_eval_attack("l0", SparsePGDUnprojected)
register_eval_attack("l0", SparseRS, blackbox=True)
register_eval_attack("l0", SparseAutoAttack, ensemble=True)
register_eval_attack("l0", Transfer)
