"""mamba_monai: state-space (Mamba) and spectral networks, blocks, losses and bundles for MONAI.

The subpackages are imported here so that bundle configs can write ``"$import mamba_monai"`` and then use
``mamba_monai.data.load_datalist(...)`` in expressions (MONAI binds only the imported name).
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

# torch and the numba kernels each run a GNU OpenMP thread pool. By default an idle pool's threads busy-wait for
# 300,000 spins before sleeping: beside another job they steal its cores (an EM-Net step 11x slower in 0.1's
# measurement). OMP_WAIT_POLICY=PASSIVE (sleep at once) fixed that but made a quiet machine 1.4x slower, every
# parallel region paying to wake its threads. 1000 spins (libgomp's own count for an oversubscribed machine) kept both:
# see benchmarks/bench_process_env.py and README.md. OpenMP reads this when its library loads: numba's always loads later;
# torch's only when mamba_monai is imported before torch (the `mamba-monai` command, scripts that import it first).
# A wait policy or spin count already in the environment is kept.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

from . import runtime  # noqa: E402

# CPU training frees and reallocates the same large activations every step; glibc's defaults return them to the system
# and fault their pages in again (up to 16% of a step here). Kept for reuse unless the user set the allocator up.
runtime.keep_freed_memory()

from . import blocks, bundle, data, engines, inferers, losses, metrics, networks, ops, visualize  # noqa: E402

__all__ = [
    "blocks", "bundle", "data", "engines", "inferers", "losses", "metrics", "networks", "ops", "runtime", "visualize",
    "__version__",
]
