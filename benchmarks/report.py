"""Summaries, goals, printed tables and plots from a comparison record.

Everything here is computed from the raw runs and timings in the JSON record
that ``benchmarks.runner`` writes, so a saved record can be reported again
with ``python -m benchmarks --report FILE``.

Definitions:

* Best learning rate: the swept rate with the lowest final validation loss,
  averaged over seeds (a diverged run counts as infinite loss).
* Final training loss: the mean of the last ``window`` training losses,
  ``window = clip(steps // 10, 1, 20)``, because single-batch losses are noisy.
* Target: AdamW's final training loss at its best rate, averaged over seeds.
* Steps to target: the first step at which the moving average (same window)
  of the training loss, averaged over seeds, is at most the target. Per seed,
  the same on that seed's curve.
* Seconds to target: steps to target times the step time of the timing pass,
  which excludes compilation and runs apart from the sweep, because the
  sweep's own wall-clock times depend on what else the machine is doing.
"""

import math
import pathlib

import numpy as np

BASELINE = "adamw"
OURS = "shampoo"
GOOGLE_EQUAL = "google_shampoo"


def loss_window(steps: int) -> int:
    return max(1, min(20, steps // 10))


def _curve(run: dict, steps: int) -> np.ndarray:
    """Training losses as floats, NaN where missing, padded with NaN to ``steps``."""
    curve = np.full(steps, np.nan)
    values = [np.nan if value is None else value for value in run["train_loss"]]
    curve[: len(values)] = values
    return curve


def moving_average(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean; entry i covers steps i - window + 2 .. i + 1 (1-based); NaN before a full window."""
    averaged = np.full(len(curve), np.nan)
    if len(curve) >= window:
        averaged[window - 1 :] = np.convolve(curve, np.ones(window) / window, mode="valid")
    return averaged


def first_step_at_or_below(averaged: np.ndarray, target: float) -> int | None:
    reached = np.flatnonzero(averaged <= target)
    return int(reached[0]) + 1 if reached.size else None


def _final_validation_loss(run: dict) -> float:
    value = run["validation_loss"][-1] if run["validation_loss"] else None
    return math.inf if run["diverged"] or value is None else value


def best_learning_rate(runs: list[dict]) -> float:
    """Return the rate with the lowest seed-averaged final validation loss."""
    rates = sorted({run["learning_rate"] for run in runs})
    mean_loss = {
        rate: np.mean([_final_validation_loss(r) for r in runs if r["learning_rate"] == rate]) for rate in rates
    }
    return min(rates, key=lambda rate: mean_loss[rate])


def _spread(values: list[float | None]) -> dict | None:
    """Mean, min and max of the finite values, or None if there are none."""
    finite = [value for value in values if value is not None and math.isfinite(value)]
    if not finite:
        return None
    return {"mean": float(np.mean(finite)), "min": min(finite), "max": max(finite), "count": len(finite)}


def summarize_workload(workload: dict) -> dict:
    """Per-optimizer figures at each optimizer's best learning rate."""
    steps = workload["steps"]
    window = loss_window(steps)
    best_runs = {}
    for name, runs in workload["runs"].items():
        rate = best_learning_rate(runs)
        best_runs[name] = [run for run in runs if run["learning_rate"] == rate]

    def final_train_loss(run):
        return float(np.mean(_curve(run, steps)[-window:]))

    averaged = {
        name: np.mean([moving_average(_curve(run, steps), window) for run in runs], axis=0)
        for name, runs in best_runs.items()
    }
    # The last point of AdamW's averaged curve, so that AdamW reaches the
    # target exactly, without a rounding difference.
    target = None
    if BASELINE in averaged and math.isfinite(averaged[BASELINE][-1]):
        target = float(averaged[BASELINE][-1])

    summary = {"target_train_loss": target, "loss_window": window, "optimizers": {}}
    for name, runs in best_runs.items():
        timing = workload["timing"].get(name)
        row = {
            "learning_rate": runs[0]["learning_rate"],
            "learning_rate_at_sweep_edge": runs[0]["learning_rate"]
            in (min(workload["learning_rates"]), max(workload["learning_rates"])),
            "diverged_runs_in_sweep": sum(run["diverged"] for run in workload["runs"][name]),
            "final_train_loss": _spread([final_train_loss(run) for run in runs]),
            "final_validation_loss": _spread([_final_validation_loss(run) for run in runs]),
            "final_validation_accuracy": None,
            "steps_to_target": None,
            "steps_to_target_per_seed": None,
            "seconds_to_target": None,
            "step_seconds": timing["step_seconds"] if timing else None,
            "compile_seconds": timing["compile_seconds"] if timing else None,
            "state_bytes": timing["state_bytes"] if timing else None,
        }
        if runs[0]["validation_accuracy"] is not None:
            row["final_validation_accuracy"] = _spread([run["validation_accuracy"][-1] for run in runs])
        if target is not None:
            row["steps_to_target"] = first_step_at_or_below(averaged[name], target)
            row["steps_to_target_per_seed"] = [
                first_step_at_or_below(moving_average(_curve(run, steps), window), target) for run in runs
            ]
            if row["steps_to_target"] is not None and timing:
                row["seconds_to_target"] = row["steps_to_target"] * timing["step_seconds"]
        summary["optimizers"][name] = row
    return summary


def _ratio_goal(goal: str, workload: str | None, numerator, denominator, limit: float, strict: bool) -> dict:
    """Build a goal entry, met when numerator / denominator is at most (if ``strict``, below) ``limit``."""
    entry = {"goal": goal, "workload": workload, "ratio": None, "limit": limit, "met": None}
    if numerator is None or denominator is None:
        entry["detail"] = "not measured: an optimizer or workload it needs was not selected"
        return entry
    ratio = numerator / denominator
    met = ratio < limit if strict else ratio <= limit
    margin = abs(ratio - limit) / limit
    entry.update(ratio=ratio, met=bool(met))
    entry["detail"] = f"ratio {ratio:.2f}, limit {limit:.2f}: " + (
        f"met with {margin:.0%} to spare" if met else f"missed by {margin:.0%}"
    )
    return entry


def _target_goal(goal: str, name: str, record: dict, key: str, limit: float, strict: bool) -> dict:
    """Build the goal entry for Shampoo's ``key`` over AdamW's; not reaching the target misses it."""
    workload = record["workloads"].get(name)
    rows = workload["summary"]["optimizers"] if workload else {}
    if OURS in rows and BASELINE in rows and rows[OURS]["steps_to_target"] is None:
        entry = _ratio_goal(goal, name, None, None, limit, strict)
        entry.update(met=False, detail=f"Shampoo did not reach the target in {workload['steps']} steps")
        return entry
    return _ratio_goal(goal, name, rows.get(OURS, {}).get(key), rows.get(BASELINE, {}).get(key), limit, strict)


def goals(record: dict) -> list[dict]:
    """List each goal of the comparison, met or missed and by how much."""
    entries = []
    summaries = {name: workload["summary"]["optimizers"] for name, workload in record["workloads"].items()}

    def figure(workload, optimizer, key):
        return summaries.get(workload, {}).get(optimizer, {}).get(key)

    entries.append(
        _target_goal(
            "Shampoo's steps to target <= 0.6 x AdamW's on the Transformer",
            "char_lm",
            record,
            "steps_to_target",
            0.6,
            strict=False,
        )
    )
    for workload in record["workloads"]:
        entries.append(
            _target_goal(
                "Shampoo's wall-clock to target < AdamW's", workload, record, "seconds_to_target", 1.0, strict=True
            )
        )

    overhead = record.get("overhead") or {"rows": []}
    every_ten = [row for row in overhead["rows"] if row["preconditioning_compute_steps"] == 10]
    entries.append(
        _ratio_goal(
            "Shampoo's step time <= 1.10 x AdamW's on the Transformer, roots every 10 steps",
            "char_lm",
            every_ten[0]["shampoo_step_seconds"] if every_ten else None,
            every_ten[0]["adamw_step_seconds"] if every_ten else None,
            1.10,
            strict=False,
        )
    )

    compile_rows = {row["depth"]: row for row in (record.get("compile_time") or {"rows": []})["rows"]}
    entries.append(
        _ratio_goal(
            "Shampoo's compile time at 32 layers <= 1.5 x at 2 layers",
            None,
            compile_rows.get(32, {}).get("shampoo_seconds"),
            compile_rows.get(2, {}).get("shampoo_seconds"),
            1.5,
            strict=False,
        )
    )

    for workload in record["workloads"]:
        entries.append(
            _ratio_goal(
                "Shampoo's step time < Google's distributed_shampoo's at equal settings",
                workload,
                figure(workload, OURS, "step_seconds"),
                figure(workload, GOOGLE_EQUAL, "step_seconds"),
                1.0,
                strict=True,
            )
        )
    return entries


def _format(value, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _format_spread(spread: dict | None, pattern: str) -> str:
    if spread is None:
        return "-"
    return f"{spread['mean']:{pattern}} ({spread['min']:{pattern}}..{spread['max']:{pattern}})"


def print_report(record: dict) -> None:
    if record.get("google_skipped"):
        print(f"Google's distributed_shampoo was skipped: {record['google_skipped']}")
    for name, workload in record["workloads"].items():
        summary = workload["summary"]
        print(f"\n== {name}: {workload['description']}")
        print(
            f"   {workload['steps']} steps, seeds {workload['seeds']}, learning rates {workload['learning_rates']}; "
            f"target (AdamW's final training loss) {_format(summary['target_train_loss'], '.4g')}"
        )
        print(
            f"   {'optimizer':24s} {'lr':>7s}  {'val. loss mean (min..max)':30s} {'val. acc.':>9s} "
            f"{'steps to target':>15s} {'per seed':>16s} {'s to target':>11s} {'step ms':>8s} "
            f"{'compile s':>9s} {'state MB':>8s}"
        )
        for optimizer, row in summary["optimizers"].items():
            rate = f"{row['learning_rate']:g}" + ("*" if row["learning_rate_at_sweep_edge"] else "")
            accuracy = row["final_validation_accuracy"]
            per_seed = "-" if row["steps_to_target_per_seed"] is None else str(row["steps_to_target_per_seed"])
            step_ms = None if row["step_seconds"] is None else 1000 * row["step_seconds"]
            state_mb = None if row["state_bytes"] is None else row["state_bytes"] / 2**20
            print(
                f"   {optimizer:24s} {rate:>7s}  {_format_spread(row['final_validation_loss'], '.4g'):30s} "
                f"{_format(accuracy and accuracy['mean'], '.4f'):>9s} {_format(row['steps_to_target'], 'd'):>15s} "
                f"{per_seed:>16s} {_format(row['seconds_to_target'], '.2f'):>11s} {_format(step_ms, '.2f'):>8s} "
                f"{_format(row['compile_seconds'], '.2f'):>9s} {_format(state_mb, '.2f'):>8s}"
            )
        print("   (* best rate at the edge of the sweep; val. acc. is the mean over seeds)")
        reference = workload.get("google_environment_adamw_timing")
        if reference:
            print(f"   AdamW in the Google environment: {1000 * reference['step_seconds']:.2f} ms a step")
        if workload.get("google_error"):
            print(f"   Google's optimizer failed here: {workload['google_error']}")

    if record.get("compile_time"):
        print("\nCompile time of one update against depth (s):")
        for row in record["compile_time"]["rows"]:
            print(
                f"   {row['depth']:3d} layers: Shampoo {row['shampoo_seconds']:.3f}, AdamW {row['adamw_seconds']:.3f}"
            )
    if record.get("overhead"):
        print("\nShampoo's step time over AdamW's on the Transformer:")
        for row in record["overhead"]["rows"]:
            print(
                f"   roots every {row['preconditioning_compute_steps']:3d} steps: "
                f"{1000 * row['shampoo_step_seconds']:.2f} ms against {1000 * row['adamw_step_seconds']:.2f} ms, "
                f"ratio {row['ratio']:.2f}"
            )

    print("\nGoals:")
    for entry in record["goals"]:
        status = {True: "met", False: "MISSED", None: "n/a"}[entry["met"]]
        where = f" [{entry['workload']}]" if entry["workload"] else ""
        print(f"   {status:6s} {entry['goal']}{where}: {entry['detail']}")


def plot_workload(name: str, workload: dict, path: pathlib.Path) -> None:
    """Training loss against steps and against seconds, at each optimizer's best rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = workload["steps"]
    summary = workload["summary"]
    window = summary["loss_window"]
    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for optimizer, row in summary["optimizers"].items():
        runs = [run for run in workload["runs"][optimizer] if run["learning_rate"] == row["learning_rate"]]
        curves = np.array([moving_average(_curve(run, steps), window) for run in runs])
        x = np.arange(1, steps + 1)
        label = f"{optimizer} (lr {row['learning_rate']:g})"
        line = by_step.plot(x, curves.mean(axis=0), label=label)[0]
        by_step.fill_between(x, curves.min(axis=0), curves.max(axis=0), color=line.get_color(), alpha=0.2)
        if row["step_seconds"] is not None:
            by_time.plot(x * row["step_seconds"], curves.mean(axis=0), label=label, color=line.get_color())

    target = summary["target_train_loss"]
    for axis in (by_step, by_time):
        if target is not None:
            axis.axhline(target, color="gray", linestyle="--", linewidth=1, label="target (AdamW's final loss)")
        axis.set(yscale="log", ylabel=f"training loss ({window}-step moving average)")
        axis.grid(alpha=0.3)
    by_step.set(xlabel="step", title="mean over seeds, band: min to max")
    # Logarithmic, because step times differ by up to a thousand times.
    by_time.set(xscale="log", xlabel="seconds (step x median step time of the timing pass)", title="mean over seeds")
    by_step.legend(fontsize=8)
    figure.suptitle(f"{name}: {workload['description']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
