"""Shared test setup."""

import os
import sys

# numpy's BLAS threads oversubscribe small machines (a 512 x 512
# eigendecomposition ran about 40 times slower on two cores). This only takes
# effect if numpy is not imported yet; .ci/run sets it for the whole run.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The NumPy reference lives beside the tests and is imported by name.
sys.path.insert(0, os.path.dirname(__file__))
