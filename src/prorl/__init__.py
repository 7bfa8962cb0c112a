"""prorl: prolonged reinforcement learning with verifiable rewards.

Import tiers (kept on purpose, tested): ``prorl.types``, ``prorl.config``, ``prorl.tasks``,
``prorl.verify`` and ``prorl.evaluate`` never import torch; ``prorl.models``,
``prorl.sampling`` and ``prorl.train`` do; vLLM and Ray load lazily inside their backends.
"""

__version__ = "0.1.0"
