"""README.md stays true: its set-up commands, its links and every one of its Python blocks.

The Python blocks run in order in one fresh Python process, in an empty temporary
directory, as a reader would paste them into one session (a section may use what an
earlier one defined). ``TFPRIORS_QUICK=1`` (documented in the README, read by its
first block) turns the long trainings into one-epoch runs.
"""

import os
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
FENCE = re.compile(r"^```(\w*)\s*$")
# Files of this repository that the README names (links, backticks, commands).
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:examples|bench|docs|mobile|custom_ops|tests|fuzz)/[\w./-]*[\w])"
    r"|(?<![\w/.-])([A-Z]+\.md)\b"
)
README_SECONDS = 600


def fenced_blocks(path=README):
    """``(language, first code line number, code)`` of every fenced block of ``path``."""
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    blocks, language, start, body = [], None, 0, []
    for number, line in enumerate(lines, start=1):
        match = FENCE.match(line)
        if language is None and match:
            language, start, body = match.group(1), number + 1, []
        elif language is not None and line.strip() == "```":
            blocks.append((language, start, "\n".join(body) + "\n"))
            language = None
        elif language is not None:
            body.append(line)
    assert language is None, f"README.md: the block opened at line {start - 1} is not closed"
    return blocks


def python_blocks():
    return [(start, code) for language, start, code in fenced_blocks() if language == "python"]


def test_readme_opens_with_the_two_setup_commands():
    with open(README, encoding="utf-8") as file:
        text = file.read()
    first_block = fenced_blocks()[0]
    assert text.index("```") < text.index("\n## "), "the set-up block must come first"
    commands = [line.split("#")[0].strip() for line in first_block[2].splitlines()]
    assert commands == ["make demo", "make test"]


def test_every_python_block_compiles():
    blocks = python_blocks()
    assert len(blocks) >= 10  # the tour's sections
    for start, code in blocks:
        # Padded so that a syntax error names the README's own line.
        compile("\n" * (start - 1) + code, README, "exec")


def test_named_repository_files_exist():
    with open(README, encoding="utf-8") as file:
        text = file.read()
    named = {a or b for a, b in REPO_PATH.findall(text)}
    named = {path for path in named if "*" not in path and not path.startswith("bench/results/")}
    assert "RELIABILITY.md" in named and "examples/tta_digits.py" in named  # the regex works
    missing = sorted(path for path in named if not os.path.exists(os.path.join(ROOT, path)))
    assert not missing, f"README.md names files that are not in the repository: {missing}"
    linked = re.findall(r"\]\(([^)#\s]+)", text)  # markdown links and images
    missing = [p for p in linked if "://" not in p and not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"README.md links to missing files: {missing}"


# Runs the blocks one after the other in one namespace; a failure names the block's
# README line (the code is padded so that tracebacks show README.md line numbers).
DRIVER = textwrap.dedent(
    """
    import sys, time, traceback
    blocks, namespace = eval(sys.stdin.read()), {"__name__": "__main__"}
    for start, code in blocks:
        began = time.perf_counter()
        try:
            exec(compile("\\n" * (start - 1) + code, sys.argv[1], "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print(f"README_BLOCK_FAILED {start}", flush=True)
            sys.exit(1)
        print(f"README_BLOCK_OK {start} {time.perf_counter() - began:.1f}s", flush=True)
    """
)


def run_blocks(blocks, cwd):
    """Runs ``[(first line, code), ...]`` as the README test does; the finished process."""
    env = dict(os.environ, TFPRIORS_QUICK="1", KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    try:
        return subprocess.run(
            [sys.executable, "-c", DRIVER, README],
            input=repr(blocks),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=README_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the README's code ran past {README_SECONDS} s:\n{error.stdout}")


def test_a_failing_block_is_named_by_its_readme_line(tmp_path):
    blocks = [(3, "value = 1\n"), (10, "\nassert value == 2, 'no'\n"), (20, "open('x', 'w')\n")]
    done = run_blocks(blocks, tmp_path)
    assert done.returncode == 1
    assert "README_BLOCK_OK 3" in done.stdout and "README_BLOCK_FAILED 10" in done.stdout
    assert 'README.md", line 11' in done.stderr and "AssertionError: no" in done.stderr
    assert not (tmp_path / "x").exists()  # nothing after the failure runs


def test_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks()
    done = run_blocks(blocks, tmp_path)
    failed = re.findall(r"README_BLOCK_FAILED (\d+)", done.stdout)
    assert done.returncode == 0, (
        f"README.md's Python block at line {failed[0] if failed else '?'} failed "
        f"(exit status {done.returncode}):\n{done.stderr[-6000:]}"
    )
    ran = [int(start) for start in re.findall(r"README_BLOCK_OK (\d+)", done.stdout)]
    assert ran == [start for start, _ in blocks]
