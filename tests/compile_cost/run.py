#!/usr/bin/env python3
"""The compile cost of `#[derive(ModuleTree)]` against serde's `#[derive(Serialize)]`.

Generates, in a scratch workspace, the same types twice (once with each derive):

- `models`: 200 model-like structs of 3 to 8 fields each (other structs, `Vec`s and `Option`s
  of them, and leaves tagged `#[layer(kind = "linear")]`);
- `chain{D}`: the doubling chain `S{i} { a: S{i-1}, b: S{i-1} }` to depth D (20 and 24), whose
  paths double at every level while its types grow by one.

With the dependencies built first, it times non-incremental debug `cargo build` and
`cargo check` of each crate alone (the best of `--runs` runs), and prints the times, the ratios,
the expansion size per struct and the debug rlib's size. See README.md.
"""

import argparse
import os
import random
import resource
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STRUCTS = 200


# How many structs sit at each depth: leaves' owners first, the model-sized types last. A struct
# holds only types of lower levels, so the tree is as shallow as a model's (about 4 levels of
# structs, plus their containers) and each type is reached by a few paths, not by thousands.
LEVELS = [100, 60, 30, 10]


def models(derive: str) -> str:
    """200 structs, each with 3 to 8 fields: leaves, and structs of the levels below."""
    rng = random.Random(14)
    lines = ["#![allow(dead_code)]", header(derive)]
    start = 0
    for level, count in enumerate(LEVELS):
        for i in range(start, start + count):
            lines.append(f"#[derive({derive_name(derive)})]")
            lines.append(f"pub struct M{i} {{")
            for k in range(rng.randint(3, 8)):
                if level == 0 or rng.random() < 0.4:
                    if derive == "tree":
                        lines.append('    #[layer(kind = "linear")]')
                    lines.append(f"    pub f{k}: Vec<f32>,")
                else:
                    below = sum(LEVELS[: level - 1])
                    j = rng.randrange(below, start)
                    ty = rng.choice([f"M{j}", f"Vec<M{j}>", f"Option<M{j}>"])
                    lines.append(f"    pub f{k}: {ty},")
            lines.append("}")
        start += count
    return "\n".join(lines) + "\n"


def chain(derive: str, depth: int) -> str:
    """`S0` a leaf, then `S{i} { a: S{i-1}, b: S{i-1} }` up to `S{depth}`."""
    lines = ["#![allow(dead_code)]", header(derive), f"#[derive({derive_name(derive)})]"]
    if derive == "tree":
        lines.append('#[layer(kind = "linear")]')
    lines.append("pub struct S0 { pub weight: Vec<f32> }")
    for i in range(1, depth + 1):
        lines.append(f"#[derive({derive_name(derive)})]")
        lines.append(f"pub struct S{i} {{ pub a: S{i - 1}, pub b: S{i - 1} }}")
    return "\n".join(lines) + "\n"


def header(derive: str) -> str:
    return "use moduletree::ModuleTree;" if derive == "tree" else "use serde::Serialize;"


def derive_name(derive: str) -> str:
    return "ModuleTree" if derive == "tree" else "Serialize"


def write_workspace(root: Path, depths: list[int]) -> list[str]:
    crates = {}
    for derive in ("tree", "serde"):
        crates[f"models_{derive}"] = models(derive)
        for depth in depths:
            crates[f"chain{depth}_{derive}"] = chain(derive, depth)
    members = ", ".join(f'"{name}"' for name in crates)
    (root / "Cargo.toml").write_text(
        f'[workspace]\nresolver = "3"\nmembers = [{members}]\n\n'
        "[profile.dev]\nincremental = false\n"
    )
    shutil.copy(REPO / "rust-toolchain.toml", root / "rust-toolchain.toml")
    lock = REPO / "Cargo.lock"
    if lock.exists():
        shutil.copy(lock, root / "Cargo.lock")
    for name, source in crates.items():
        (root / name / "src").mkdir(parents=True)
        (root / name / "Cargo.toml").write_text(
            f'[package]\nname = "{name}"\nversion = "0.0.0"\nedition = "2024"\npublish = false\n\n'
            "[dependencies]\n"
            f'moduletree = {{ path = "{REPO / "core"}" }}\n'
            'serde = { version = "1", features = ["derive"] }\n'
        )
        (root / name / "src" / "lib.rs").write_text(source)
    return list(crates)


def cargo(root: Path, env: dict, *args: str, timeout: float | None = None) -> tuple | None:
    """Runs cargo in `root`; its wall time and CPU time (user + system, cargo and rustc) in
    seconds, or `None` past `timeout`. The CPU time is the steadier figure on a loaded machine."""
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        subprocess.run(
            ["cargo", *args],
            cwd=root,
            env=env,
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as error:
        sys.exit(f"cargo {' '.join(args)} failed:\n{error.stderr.decode()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - start, cpu


def timed(root: Path, env: dict, command: str, crate: str, runs: int, timeout: float) -> tuple | None:
    """The best of `runs` (wall, CPU) times of `cargo COMMAND -p CRATE` with only the crate out
    of date, each the least of its runs."""
    times = []
    for _ in range(runs):
        (root / crate / "src" / "lib.rs").touch()
        took = cargo(root, env, command, "-q", "-p", crate, timeout=timeout)
        if took is None:
            return None
        times.append(took)
    return min(wall for wall, _ in times), min(cpu for _, cpu in times)


TOKEN = re.compile(
    r"""
      r\#*"  # raw strings are not generated here; a marker keeps the scanner total
    | "(?:\\.|[^"\\])*"
    | '(?:\\.|[^'\\])'
    | '[A-Za-z_][A-Za-z0-9_]*
    | [A-Za-z_][A-Za-z0-9_]*
    | [0-9][A-Za-z0-9_.]*
    | ::|->|=>|==|!=|<=|>=|&&|\|\||\.\.=|\.\.\.|\.\.|\+=|-=|\*=|/=|<<|>>
    | \S
    """,
    re.VERBOSE,
)


def tokens(text: str) -> int:
    text = re.sub(r"//[^\n]*", "", text)
    return len(TOKEN.findall(text))


def expansion_per_struct(root: Path, env: dict, crate: str, structs: int) -> float:
    """Tokens the derive adds per struct: the expanded crate's minus the source's.

    The expanded source comes from rustc's `-Zunpretty=expanded`, which cargo-expand also uses;
    `RUSTC_BOOTSTRAP=1` lets the pinned stable compiler print it. Only this measurement uses it.
    """
    env = dict(env, RUSTC_BOOTSTRAP="1")
    result = subprocess.run(
        ["cargo", "rustc", "-q", "-p", crate, "--profile", "check", "--", "-Zunpretty=expanded"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    source = (root / crate / "src" / "lib.rs").read_text()
    return (tokens(result.stdout) - tokens(source)) / structs


def rlib_size(target: Path, crate: str) -> int:
    rlibs = sorted(
        (target / "debug" / "deps").glob(f"lib{crate}-*.rlib"), key=lambda path: path.stat().st_mtime
    )
    return rlibs[-1].stat().st_size if rlibs else 0


def seconds(value: tuple | None, timeout: float) -> str:
    """`wall s (cpu s CPU)`."""
    if value is None:
        return f"> {timeout:.0f} s"
    return f"{value[0]:.2f} s ({value[1]:.2f} s CPU)"


def ratio(left, right) -> str:
    """`left / right`, of (wall, CPU) pairs as both ratios."""
    if left is None or right is None:
        return "-"
    if isinstance(left, tuple):
        return f"{left[0] / right[0]:.2f}× ({left[1] / right[1]:.2f}× CPU)"
    return f"{left / right:.2f}×" if right else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per figure (best kept)")
    parser.add_argument("--depths", type=int, nargs="*", default=[20, 24], help="chain depths")
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a build gives up")
    parser.add_argument(
        "--target-dir",
        type=Path,
        help="reuse this target dir (kept); by default a scratch one is made and removed",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch workspace")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="moduletree-compile-cost-"))
    try:
        target = args.target_dir.resolve() if args.target_dir else scratch / "target"
        env = dict(os.environ, CARGO_TARGET_DIR=str(target), CARGO_INCREMENTAL="0")
        crates = write_workspace(scratch, args.depths)
        print(f"workspace {scratch}, target {target}", file=sys.stderr)
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print("building the dependencies…", file=sys.stderr)
        for command in ("build", "check"):
            cargo(scratch, env, command, "-q", "-p", "models_tree", "-p", "models_serde")
        results = {}
        for crate in crates:
            chained = crate.startswith("chain")
            for command in ("check", "build"):
                runs = 1 if chained else args.runs
                results[crate, command] = timed(scratch, env, command, crate, runs, args.timeout)
                print(f"  {crate} {command}: {seconds(results[crate, command], args.timeout)}",
                      file=sys.stderr)
        print(f"\nuptime before: {load}")
        print(f"uptime after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
        print(f"\n{STRUCTS} model-like structs (best of {args.runs}):\n")
        print("| | ModuleTree | serde `Serialize` | ratio |")
        print("|---|---|---|---|")
        for command in ("build", "check"):
            tree, serde = results["models_tree", command], results["models_serde", command]
            print(f"| `cargo {command}` | {seconds(tree, args.timeout)} | "
                  f"{seconds(serde, args.timeout)} | {ratio(tree, serde)} |")
        tree = expansion_per_struct(scratch, env, "models_tree", STRUCTS)
        serde = expansion_per_struct(scratch, env, "models_serde", STRUCTS)
        print(f"| expansion per struct | {tree:,.0f} tokens | {serde:,.0f} | {ratio(tree, serde)} |")
        tree, serde = rlib_size(target, "models_tree"), rlib_size(target, "models_serde")
        print(f"| debug rlib | {tree / 1e6:.2f} MB | {serde / 1e6:.2f} MB | {ratio(tree, serde)} |")
        if args.depths:
            print("\nthe doubling chain (one run each):\n")
            print("| depth | | ModuleTree | serde `Serialize` |")
            print("|---|---|---|---|")
            for depth in args.depths:
                for command in ("check", "build"):
                    tree = results[f"chain{depth}_tree", command]
                    serde = results[f"chain{depth}_serde", command]
                    print(f"| {depth} | `cargo {command}` | {seconds(tree, args.timeout)} | "
                          f"{seconds(serde, args.timeout)} |")
    finally:
        if args.keep:
            print(f"kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
