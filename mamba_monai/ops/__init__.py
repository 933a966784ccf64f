from __future__ import annotations

from .instance_norm_cpu import instance_norm_act
from .selective_scan_cpu import selective_scan_cpu
from .selective_scan_interface import available_backends, scriptable_selective_scan, selective_scan
from .selective_scan_ref import selective_scan_ref

__all__ = [
    "selective_scan",
    "scriptable_selective_scan",
    "selective_scan_ref",
    "selective_scan_cpu",
    "available_backends",
    "instance_norm_act",
]
