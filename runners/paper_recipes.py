"""The papers' settings as recipes (``recipe=<name>``), with the references' schedules.

The runner's piecewise milestones are fractions of training; these write the references'
decay epochs as such fractions (99/110 ...), so ``optim.schedule=piecewise`` decays at exactly
those epochs (runners/schedule.py). Sources: docs/references.md §1.7, §2.3, §3.3, §4.3, §8. Every
recipe is a plain override list (runners/recipes.py turns each into an option of the ``recipe``
config group); every override on the command line wins over it, e.g.
``recipe=las_pgd_at_cifar10 target=preact_resnet18 epochs=30``.

Departures shared by all: the model normalises inside (if at all) and the data augmentation is
the runner's random crop (pad 4) + flip. Dynamic AT's reference trains a Keras WRN-32-10 with
rotation/shift augmentation and an L2 kernel regulariser; here WRN-34-10 with the paper's
weight decay 1e-4 (its "weight decay" is Keras' per-iteration lr decay in the code, §4.3).

Sparse (L0) recipes, the setting of the sPGD / Fast-LS-ℓ0 reference (docs/references.md §6.3, §8):
CIFAR-10, PreActResNet-18, 100 epochs, batch 128, SGD lr 0.05 (momentum 0.9, weight decay
5e-4) decayed ×0.1 at 25 % and 75 % of training, random crop and flip, evaluation at k = 20
pixels; the multi-step recipes train at k = 120 with 20-step sPGD as the reference README does.
One departure: the reference's PreActResNet-18 uses softplus activations, ours ReLU. Reference
figures (sAA at k = 20): Fast-LS-ℓ0 82.5 clean / 63.0 sAA in 0.8 h; multi-step sTRADES 89.8 /
61.7 (5.5 h); multi-step sAT 84.5 / 36.2; 1-step sAT collapses to 0.0. Evaluate with
``python -m runners.evaluate run_id=<id> attacks=[clean,sparse_autoattack]``.
"""

from __future__ import annotations


def _recipe(data: str, target: str, policy: str, at_loss: str, epochs: int,
            milestones: str, *extra: str, lr: float = 0.1, weight_decay: float = 5e-4
            ) -> tuple[str, ...]:
    """Overrides of a run with SGD (momentum 0.9, batch 128) and a piecewise ×0.1 schedule."""
    return (f"data={data}", f"target={target}", f"policy={policy}", f"at_loss={at_loss}",
            f"epochs={epochs}", f"optim.lr={lr}", "optim.momentum=0.9",
            f"optim.weight_decay={weight_decay}", "batch_size=128", "optim.schedule=piecewise",
            "optim.gamma=0.1", f"optim.milestones={milestones}", *extra)


#: decay at epochs 99/104 of 110, 100/105 of 110 (as fractions of training).
_LAS_110 = "[0.9,0.9454545454545454]"
_FAST_110 = "[0.9090909090909091,0.9545454545454546]"

#: name -> (overrides, one-line doc).
PAPER_RECIPES: dict[str, tuple[tuple[str, ...], str]] = {
    "las_pgd_at_cifar10": (
        _recipe("cifar10", "wrn34_10", "las_at", "ce", 110, _LAS_110),
        "LAS-PGD-AT, CIFAR-10 WRN-34-10, 110 epochs, lr ×0.1 at epochs 99 and 104 "
        "(LAS-AT reference; label smoothing 0.7 from the policy preset)"),
    "las_pgd_at_cifar100": (
        _recipe("cifar100", "wrn34_10", "las_at", "ce", 110, _LAS_110),
        "LAS-PGD-AT, CIFAR-100 WRN-34-10 (K grid 3..12, smoothing 0.6, policy momentum 0.9)"),
    "las_trades_cifar10": (
        _recipe("cifar10", "wrn34_10", "las_at", "trades", 100, "[0.75,0.9]"),
        "LAS-TRADES, CIFAR-10 WRN-34-10, 100 epochs, lr ×0.1 at epochs 75 and 90"),
    "las_awp_cifar10": (
        _recipe("cifar10", "wrn34_10", "las_at", "awp", 200, "[0.5,0.75]"),
        "LAS-AWP, CIFAR-10 WRN-34-10, 200 epochs, lr ×0.1 at 50 % and ×0.01 at 75 % "
        "(final δ clipped to 8/255 by the policy preset, as the reference)"),
    "fgsm_sdi_cifar10": (
        _recipe("cifar10", "resnet18", "fgsm_sdi", "ce", 110, _FAST_110),
        "FGSM-SDI, CIFAR-10 ResNet-18, 110 epochs, lr ×0.1 at epochs 100 and 105"),
    "fgsm_pgi_cifar10": (
        _recipe("cifar10", "resnet18", "fgsm_pgi", "pgi", 110, _FAST_110),
        "FGSM-PGI (MEP + regulariser λ=10), CIFAR-10 ResNet-18, 110 epochs, lr ×0.1 at "
        "epochs 100 and 105"),
    "pgd_at_cifar10": (
        _recipe("cifar10", "resnet18", "pgd_at", "ce", 110, _FAST_110),
        "PGD-10 AT (α = 2/255), the FGSM-SDI/PGI baseline's schedule, CIFAR-10 ResNet-18"),
    "dynamic_cifar10": (
        _recipe("cifar10", "wrn34_10", "dynamic", "ce", 120, "[0.49166666666666664,0.825]",
                "policy.c_max=0.5", lr=0.01, weight_decay=1e-4),
        "Dynamic AT, CIFAR-10, 120 epochs, c_max 0.5 ramped to 0 at epoch 100, lr 0.01 "
        "×0.1 from the 60th and the 100th epoch (the reference's ep+1 == 60: 0-based 59, 99)"),
    "dynamic_mnist": (
        _recipe("mnist", "mnist_cnn", "dynamic", "ce", 50, "[0.4,0.8]", "threat.eps=0.3",
                lr=0.01, weight_decay=1e-4),
        "Dynamic AT, MNIST 4-layer CNN, ε = 0.3, 50 epochs, lr 0.01 ×0.1 at epochs 20 and 40"),
}


# -- Fast-BAT (Zhang et al., ICML 2022; reference OPTML-Group/Fast-BAT train.py,
#    docs/references.md §5)
_FAST_BAT_CIFAR10 = (
    "data=cifar10", "target=preact_resnet18", "policy=fgsm_rs", "at_loss=fast_bat",
    "epochs=20", "batch_size=128", "optim.lr=0.2", "optim.schedule=cyclic",
    "optim.cyclic_peak=0.5", "optim.momentum=0.9", "optim.weight_decay=0.0005",
    "data.val_size=5000", "eval.final_pgd_steps=50", "eval.final_restarts=10",
    "monitor.keep_best=true")
PAPER_RECIPES["fast_bat_cifar10"] = (
    (*_FAST_BAT_CIFAR10, "threat.eps=0.03137254901960784"),
    "Fast-BAT, CIFAR-10, eps 8/255: PreActResNet-18, 20 epochs, cyclic lr 0 -> 0.2 -> 0, "
    "45k/5k train/val split, final PGD-50-10 (paper: 79.97 clean / 48.83 PGD / 45.19 AA); "
    "at_loss=ce after it gives the paper's Fast-AT baseline")
PAPER_RECIPES["fast_bat_cifar10_eps16"] = (
    (*_FAST_BAT_CIFAR10, "threat.eps=0.06274509803921569"),
    "Fast-BAT, CIFAR-10, eps 16/255 (raw step 2000/255), otherwise as fast_bat_cifar10 "
    "(paper: 68.16 clean / 27.69 PGD / 18.79 AA; Fast-AT overfits catastrophically)")

# -- sparse (L0): the shared CIFAR-10 setting of the sparse papers (module docstring)
CIFAR10_L0 = ("data=cifar10", "target=preact_resnet18", "threat=l0", "threat.k=20", "epochs=100",
              "batch_size=128", "optim.lr=0.05", "optim.momentum=0.9", "optim.weight_decay=5e-4",
              "optim.schedule=piecewise", "optim.milestones=[0.25,0.75]", "optim.gamma=0.1")
PAPER_RECIPES.update({
    "fast_ls_l0_cifar10": (
        (*CIFAR10_L0, "policy=fast_ls_l0"),
        "Fast-LS-ℓ0 (1-step sPGD + N-FGSM noise, sTRADES β=3 + soft labels), CIFAR-10 "
        "PreActResNet-18, 100 epochs, k=20 (paper: 82.5 clean / 63.0 sAA)"),
    "strades_l0_cifar10": (
        (*CIFAR10_L0, "policy=spgd_at", "policy.steps=20", "policy.k=120", "at_loss=trades"),
        "sTRADES: 20-step sPGD at k=120, β=3, CIFAR-10 PreActResNet-18, 100 epochs "
        "(paper: 89.8 clean / 61.7 sAA at k=20)"),
    "sat_l0_cifar10": (
        (*CIFAR10_L0, "policy=spgd_at", "policy.steps=20", "policy.k=120", "at_loss=ce"),
        "sAT: 20-step sPGD at k=120, CIFAR-10 PreActResNet-18, 100 epochs "
        "(paper: 84.5 clean / 36.2 sAA at k=20)"),
    "sat_1step_l0_cifar10": (
        (*CIFAR10_L0, "policy=spgd_at", "policy.steps=1", "at_loss=ce"),
        "1-step sAT at k=20, CIFAR-10 PreActResNet-18, 100 epochs: the catastrophic-"
        "overfitting baseline (paper: 0.0 sAA)"),
})
