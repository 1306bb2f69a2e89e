"""PPO (stable-baselines3) learning LAS-AT's strategy: ``policy.py`` (the policy),
``buffer.py`` (a device-resident rollout buffer), ``extractor.py`` (a small CNN), ``vec_env.py``
(an SB3 ``VecEnv`` so that ``PPO.learn`` can drive co-training)."""
