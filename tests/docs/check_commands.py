#!/usr/bin/env python3
"""Runs the commands the docs show, as a reader would type them, where that
is cheap and changes nothing.

Every Markdown file git tracks is read; a command is a code span, or a line
of a fenced block (joined to the next where it ends in `\`), split at
`&&`, `;` and `|`, without its `# comment` and its leading `VAR=value`
settings.

- `cargo test …`: run exactly as written plus `--list` (after `--`, added
  when missing). That proves cargo and the test harness accept every
  argument, and each filter must list at least one test: a command that
  would run nothing fails.
- `cargo run -- openapi` and `cargo run -- settings-table`: run. With a
  redirect into a file (`> openapi/openapi.json`) the output must equal
  that file, so the command regenerates it unchanged.
- `cargo bench --bench NAME`: NAME must be a bench target (`cargo metadata`);
  not run (a release build and minutes of load).
- Any other `cargo …` (e.g. `cargo run -- ADDR`, which starts the service):
  not run, and listed as such.
- README.md names every test target, and says which are `test = false`
  (not run by `cargo test`).
- A script of this repository that a command names (`tests/…/run.sh`,
  `deploy/…`, `bench/…`, `.ci/…`, `*.sh` or `*.py`) must exist, and a
  `.sh` with a `#!` line must be executable (one without is sourced).

Prints one line per distinct command (ran, checked, or not run and why) and
a summary; exits non-zero on any failure. Needs the test targets built
(`cargo test --no-run`; CI runs it after `cargo test`). Run from anywhere:
`python3 tests/docs/check_commands.py`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
SCRIPT = re.compile(r"(?<![\w./-])((?:\.ci|tests|deploy|bench|examples)/[\w./-]+\.(?:sh|py)|\.ci/run)\b")
LISTED = re.compile(r": (?:test|bench)$", re.MULTILINE)
# `cargo run` subcommands that only print.
PRINTING = {"openapi", "settings-table"}


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.md"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    return [REPO / name for name in listed.split("\0") if name]


def snippets(text: str) -> list[str]:
    """The code of a page: each line of its fenced blocks, each code span."""
    found = []
    for match in FENCE.finditer(text):
        # A line ending in `\` goes on on the next one.
        found.extend(re.sub(r"\\\n\s*", " ", match.group(2)).splitlines())
    found.extend(CODE_SPAN.findall(FENCE.sub("", text)))
    return found


def split_on_operators(snippet: str) -> list[str]:
    """`snippet` cut at the shell's `&&`, `||`, `|` and `;`, except inside
    quotes (a regex such as `--re 'a|b'` is one word)."""
    parts, current, quote, at = [], [], None, 0
    while at < len(snippet):
        char = snippet[at]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif snippet.startswith(("&&", "||"), at):
            parts.append("".join(current))
            current, at = [], at + 2
            continue
        elif char in "|;":
            parts.append("".join(current))
            current, at = [], at + 1
            continue
        current.append(char)
        at += 1
    parts.append("".join(current))
    return parts


def commands(snippet: str) -> list[str]:
    """The commands of one snippet, comment and settings dropped."""
    snippet = re.sub(r"(^|\s)#.*$", "", snippet)
    found = []
    for part in split_on_operators(snippet):
        words = part.strip().split()
        while words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        if words:
            found.append(" ".join(words))
    return found


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True)


def crate_targets() -> list[dict]:
    """The crate's targets, as `cargo metadata` describes them."""
    meta = json.loads(run(["cargo", "metadata", "--no-deps", "--format-version", "1"]).stdout)
    root = next(p for p in meta["packages"] if Path(p["manifest_path"]).parent == REPO)
    return root["targets"]


def targets() -> dict[str, set[str]]:
    """The crate's targets by kind: {"test": {...}, "bench": {...}, ...}."""
    kinds: dict[str, set[str]] = {}
    for target in crate_targets():
        for kind in target["kind"]:
            kinds.setdefault(kind, set()).add(target["name"])
    return kinds


def readme_says_what_cargo_test_runs() -> list[str]:
    """README.md names each test target: those `cargo test` runs, and, with
    `test = false`, those it does not."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    problems = []
    for target in crate_targets():
        if "test" not in target["kind"]:
            continue
        name = target["name"]
        if f"`{name}`" not in readme:
            problems.append(f"README.md does not name the test target `{name}`")
        elif not target["test"] and not re.search(rf"`{name}` \(`test = false`", readme):
            problems.append(f"README.md does not say `{name}` is `test = false`")
    return problems


def check_cargo(command: str, kinds: dict[str, set[str]]) -> tuple[bool, str]:
    try:
        words = shlex.split(command)
    except ValueError as err:
        return False, f"cannot be split into words: {err}"
    sub = words[1] if len(words) > 1 else ""
    if sub == "test":
        args = words[2:]
        cargo_args, harness_args = args, []
        if "--" in args:
            at = args.index("--")
            cargo_args, harness_args = args[:at], args[at + 1 :]
        listed = run(["cargo", "test", "--locked", "-q", *cargo_args, "--", *harness_args, "--list"])
        if listed.returncode != 0:
            return False, f"cargo refused it: {(listed.stderr or listed.stdout).strip()[-600:]}"
        count = len(LISTED.findall(listed.stdout))
        if count == 0:
            return False, "lists no test: its filter matches nothing"
        return True, f"ran with --list: {count} tests"
    if sub == "bench":
        name = words[words.index("--bench") + 1] if "--bench" in words else None
        if name is None:
            return True, "not run (benchmarks: a release build and minutes of load)"
        if name not in kinds.get("bench", set()):
            return False, f"no bench target {name!r} (bench targets: {sorted(kinds.get('bench', []))})"
        return True, f"checked: bench target {name!r} exists; not run (a release build and minutes of load)"
    if sub == "run" and "--" in words:
        rest = words[words.index("--") + 1 :]
        if rest and rest[0] in PRINTING:
            target = None
            if ">" in rest:
                target = rest[rest.index(">") + 1]
                rest = rest[: rest.index(">")]
            printed = run(["cargo", "run", "--locked", "-q", "--", *rest])
            if printed.returncode != 0 or not printed.stdout.strip():
                return False, f"failed: {(printed.stderr or printed.stdout).strip()[-600:]}"
            if target is not None:
                committed = (REPO / target).read_text(encoding="utf-8")
                if printed.stdout.strip() != committed.strip():
                    return False, f"prints something other than the committed {target}"
                return True, f"ran: prints {target} as committed"
            return True, f"ran: {len(printed.stdout.splitlines())} lines"
    return True, "not run (not a cheap command without side effects)"


def main() -> int:
    failures = 0
    seen: dict[str, list[str]] = {}
    scripts: dict[str, list[str]] = {}
    for page in markdown_files():
        where = str(page.relative_to(REPO))
        for snippet in snippets(page.read_text(encoding="utf-8")):
            for script in SCRIPT.findall(snippet):
                scripts.setdefault(script, []).append(where)
            for command in commands(snippet):
                if command.startswith("cargo "):
                    seen.setdefault(command, []).append(where)
    kinds = targets()
    for command, pages in sorted(seen.items()):
        ok, note = check_cargo(command, kinds)
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} `{command}` ({', '.join(sorted(set(pages)))}): {note}")
    for script, pages in sorted(scripts.items()):
        path = REPO / script
        problem = None
        if not path.is_file():
            problem = "does not exist"
        elif (
            script.endswith(".sh")
            and path.read_text(encoding="utf-8").startswith("#!")
            and not os.access(path, os.X_OK)
        ):
            problem = "is not executable"
        if problem:
            failures += 1
            print(f"FAIL {script} ({', '.join(sorted(set(pages)))}) {problem}")
    for problem in readme_says_what_cargo_test_runs():
        failures += 1
        print(f"FAIL {problem}")
    print(
        f"docs commands: {len(seen)} cargo commands, {len(scripts)} scripts named; "
        f"{failures} failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
