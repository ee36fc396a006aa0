"""Hecate: FSSDP mixture-of-experts layers for PyTorch (see docs/python.md)."""
import torch as _torch

from hecate import _build_info

_running = _torch.__version__.split("+")[0]
if _running.split(".")[:2] != _build_info.TORCH_VERSION.split(".")[:2]:
    raise ImportError(
        f"hecate was built against LibTorch {_build_info.TORCH_VERSION}, but the running torch is "
        f"{_torch.__version__}: rebuild hecate against this torch (docs/python.md)")

from hecate import _C  # noqa: E402  (after the version check: a mismatch must not load it)
