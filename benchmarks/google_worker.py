"""Run Google's distributed_shampoo on a benchmark workload, in ``.venv-google``.

The harness (``python -m benchmarks``) starts this module in the Google
environment with a request file and a result file:

    .venv-google/bin/python -m benchmarks.google_worker REQUEST.json RESULT.json

The request names the workload and the Google configurations to run. It
gives the sweep's steps, evaluation interval, learning rates and seeds, the
timing pass's settings and AdamW's best learning rate. For ``char_lm`` it also
gives the standard library directory of the harness's interpreter, so that
both environments read the same text. For each configuration the worker runs
the sweep and the timing pass at the best rate exactly as the harness does in
its own process (``training.sweep_and_time``), on the same workload code and
batches. It times AdamW too, to show how much of a difference in step time
comes from the older JAX. The result contains the environment's package
versions, the runs and the timings.

This module runs under JAX 0.5.3 and must not import ``shampoo_optax``.
benchmarks/README.md tabulates how ``google_shampoo`` maps this project's
defaults and what still differs.
"""

import json
import pathlib
import sys
import warnings

from precondition import distributed_shampoo as google

from benchmarks import training
from benchmarks.environments import GOOGLE_PACKAGES, package_versions
from benchmarks.workloads import make_workload

# Release 0.3.0 requests float64 for its root computation. Without x64, JAX
# computes it in float32, as this project's Shampoo does by default, and
# warns at every trace.
warnings.filterwarnings("ignore", message="Explicitly requested dtype .*float64")


def google_shampoo(schedule, workload):
    """Build distributed_shampoo configured like ``shampoo_optax.shampoo``'s defaults."""
    return google.distributed_shampoo(
        schedule,
        block_size=256,
        # This project merges small dimensions up to the block size.
        merge_small_dims_block_size=256,
        beta1=0.9,
        beta2=0.999,
        diagonal_epsilon=1e-8,
        matrix_epsilon=1e-6,
        relative_matrix_epsilon=True,
        weight_decay=0.0,
        start_preconditioning_step=10,
        preconditioning_compute_steps=10,
        statistics_compute_steps=1,
        # Release 0.3.0 has no Adam grafting. RMSPROP grafts onto
        # g / (sqrt(nu) + eps) with Adam's second moment nu, and the moving
        # average turns the heavy-ball momentum into Adam's first moment. Neither
        # is bias-corrected, unlike this project's. RMSPROP_NORMALIZED would
        # divide g by its norm first, which Adam does not.
        graft_type=google.GraftingType.RMSPROP,
        moving_average_for_momentum=True,
        nesterov=False,
        # Coupled Newton iterations, as root_method="newton".
        eigh=False,
        # The threshold of root_error_threshold=0.5. Its error is the Newton
        # iterate max|M - I|, which equals X^p A - I in exact arithmetic;
        # this project measures the balanced residual X^a A X^b - I instead.
        inverse_failure_threshold=0.5,
        # This project gives 1-D parameters the grafted step only.
        skip_preconditioning_rank_lt=2,
        skip_preconditioning_dim_size_gt=4096,
    )


def google_shampoo_defaults(schedule, workload):
    """Build distributed_shampoo at its defaults; ``block_size`` has none, and 128 is its docstring's recommendation."""
    return google.distributed_shampoo(schedule, block_size=128)


OPTIMIZERS = {"google_shampoo": google_shampoo, "google_shampoo_defaults": google_shampoo_defaults}


def run_request(request: dict) -> dict:
    """Sweep and time each requested optimizer, and time AdamW for reference."""
    workload = make_workload(request["workload"], request.get("stdlib"))
    schedule = training.schedule(request["steps"])
    result = {"versions": package_versions(GOOGLE_PACKAGES), "runs": {}, "timing": {}}
    for name in request["optimizers"]:
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r} in the request; choose from {sorted(OPTIMIZERS)}")
        result["runs"][name], result["timing"][name] = training.sweep_and_time(
            workload,
            name,
            OPTIMIZERS[name](schedule, workload),
            request["learning_rates"],
            request["seeds"],
            request["steps"],
            request["eval_every"],
            request["timing"],
        )

    tx = training.adamw(schedule, workload)
    compiled, compile_seconds = training.compile_step(workload, tx)
    timing = training.time_steps(workload, tx, compiled, request["adamw_learning_rate"], **request["timing"])
    result["adamw_timing"] = {"compile_seconds": round(compile_seconds, 4), **timing}
    return result


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python -m benchmarks.google_worker REQUEST.json RESULT.json")
    request_path, result_path = map(pathlib.Path, argv)
    result = run_request(json.loads(request_path.read_text()))
    result_path.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
