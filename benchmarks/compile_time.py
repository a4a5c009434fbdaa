"""Compile time of one optimizer update against the number of identical layers.

Blocks of equal shape are stacked, so the roots of 32 identical layers are one
batched computation, like those of 4. This script measures how the time to
lower and compile ``tx.update`` grows with depth, for Shampoo and for AdamW.

Usage:
  OPENBLAS_NUM_THREADS=1 python benchmarks/compile_time.py
  OPENBLAS_NUM_THREADS=1 python benchmarks/compile_time.py --depths 2 8 32 --width 256
"""

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import optax

import shampoo_optax

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def make_params(depth: int, width: int) -> dict:
    return {f"layer{i}": {"w": jnp.zeros((width, width)), "b": jnp.zeros((width,))} for i in range(depth)}


def compile_seconds(tx: optax.GradientTransformation, params: dict, repeats: int) -> float:
    """Best of ``repeats`` fresh lowerings and compilations of ``tx.update``."""
    state = tx.init(params)
    best = float("inf")
    for _ in range(repeats):
        # A new function object each time defeats jax's compilation cache.
        def update(grads, state, params):
            return tx.update(grads, state, params)

        start = time.perf_counter()
        jax.jit(update).lower(params, state, params).compile()
        best = min(best, time.perf_counter() - start)
    return best


def measure(depths, width: int, repeats: int) -> list[dict]:
    """Compile seconds of Shampoo and AdamW for each depth; also used by ``python -m benchmarks``."""
    optimizers = {
        "shampoo": shampoo_optax.shampoo(1e-3, block_size=width),
        "adamw": optax.adamw(1e-3),
    }
    rows = []
    for depth in depths:
        params = make_params(depth, width)
        row = {"depth": depth}
        for name, tx in optimizers.items():
            row[f"{name}_seconds"] = round(compile_seconds(tx, params, repeats), 3)
        rows.append(row)
        print(f"depth {depth:3d}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "depth"), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 32], help="numbers of layers")
    parser.add_argument("--width", type=int, default=128, help="each layer is a width x width matrix and a bias")
    parser.add_argument("--repeats", type=int, default=3, help="compilations per point; the best is kept")
    args = parser.parse_args()

    rows = measure(args.depths, args.width, args.repeats)

    RESULTS.mkdir(exist_ok=True)
    output = RESULTS / "compile_time.json"
    record = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "machine": platform.machine(),
        "width": args.width,
        "rows": rows,
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Saved {output}")


if __name__ == "__main__":
    main()
