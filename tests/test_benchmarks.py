"""The optimizer comparison (python -m benchmarks) in its quick mode, and its parts.

These tests never use Google's environment: the quick run selects only this
environment's optimizers, and the skip test points at a missing one.
"""

import json

import jax
import numpy as np
import pytest

from benchmarks import __main__ as command
from benchmarks import optimizers, report, runner, training
from benchmarks.workloads import UNKNOWN_TOKEN, VOCABULARY, LeastSquares, encode, stdlib_directory, stdlib_source_paths

QUICK_WORKLOADS = ("least_squares", "digits")
LOCAL_OPTIMIZERS = ("adamw", "shampoo", "muon")


@pytest.fixture(scope="module")
def quick_record(tmp_path_factory):
    output = tmp_path_factory.mktemp("results")
    argv = ["--quick", "--workloads", *QUICK_WORKLOADS, "--optimizers", *LOCAL_OPTIMIZERS, "--output-dir", str(output)]
    return command.main(argv), output


def test_quick_run_writes_record_and_plots(quick_record):
    _, output = quick_record

    saved = json.loads((output / "comparison_quick.json").read_text())
    assert saved["workloads"].keys() == set(QUICK_WORKLOADS)
    assert saved["environments"]["main"]["jax"] == jax.__version__
    assert saved["environments"]["google"] is None
    for name in QUICK_WORKLOADS:
        assert (output / f"comparison_{name}_quick.png").stat().st_size > 10_000, name


def test_quick_run_sweeps_every_rate_and_seed(quick_record):
    record, _ = quick_record

    for name, workload in record["workloads"].items():
        assert workload["steps"] == runner.QUICK_STEPS
        assert len(workload["learning_rates"]) == 2
        for optimizer in LOCAL_OPTIMIZERS:
            runs = workload["runs"][optimizer]
            assert sorted(run["learning_rate"] for run in runs) == workload["learning_rates"], (name, optimizer)
            for run in runs:
                assert len(run["train_loss"]) == runner.QUICK_STEPS, (name, optimizer)
                assert run["eval_steps"][-1] == runner.QUICK_STEPS, (name, optimizer)
                assert not run["diverged"], (name, optimizer)


def test_quick_run_batches_identical_across_optimizers(quick_record):
    record, _ = quick_record

    # Same seed: same initial parameters and first batch, so the same loss
    # before any update.
    for name, workload in record["workloads"].items():
        first_losses = {optimizer: workload["runs"][optimizer][0]["train_loss"][0] for optimizer in LOCAL_OPTIMIZERS}
        assert len(set(first_losses.values())) == 1, (name, first_losses)


def test_quick_run_summary_fields(quick_record):
    record, _ = quick_record

    for name, workload in record["workloads"].items():
        summary = workload["summary"]
        assert summary["target_train_loss"] > 0, name
        for optimizer in LOCAL_OPTIMIZERS:
            row = summary["optimizers"][optimizer]
            assert row["learning_rate"] in workload["learning_rates"], (name, optimizer)
            assert row["final_validation_loss"]["min"] <= row["final_validation_loss"]["max"], (name, optimizer)
            assert row["step_seconds"] > 0, (name, optimizer)
            assert row["compile_seconds"] > 0, (name, optimizer)
            assert row["state_bytes"] > 0, (name, optimizer)
        # AdamW's own averaged curve ends at the target, so it reaches it.
        assert summary["optimizers"]["adamw"]["steps_to_target"] is not None, name
    assert record["workloads"]["digits"]["summary"]["optimizers"]["shampoo"]["final_validation_accuracy"]["mean"] > 0.3


def test_quick_run_compile_time_and_goals(quick_record):
    record, _ = quick_record

    assert [row["depth"] for row in record["compile_time"]["rows"]] == [2, 8, 32]
    # The Transformer was not selected, so its overhead figure is absent.
    assert record["overhead"] is None
    goals = {(entry["goal"], entry["workload"]) for entry in record["goals"]}
    assert ("Shampoo's compile time at 32 layers <= 1.5 x at 2 layers", None) in goals
    for entry in record["goals"]:
        assert entry["met"] in (True, False, None), entry
        assert entry["detail"], entry


def test_report_reprints_saved_record(quick_record, capsys):
    _, output = quick_record

    command.main(["--report", str(output / "comparison_quick.json")])

    printed = capsys.readouterr().out
    assert "Goals:" in printed
    assert "least_squares" in printed


def test_google_optimizers_skipped_without_venv(tmp_path, capsys):
    argv = ["--quick", "--steps", "12", "--workloads", "least_squares", "--optimizers", "adamw", "google_shampoo"]
    record = command.main([*argv, "--output-dir", str(tmp_path), "--google-venv", str(tmp_path / "missing")])

    assert "setup_google_venv.sh" in record["google_skipped"]
    assert "setup_google_venv.sh" in capsys.readouterr().out
    assert set(record["workloads"]["least_squares"]["runs"]) == {"adamw"}
    assert record["environments"]["google"] is None


def test_google_worker_failure_kept_in_record(tmp_path):
    # A stand-in for the Google environment whose interpreter always fails.
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\necho 'stand-in worker failed' >&2\nexit 3\n")
    python.chmod(0o755)
    argv = ["--quick", "--steps", "12", "--workloads", "least_squares", "--optimizers", "adamw", "google_shampoo"]

    record = command.main([*argv, "--output-dir", str(tmp_path), "--google-venv", str(tmp_path / "venv")])

    workload = record["workloads"]["least_squares"]
    assert "exit status 3" in workload["google_error"]
    assert set(workload["runs"]) == {"adamw"}


@pytest.mark.parametrize("name", LOCAL_OPTIMIZERS)
def test_scaled_updates_equal_built_rate(name):
    workload = LeastSquares(examples=256, validation_examples=16)
    steps, rate = 40, 0.05
    schedule = training.schedule(steps)

    def train(tx, scale):
        params, opt_state = training.initial_state(workload, tx, seed=0)
        step = jax.jit(training.make_train_step(workload, tx))
        rng = np.random.default_rng(0)
        # 15 steps pass Shampoo's first root refresh at step 10.
        for _ in range(15):
            params, opt_state, _ = step(params, opt_state, *workload.sample_batch(rng), scale)
        return params["w"]

    scaled = train(optimizers.IN_PROCESS[name](schedule, workload), rate)
    built = train(optimizers.IN_PROCESS[name](lambda count: rate * schedule(count), workload), 1.0)

    # Float32 rounding differs between the two orders of multiplication and
    # grows through 15 steps and a root refresh to about 5e-7; a wrong scale
    # would differ by the size of a step, about 1e-3.
    np.testing.assert_allclose(scaled, built, rtol=1e-4, atol=1e-5)


def test_ratio_goal_met_and_missed():
    met = report._ratio_goal("goal", "w", 0.45, 1.0, limit=0.6, strict=False)
    missed = report._ratio_goal("goal", "w", 0.9, 1.0, limit=0.6, strict=False)
    unmeasured = report._ratio_goal("goal", "w", None, 1.0, limit=0.6, strict=False)

    assert met["met"] is True
    assert "25% to spare" in met["detail"]
    assert missed["met"] is False
    assert "missed by 50%" in missed["detail"]
    assert unmeasured["met"] is None


def test_steps_to_target_uses_moving_average():
    curve = np.array([4.0, 3.0, 2.0, 1.0, 1.0, 1.0])
    averaged = report.moving_average(curve, 2)

    assert np.isnan(averaged[0])
    assert report.first_step_at_or_below(averaged, 1.5) == 4
    assert report.first_step_at_or_below(averaged, 0.5) is None


def test_stdlib_corpus_leaves_out_tests():
    root = stdlib_directory()
    paths = stdlib_source_paths(root)

    assert paths == sorted(paths)
    assert len(paths) > 500
    for path in paths:
        parts = path.relative_to(root).parts
        assert "test" not in parts, path
        assert "site-packages" not in parts, path


def test_encode_maps_other_characters_to_unknown():
    tokens = encode("a\tb\né")

    assert tokens.tolist() == [VOCABULARY.index("a"), 0, VOCABULARY.index("b"), 1, UNKNOWN_TOKEN]


def test_compact_json_round_trips():
    record = {"curve": [1.5, None, 2], "nested": [[1, 2], ["text  [1,  2]"]], "empty": []}

    text = runner.compact_json(record)

    assert json.loads(text) == record
    assert '"curve": [1.5, null, 2]' in text
