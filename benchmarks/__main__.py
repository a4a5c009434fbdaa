"""Command line of the optimizer comparison; see ``benchmarks/__init__.py``."""

import argparse
import json
import pathlib
import sys

from benchmarks import environments, optimizers, report, runner
from benchmarks.workloads import WORKLOADS

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare optimizers' time to result: learning-rate sweeps over seeds, step and compile "
        "times, compile time against depth, and Shampoo's overhead over AdamW.",
    )
    default_steps = ", ".join(f"{name} {workload.steps}" for name, workload in WORKLOADS.items())

    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS), help="default: all")
    parser.add_argument(
        "--optimizers", nargs="+", choices=list(optimizers.ALL), default=list(optimizers.ALL), help="default: all"
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per learning rate (default 3, or 1 with --quick)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help=f"training steps of every workload (default: {default_steps})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="30 steps, 2 learning rates, 1 seed and short timing passes: a smoke test"
    )

    parser.add_argument("--output-dir", type=pathlib.Path, default=RESULTS, help="where the JSON record and plots go")
    parser.add_argument(
        "--google-venv",
        type=pathlib.Path,
        default=environments.GOOGLE_VENV,
        help="virtual environment with Google's distributed_shampoo (made by benchmarks/setup_google_venv.sh)",
    )
    parser.add_argument(
        "--report", type=pathlib.Path, metavar="FILE", help="print the report of a saved JSON record and exit"
    )

    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    for name in ("seeds", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive int, got {value}")
    return args


def main(argv=None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        record = json.loads(args.report.read_text())
        report.print_report(record)
        return record

    settings = runner.Settings(
        workloads=tuple(args.workloads),
        optimizers=tuple(args.optimizers),
        seeds=args.seeds,
        steps=args.steps,
        quick=args.quick,
        output_dir=args.output_dir,
        google_venv=args.google_venv,
    )
    return runner.run(settings)


if __name__ == "__main__":
    main()
