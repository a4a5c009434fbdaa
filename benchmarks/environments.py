"""The two Python environments of the benchmark, and the worker subprocess.

This project's optimizers run in the current interpreter. Google's
``distributed_shampoo`` (``precondition-opt`` 0.3.0) needs JAX 0.5.3, so it
runs in ``.venv-google`` (made by ``benchmarks/setup_google_venv.sh``) through
``benchmarks/google_worker.py``. This module imports only the standard
library, because the worker imports it too.
"""

import importlib.metadata
import json
import pathlib
import platform
import subprocess
import tempfile

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
GOOGLE_VENV = REPOSITORY / ".venv-google"
SETUP_COMMAND = "bash benchmarks/setup_google_venv.sh"

MAIN_PACKAGES = ("jax", "jaxlib", "optax", "numpy", "shampoo-optax", "mlxtend")
GOOGLE_PACKAGES = ("jax", "jaxlib", "optax", "flax", "chex", "numpy", "precondition-opt", "mlxtend")


def package_versions(packages) -> dict:
    """Python's version and each installed package's version (None if missing)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def google_python(venv: pathlib.Path = GOOGLE_VENV) -> pathlib.Path | None:
    """Return the Google environment's interpreter, or None if it was not created."""
    python = venv / "bin" / "python"
    return python if python.exists() else None


def run_google_worker(python: pathlib.Path, request: dict) -> dict:
    """Run ``request`` in the Google environment and return the worker's result.

    The worker prints its progress and errors to this process's stdout and
    stderr. Raises ``RuntimeError`` if the worker fails.
    """
    with tempfile.TemporaryDirectory() as directory:
        request_path = pathlib.Path(directory) / "request.json"
        result_path = pathlib.Path(directory) / "result.json"
        request_path.write_text(json.dumps(request))
        command = [str(python), "-m", "benchmarks.google_worker", str(request_path), str(result_path)]
        completed = subprocess.run(command, check=False, cwd=REPOSITORY)
        if completed.returncode != 0:
            raise RuntimeError(
                f"the Google worker failed with exit status {completed.returncode} on workload "
                f"{request['workload']!r}; its error is printed above. Recreate the environment with "
                f"`{SETUP_COMMAND}` if it is broken."
            )
        return json.loads(result_path.read_text())
