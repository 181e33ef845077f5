"""The README's Python snippets run as written (issue 26, item 9).

Every ```python block of README.md (indented ones inside list items too) runs, in the README's
order, in one namespace, in an empty temporary folder that links the repository's `experiments/`
(so a snippet may read "experiments/quickstart.toml" and write "my_sae"), at one torch thread.
A block that is not meant to run uses another fence: ```text, ```bash, ```toml.

Shrink rules, so that the whole README runs in well under a minute (README authors: write the
real sizes; the test rewrites these, and only these):
- a keyword argument `<name>steps=<number>` (steps=10_000, orthogonalize_steps=100) becomes 20;
- a keyword argument `<name>samples=<number>` or `<name>samples=<number> * <number>`
  (n_samples=20_000, total_training_samples=300 * 1024) becomes 2048;
- a keyword argument `d_sae=<number>` above 256 becomes 256;
- a TOML file read through `toysuper.sweep.config.load` gets each `steps` and `n_samples` key
  it sets itself overridden to 20 and 2048.
Anything else (other widths, batch sizes, feature counts, a default such as evaluate's n_samples)
runs at the README's size, so keep it small enough for a CPU or write it out where a rule shrinks it.
"""

import os
import re
import traceback
from pathlib import Path

import pytest
import torch

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<tag>[\w+-]*)\s*$")
PYTHON_TAGS = {"python", "py", "python3"}
SHRINK = [(re.compile(r"\b(\w*steps)=[\d_]+\b"), lambda m: f"{m[1]}=20"),
          (re.compile(r"\b(\w*samples)=[\d_]+(?:\s*\*\s*[\d_]+)*"), lambda m: f"{m[1]}=2048"),
          (re.compile(r"\bd_sae=([\d_]+)\b"), lambda m: f"d_sae={min(int(m[1]), 256)}")]
SHRINK_TOML = {"steps": 20, "n_samples": 2048}


def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number of the opening fence, its tag, the dedented code) for every fenced block."""
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, start = opening["indent"], index
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            index += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[start + 1:index]]
        blocks.append((start + 1, opening["tag"], "\n".join(body) + "\n"))
        index += 1
    return blocks


def shrink(code: str) -> str:
    for pattern, replacement in SHRINK:
        code = pattern.sub(replacement, code)
    return code


BLOCKS = [(line, code) for line, tag, code in fenced_blocks(README.read_text()) if tag in PYTHON_TAGS]


def _shrunk_load(load):
    """config.load with the file's own steps and n_samples keys overridden (see the shrink rules)."""

    def shrunk(path, overrides=()):
        user = tomllib.loads(Path(path).read_text())
        extra = [f"{section}.{key}={SHRINK_TOML[key]}" for section, table in user.items() if isinstance(table, dict)
                 for key in table if key in SHRINK_TOML]
        return load(path, [*overrides, *extra])

    return shrunk


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[int, str | None]:
    """Run every block in order in one namespace: its line -> None, or the traceback it raised."""
    from toysuper.sweep import config as config_io

    folder = tmp_path_factory.mktemp("readme")
    (folder / "experiments").symlink_to(ROOT / "experiments")
    cwd, threads, load, env = os.getcwd(), torch.get_num_threads(), config_io.load, os.environ.get("OMP_NUM_THREADS")
    namespace, results = {"__name__": "__readme__"}, {}
    os.chdir(folder)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    config_io.load = _shrunk_load(load)
    try:
        for line, code in BLOCKS:
            try:
                exec(compile(shrink(code), f"README.md:{line}", "exec"), namespace)
                results[line] = None
            except Exception:  # noqa: BLE001 - every failure is reported by its block's test
                results[line] = traceback.format_exc(limit=-4)
    finally:
        config_io.load = load
        os.chdir(cwd)
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env
    return results


@pytest.mark.parametrize("line", [line for line, _ in BLOCKS], ids=lambda line: f"README.md:{line}")
def test_the_readme_block_runs(outcomes, line):
    if outcomes[line] is not None:
        pytest.fail(f"the ```python block at README.md:{line} raised:\n{outcomes[line]}", pytrace=False)


def test_the_readme_has_python_blocks_and_every_fence_names_its_language():
    blocks = fenced_blocks(README.read_text())
    assert BLOCKS, "README.md has no ```python block to run"
    untagged = [line for line, tag, _ in blocks if not tag]
    assert not untagged, f"README.md: fences at lines {untagged} name no language (python runs; text, bash, toml do not)"


def test_the_shrink_rules():
    assert shrink("train(m, steps=10_000, orthogonalize_steps=100, log_every=100)") == \
        "train(m, steps=20, orthogonalize_steps=20, log_every=100)"
    assert shrink("evaluate(s, n_samples=20_000); Config(total_training_samples=300 * 1024, lr=3e-3)") == \
        "evaluate(s, n_samples=2048); Config(total_training_samples=2048, lr=3e-3)"
    assert shrink("SAE(d_hidden=64, d_sae=4_096, k=25); Config(d_sae=96)") == "SAE(d_hidden=64, d_sae=256, k=25); Config(d_sae=96)"
    assert fenced_blocks("a\n  ```python\n  x = 1\n    y = 2\n  ```\n```text\nz\n```\n") == \
        [(2, "python", "x = 1\n  y = 2\n"), (6, "text", "z\n")]
