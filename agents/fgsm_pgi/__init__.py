"""FGSM-PGI (Jia et al., ECCV 2022): prior-guided initialisation (``policy.py``); the PGI
regulariser is an AT loss (``targets/losses/pgi.py``)."""
