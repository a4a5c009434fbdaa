"""The documentation site builds without warnings, and its examples run."""

import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Pages whose Python blocks are run, in order, in one namespace per page.
# The other pages hold snippets that need a user's own params and loss_fn.
RUNNABLE_PAGES = ["guide.md", "checkpointing.md"]

# A fenced Python block, also one indented inside a list item.
PYTHON_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def python_blocks(markdown: str) -> list[str]:
    blocks = []
    for match in PYTHON_BLOCK.finditer(markdown):
        indent = len(match.group(1))
        lines = match.group(2).splitlines()
        blocks.append("\n".join(line[indent:] for line in lines))
    return blocks


def test_docs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -e '.[docs]'")

    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    api_page = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("shampoo", "scale_by_shampoo", "ShampooState", "root_diagnostics", "matrix_inverse_pth_root"):
        assert f'id="shampoo_optax.{name}"' in api_page, name


@pytest.mark.parametrize("page_name", RUNNABLE_PAGES)
def test_docs_examples_run(page_name, tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / "docs" / page_name).read_text())
    assert blocks, f"docs/{page_name} has no Python block"
    # The checkpointing examples write their checkpoints to the working directory.
    monkeypatch.chdir(tmp_path)

    namespace = {"__name__": f"docs_{page_name.removesuffix('.md')}"}
    for number, source in enumerate(blocks, start=1):
        code = compile(source, f"docs/{page_name}, Python block {number}", "exec")
        exec(code, namespace)


def test_python_blocks_inside_list_items():
    page = "- item\n\n    ```python\n    x = 1\n    ```\n\n```bash\nls\n```\n\n```python\ny = 2\n```\n"

    assert python_blocks(page) == ["x = 1", "y = 2"]
