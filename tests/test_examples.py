"""The main example runs end to end in its quick mode."""

import importlib.util
import json
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_quick_mode(tmp_path):
    summary = load_example().main(["--quick", "--output-dir", str(tmp_path)])

    assert (tmp_path / "digits_loss.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "digits_summary.json").read_text()) == summary
    assert set(summary) == {"adamw", "shampoo"}
    for name, row in summary.items():
        # 30 steps from chance (0.1) reach well above it for both optimizers.
        assert row["test_accuracy"] > 0.4, name
        assert row["final_loss"] < 2.2, name
