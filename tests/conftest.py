"""Shared test setup."""

import os
import sys

# numpy's BLAS threads oversubscribe small machines (a 512 x 512
# eigendecomposition ran about 40 times slower on two cores). This only takes
# effect if numpy is not imported yet; .ci/run sets it for the whole run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Eight CPU devices, so sharding tests run on a machine without accelerators.
# XLA reads the flag when JAX starts, hence here, before any test imports jax.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

# The NumPy reference lives beside the tests and is imported by name.
sys.path.insert(0, os.path.dirname(__file__))
