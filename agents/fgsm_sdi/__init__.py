"""FGSM-SDI (Jia et al., TIP 2022): ``policy.py`` (the policy) and ``generator.py`` (the
initialisation generator network)."""
