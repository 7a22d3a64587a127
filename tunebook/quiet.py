"""Silence import-time noise that says nothing to a user of this CPU stack.

torchao logs "Failed to load <CUDA kernel .so>" and torch logs an Enum deprecation on every
import; on a CPU machine both are expected, and they bury the messages that matter.
"""

import logging
import warnings

NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "bitsandbytes.backends.cpu.ops")


def quiet_imports() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # bitsandbytes asks the (offline) hub to vouch for a kernel on every import
    warnings.filterwarnings("ignore", message=".*publisher trust check.*")
    # Axolotl's DPO collator imports from trl.experimental, a warning meant for TRL's users
    warnings.filterwarnings("ignore", message=".*importing from 'trl.experimental'.*")
