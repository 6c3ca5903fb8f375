"""Triton kernels for the optimizer hot loops, imported as ``sophia_train_kernels`` (never ``kernels``:
a PyPI package of that name exists). Set ``TRITON_INTERPRET=1`` before import to run them on CPU tensors.
"""

from .sign_methods import lion_step_, s3_step_
from .sophia import TRITON_AVAILABLE, hessian_ema_, sophia_step_

__all__ = ["TRITON_AVAILABLE", "hessian_ema_", "lion_step_", "s3_step_", "sophia_step_"]
