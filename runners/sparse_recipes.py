"""Recipes of the sparse (L0) papers' full CIFAR-10 setting (``recipe=<name>``; GPU-sized).

The setting of the sPGD / Fast-LS-ℓ0 reference (docs/seeds.md §6.3, §8): CIFAR-10,
PreActResNet-18, 100 epochs, batch 128, SGD lr 0.05 (momentum 0.9, weight decay 5e-4) decayed
×0.1 at 25 % and 75 % of training, random crop and flip, evaluation at k = 20 pixels. The
multi-step recipes train at k = 120 with 20-step sPGD as the reference README does. One
departure: the reference's PreActResNet-18 uses softplus activations, ours ReLU. Launch, then
evaluate with Sparse-AutoAttack::

    python -m runners.cotrain recipe=fast_ls_l0_cifar10 data.root=<folder with cifar-10-batches-py>
    python -m runners.evaluate run_id=<id> attacks=[clean,sparse_autoattack] n_examples=10000

Reference figures (sAA at k = 20): Fast-LS-ℓ0 82.5 clean / 63.0 sAA in 0.8 h; multi-step
sTRADES 89.8 / 61.7 (5.5 h); multi-step sAT 84.5 / 36.2; 1-step sAT collapses to 0.0.
"""

from __future__ import annotations

from learned_at.runners.recipes import register_recipe

#: the shared CIFAR-10 setting of the sparse papers.
CIFAR10_L0 = ("data=cifar10", "target=preact_resnet18", "threat=l0", "threat.k=20", "epochs=100",
              "batch_size=128", "optim.lr=0.05", "optim.momentum=0.9", "optim.weight_decay=5e-4",
              "optim.schedule=piecewise", "optim.milestones=[0.25,0.75]", "optim.gamma=0.1")

register_recipe("fast_ls_l0_cifar10", [*CIFAR10_L0, "policy=fast_ls_l0"],
                "Fast-LS-ℓ0 (1-step sPGD + N-FGSM noise, sTRADES β=3 + soft labels), CIFAR-10 "
                "PreActResNet-18, 100 epochs, k=20 (paper: 82.5 clean / 63.0 sAA)")
register_recipe("strades_l0_cifar10",
                [*CIFAR10_L0, "policy=spgd_at", "policy.steps=20", "policy.k=120",
                 "at_loss=trades"],
                "sTRADES: 20-step sPGD at k=120, β=3, CIFAR-10 PreActResNet-18, 100 epochs "
                "(paper: 89.8 clean / 61.7 sAA at k=20)")
register_recipe("sat_l0_cifar10",
                [*CIFAR10_L0, "policy=spgd_at", "policy.steps=20", "policy.k=120", "at_loss=ce"],
                "sAT: 20-step sPGD at k=120, CIFAR-10 PreActResNet-18, 100 epochs "
                "(paper: 84.5 clean / 36.2 sAA at k=20)")
register_recipe("sat_1step_l0_cifar10",
                [*CIFAR10_L0, "policy=spgd_at", "policy.steps=1", "at_loss=ce"],
                "1-step sAT at k=20, CIFAR-10 PreActResNet-18, 100 epochs: the catastrophic-"
                "overfitting baseline (paper: 0.0 sAA)")
