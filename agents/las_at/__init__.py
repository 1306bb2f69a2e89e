"""LAS-AT (Jia et al., CVPR 2022): a strategy network picks each sample's attack, by REINFORCE.

``policy.py`` (the policy), ``net.py`` (the strategy network and categorical maths),
``preset.py`` (the reference variants' settings). The action space and the look-ahead reward
are shared with PPO (``agents/strategy/``).
"""
