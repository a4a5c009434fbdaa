"""The optimizers compared, as built in this project's environment.

Each factory takes the learning-rate schedule (peak 1, see ``training``) and
the workload, and returns an ``optax.GradientTransformation``. No optimizer
uses weight decay: the implementations apply it differently (Google's
optimizer adds it to the gradient by default), and the comparison is about
the update direction.

Google's ``distributed_shampoo`` runs in another environment; its two
configurations are built in ``benchmarks/google_worker.py`` and only named
here.
"""

import optax
from optax.contrib import MuonDimensionNumbers

import shampoo_optax
from benchmarks.training import adamw
from benchmarks.workloads import Workload


def shampoo(schedule, workload: Workload, preconditioning_compute_steps: int = 10) -> optax.GradientTransformation:
    """This project's Shampoo at its defaults; the refresh interval is varied for the overhead figure."""
    return shampoo_optax.shampoo(schedule, preconditioning_compute_steps=preconditioning_compute_steps)


def muon(schedule, workload: Workload) -> optax.GradientTransformation:
    """optax's Muon on hidden matrices, its Adam branch on everything else.

    ``consistent_rms=0.2`` scales Muon's update to the root-mean-square size of
    AdamW's, as optax's documentation recommends for that purpose, so one
    learning-rate sweep suits both, and the Adam branch shares the rate.
    """

    # A fixed tree rather than a function of the parameters, because optax
    # also calls such a function on masked trees, whose leaves have no shape.
    dimension_numbers = {
        name: MuonDimensionNumbers() if value.ndim == 2 and name not in workload.muon_excluded else None
        for name, value in workload.init_params(0).items()
    }
    return optax.contrib.muon(schedule, consistent_rms=0.2, muon_weight_dimension_numbers=dimension_numbers)


IN_PROCESS = {"adamw": adamw, "shampoo": shampoo, "muon": muon}
# Google's distributed_shampoo configured like this project's defaults, and
# at its own defaults; see benchmarks/google_worker.py for the mapping.
GOOGLE = ("google_shampoo", "google_shampoo_defaults")
ALL = (*IN_PROCESS, *GOOGLE)
