"""Kernel tests on a machine without a GPU run the Triton kernels under the Triton interpreter.

Triton picks interpreted or compiled when it is imported (its standard library is jitted at import time), so
the choice is made here, at collection, before any test imports it.
"""

import os
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")
