"""Silence import-time noise that says nothing to a user of this CPU stack.

torchao logs "Failed to load <CUDA kernel .so>" and torch logs an Enum deprecation on every
import; on a CPU machine both are expected, and they bury the messages that matter.
"""

import logging

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_imports() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
