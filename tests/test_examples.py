"""The examples run end to end in their quick mode."""

import importlib.util
import json
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"
LINEN_EXAMPLE = EXAMPLE.with_name("train_digits_linen.py")


def load_example(path: pathlib.Path):
    """Import an example script as a module, by its file path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_quick_mode(tmp_path):
    summary = load_example(EXAMPLE).main(["--quick", "--output-dir", str(tmp_path)])

    assert (tmp_path / "digits_loss.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "digits_summary.json").read_text()) == summary
    assert set(summary) == {"adamw", "shampoo"}
    for name, row in summary.items():
        # 30 steps from chance (0.1) reach well above it for both optimizers.
        assert row["test_accuracy"] > 0.4, name
        assert row["final_loss"] < 2.2, name


def test_linen_example_quick_mode(tmp_path):
    summary = load_example(LINEN_EXAMPLE).main(["--quick", "--output-dir", str(tmp_path)])

    assert (tmp_path / "digits_linen_loss.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "digits_linen_summary.json").read_text()) == summary
    assert summary["steps"] == 30
    # 30 steps from chance (0.1) reach well above it.
    assert summary["test_accuracy"] > 0.4
    assert summary["final_loss"] < 2.2
    assert summary["root_failures"] == 0
