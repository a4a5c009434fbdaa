"""The comparison harness: sweeps, timing passes, compile time and overhead.

For each workload, every optimizer trains at every swept learning rate and
seed. This project's optimizers run in this process, and Google's run through
the worker in ``.venv-google``. Each optimizer's best rate then gets a separate
timing pass (see ``training.time_steps``). The record also contains the
compile time of one update against depth (``benchmarks/compile_time.py``) and
Shampoo's step time over AdamW's on the Transformer for three root-refresh
intervals. ``report`` derives the figures and goals from the record.
"""

import dataclasses
import json
import pathlib
import platform
import re
import time

import jax

from benchmarks import compile_time, environments, optimizers, report, training
from benchmarks.workloads import CharacterLM, Workload, make_workload, stdlib_directory

QUICK_STEPS = 30


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's selection from the command line, and the protocol constants that depend on ``quick``."""

    workloads: tuple[str, ...]
    optimizers: tuple[str, ...]
    seeds: int
    steps: int | None
    quick: bool
    output_dir: pathlib.Path
    google_venv: pathlib.Path

    def timing_pass(self) -> dict:
        """Untimed warmup steps past the start of preconditioning, then timed blocks of 10 steps."""
        return {"warmup_steps": 20, "block_steps": 10, "blocks": 2 if self.quick else 5}

    def refresh_intervals(self) -> tuple[int, ...]:
        # A 100-step interval needs timed blocks of 100 steps, too long for --quick.
        return (1, 10) if self.quick else (1, 10, 100)

    def compile_depths(self) -> tuple[int, ...]:
        return (2, 8, 32)

    def compile_repeats(self) -> int:
        return 1 if self.quick else 3


def _eval_every(steps: int) -> int:
    # Five evaluations a run: only the last one selects the learning rate,
    # and each costs several training steps on the Transformer.
    return max(steps // 5, 1)


def _run_google(workload: Workload, google: list[str], entry: dict, settings: Settings, python: pathlib.Path) -> dict:
    """Sweep and time Google's optimizer in its environment; return the worker's result."""
    request = {
        "workload": workload.name,
        "optimizers": google,
        "steps": entry["steps"],
        "eval_every": entry["eval_every"],
        "learning_rates": entry["learning_rates"],
        "seeds": entry["seeds"],
        "timing": settings.timing_pass(),
        # AdamW is timed in the Google environment too, at its best rate
        # here, to separate the JAX version's share of any difference in
        # step time.
        "adamw_learning_rate": entry["timing"].get("adamw", {}).get("learning_rate", 1e-3),
    }
    if isinstance(workload, CharacterLM):
        request["stdlib"] = workload.stdlib
    return environments.run_google_worker(python, request)


def run_workload(name: str, settings: Settings, google_python: pathlib.Path | None, record: dict) -> Workload:
    """Sweep and time every selected optimizer on workload ``name``; store the results in ``record``."""
    workload = make_workload(name, stdlib_directory())
    steps = settings.steps or (QUICK_STEPS if settings.quick else workload.steps)
    entry = {
        "description": workload.description,
        "steps": steps,
        "learning_rates": list(workload.quick_learning_rates if settings.quick else workload.learning_rates),
        "seeds": list(range(settings.seeds)),
        "eval_every": _eval_every(steps),
        "runs": {},
        "timing": {},
    }
    if isinstance(workload, CharacterLM):
        entry["text"] = {"stdlib": workload.stdlib, "files": workload.files, "characters": workload.characters}

    for optimizer in settings.optimizers:
        if optimizer in optimizers.IN_PROCESS:
            tx = optimizers.IN_PROCESS[optimizer](training.schedule(steps), workload)
            entry["runs"][optimizer], entry["timing"][optimizer] = training.sweep_and_time(
                workload,
                optimizer,
                tx,
                entry["learning_rates"],
                entry["seeds"],
                steps,
                entry["eval_every"],
                settings.timing_pass(),
            )

    google = [optimizer for optimizer in settings.optimizers if optimizer in optimizers.GOOGLE]
    if google and google_python:
        # A failure there leaves the other optimizers' results of a long run
        # intact; the error is printed and kept in the record.
        try:
            result = _run_google(workload, google, entry, settings, google_python)
        except RuntimeError as error:
            entry["google_error"] = str(error)
            print(f"Skipping {', '.join(google)} on {name}: {error}", flush=True)
        else:
            record["environments"]["google"] = result["versions"]
            entry["runs"].update(result["runs"])
            entry["timing"].update(result["timing"])
            entry["google_environment_adamw_timing"] = result["adamw_timing"]

    record["workloads"][name] = entry
    return workload


def measure_overhead(workload: CharacterLM, settings: Settings) -> dict:
    """Step time of Shampoo against AdamW on the Transformer, for several root-refresh intervals.

    Both run at learning rate 1e-3, which trains stably for both. Each timed
    block spans at least one refresh interval.
    """
    timing = settings.timing_pass()
    schedule = training.schedule(workload.steps)

    def step_seconds(tx, block_steps):
        compiled, _ = training.compile_step(workload, tx)
        return training.time_steps(workload, tx, compiled, 1e-3, **{**timing, "block_steps": block_steps})[
            "step_seconds"
        ]

    adamw = step_seconds(optimizers.IN_PROCESS["adamw"](schedule, workload), timing["block_steps"])
    rows = []
    for interval in settings.refresh_intervals():
        tx = optimizers.shampoo(schedule, workload, preconditioning_compute_steps=interval)
        shampoo = step_seconds(tx, max(timing["block_steps"], interval))
        rows.append(
            {
                "preconditioning_compute_steps": interval,
                "shampoo_step_seconds": shampoo,
                "adamw_step_seconds": adamw,
                "ratio": shampoo / adamw,
            }
        )
        print(f"overhead: roots every {interval} steps, ratio {shampoo / adamw:.2f}", flush=True)
    return {"learning_rate": 1e-3, "rows": rows}


def run(settings: Settings) -> dict:
    """Run the whole comparison; write the JSON record and plots; return the record."""
    start = time.perf_counter()
    record = {
        "quick": settings.quick,
        "environments": {
            "main": {
                **environments.package_versions(environments.MAIN_PACKAGES),
                "backend": jax.default_backend(),
                "machine": platform.machine(),
            },
            "google": None,
        },
        "google_skipped": None,
        "timing_pass": settings.timing_pass(),
        "workloads": {},
        "compile_time": None,
        "overhead": None,
    }

    google_python = None
    if any(optimizer in optimizers.GOOGLE for optimizer in settings.optimizers):
        google_python = environments.google_python(settings.google_venv)
        if google_python is None:
            record["google_skipped"] = (
                f"no Google environment at {settings.google_venv}; create it with "
                f"`{environments.SETUP_COMMAND}` to include Google's distributed_shampoo"
            )
            print(f"Skipping {', '.join(optimizers.GOOGLE)}: {record['google_skipped']}", flush=True)

    built = {}
    for name in settings.workloads:
        built[name] = run_workload(name, settings, google_python, record)

    if {"adamw", "shampoo"} <= set(settings.optimizers):
        width = 128
        rows = compile_time.measure(settings.compile_depths(), width, settings.compile_repeats())
        record["compile_time"] = {"width": width, "repeats": settings.compile_repeats(), "rows": rows}
        if CharacterLM.name in built:
            record["overhead"] = measure_overhead(built[CharacterLM.name], settings)

    for workload in record["workloads"].values():
        workload["summary"] = report.summarize_workload(workload)
    record["goals"] = report.goals(record)
    record["total_seconds"] = round(time.perf_counter() - start, 1)

    save(record, settings)
    report.print_report(record)
    print(f"\nTotal {record['total_seconds']:.0f} s", flush=True)
    return record


def output_paths(settings: Settings) -> tuple[pathlib.Path, dict[str, pathlib.Path]]:
    suffix = "_quick" if settings.quick else ""
    record_path = settings.output_dir / f"comparison{suffix}.json"
    plots = {name: settings.output_dir / f"comparison_{name}{suffix}.png" for name in settings.workloads}
    return record_path, plots


def compact_json(record: dict) -> str:
    """Indented JSON with each list of numbers on one line, so loss curves stay readable."""
    number_lists = []

    def hide_number_lists(value):
        # A list of numbers becomes a placeholder string with NUL characters,
        # which no value of the record contains, and is written compactly below.
        if isinstance(value, dict):
            return {key: hide_number_lists(item) for key, item in value.items()}
        if isinstance(value, list):
            if all(item is None or isinstance(item, (int, float)) for item in value):
                number_lists.append(value)
                return f"\0{len(number_lists) - 1}\0"
            return [hide_number_lists(item) for item in value]
        return value

    text = json.dumps(hide_number_lists(record), indent=1)
    return re.sub(r'"\\u0000(\d+)\\u0000"', lambda match: json.dumps(number_lists[int(match.group(1))]), text)


def save(record: dict, settings: Settings) -> None:
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    record_path, plots = output_paths(settings)
    record_path.write_text(compact_json(record) + "\n")
    for name, path in plots.items():
        report.plot_workload(name, record["workloads"][name], path)
    print(f"Saved {record_path} and {len(plots)} plot(s) in {settings.output_dir}", flush=True)
