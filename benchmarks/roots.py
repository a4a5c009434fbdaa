"""Accuracy and speed of matrix_inverse_pth_root, for each method.

Accuracy: random symmetric matrices with log-spaced eigenvalues from 1 down to
1 / condition number, in a random basis. Each matrix is rounded to float32
first, and the reference is the float64 eigendecomposition root of that
rounded matrix, with the same damping: rounding alone moves the smallest
eigenvalue by about condition x 6e-8, which no float32 method can undo. The
damping floor is 1e-12, so the condition numbers are those of the problem,
not of the damping. The float64 rows run the same methods with x64 enabled.

Speed: one refresh of a stack of k statistics of size d (p = 4, condition
number 1e6, the library's default epsilon 1e-6), timed after compilation, and
the compile time itself.

Usage:
  OPENBLAS_NUM_THREADS=1 python benchmarks/roots.py
  OPENBLAS_NUM_THREADS=1 python benchmarks/roots.py --quick
"""

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax

# Float64 rows need 64-bit arrays; float32 inputs stay float32 regardless.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from shampoo_optax import matrix_inverse_pth_root  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
METHODS = ("newton", "eigh")
ACCURACY_EPSILON = 1e-12


def random_spd(rng: np.random.Generator, size: int, condition_number: float) -> np.ndarray:
    rotation, _ = np.linalg.qr(rng.normal(size=(size, size)))
    eigenvalues = np.logspace(0, -np.log10(condition_number), size)
    return (rotation * eigenvalues) @ rotation.T


def reference_root(matrix: np.ndarray, p: int, epsilon: float) -> np.ndarray:
    """Float64 eigendecomposition root with the library's damping rule."""
    matrix = (matrix + matrix.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    damping = epsilon * max(eigenvalues[-1], 1.0)
    return (eigenvectors * (eigenvalues + damping) ** (-1.0 / p)) @ eigenvectors.T


def accuracy_rows(size: int, conditions, exponents, seeds: int) -> list[dict]:
    rows = []
    for dtype in (jnp.float32, jnp.float64):
        for method in METHODS:
            for condition in conditions:
                for p in exponents:
                    errors, residuals, iterations, non_finite = [], [], [], 0
                    for seed in range(seeds):
                        rng = np.random.default_rng(seed)
                        matrix = random_spd(rng, size, condition).astype(np.float32)
                        want = reference_root(matrix.astype(np.float64), p, ACCURACY_EPSILON)
                        result = matrix_inverse_pth_root(
                            jnp.asarray(matrix, dtype), p, epsilon=ACCURACY_EPSILON, method=method
                        )
                        got = np.asarray(result.root, np.float64)
                        if not np.all(np.isfinite(got)):
                            non_finite += 1
                            continue
                        errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
                        residuals.append(float(result.error))
                        iterations.append(int(result.iterations))
                    row = {
                        "dtype": jnp.dtype(dtype).name,
                        "method": method,
                        "condition_number": condition,
                        "p": p,
                        "max_relative_error": max(errors) if errors else None,
                        "max_residual": max(residuals) if residuals else None,
                        "max_iterations": max(iterations) if iterations else None,
                        "non_finite_roots": non_finite,
                    }
                    rows.append(row)
                    error = "NaN" if row["max_relative_error"] is None else f"{row['max_relative_error']:.1e}"
                    print(f"{row['dtype']} {method:6s} cond {condition:.0e} p {p}: relative error {error}", flush=True)
    return rows


def timing_rows(sizes, batches, repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        base = random_spd(rng, size, 1e6).astype(np.float32)
        for batch in batches:
            stack = jnp.asarray(np.broadcast_to(base, (batch, size, size)))
            for method in METHODS:
                # A new function object per point, so compile time is measured afresh.
                def refresh(matrices, method=method):
                    return matrix_inverse_pth_root(matrices, 4, epsilon=1e-6, method=method)

                start = time.perf_counter()
                compiled = jax.jit(refresh).lower(stack).compile()
                compile_seconds = time.perf_counter() - start
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    jax.block_until_ready(compiled(stack))
                    times.append(time.perf_counter() - start)
                row = {
                    "method": method,
                    "block_size": size,
                    "blocks": batch,
                    "seconds_per_refresh": statistics.median(times),
                    "compile_seconds": compile_seconds,
                }
                rows.append(row)
                print(
                    f"{method:6s} d {size:4d} x {batch:2d}: {row['seconds_per_refresh']:.4f} s per refresh, "
                    f"compile {compile_seconds:.3f} s",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--size", type=int, default=256, help="matrix size for the accuracy table")
    parser.add_argument("--seeds", type=int, default=3, help="random matrices per accuracy point")
    parser.add_argument("--repeats", type=int, default=5, help="timed refreshes per point; the median is kept")
    args = parser.parse_args()

    conditions = (1e2, 1e4, 1e6, 1e8)
    exponents = (2, 4, 6, 8)
    sizes, batches = (128, 256, 512, 1024), (1, 4, 16)
    if args.quick:
        args.size, args.seeds, args.repeats = 32, 1, 2
        conditions, exponents, sizes, batches = (1e2, 1e6), (2, 4), (64, 128), (1, 4)

    record = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "accuracy_size": args.size,
        "accuracy_epsilon": ACCURACY_EPSILON,
        "accuracy": accuracy_rows(args.size, conditions, exponents, args.seeds),
        "timing": timing_rows(sizes, batches, args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / ("roots_quick.json" if args.quick else "roots.json")
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Saved {output}")


if __name__ == "__main__":
    main()
