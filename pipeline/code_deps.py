"""Which project files a stage's code depends on, read from the source with `ast` (nothing is imported).

A stage's code is the transitive closure of the project modules its stage script imports:
top-level and function-level imports both count, and so does each package's `__init__.py`.

The DAG's first stage, `code`, runs `python -m pipeline.code_deps --out artifacts/code` whenever
any file under pipeline/ or stages/ changes. It writes one small file per stage script,
`artifacts/code/<script>.json`: the SHA-256 of every file of that script's closure. Each stage
depends on its script's file, so an edit reruns exactly the stages whose code it touches (a
file's bytes only change when its closure does), while dvc.lock holds one code entry per stage
instead of one per file (DVC rewrites the whole lock file after every stage: its size is most
of DVC's per-stage time).

    python -m pipeline.code_deps --changed   # which stage scripts' code differs from artifacts/code
    python -m pipeline.code_deps             # check that every stage depends on its code file

`dvc repro --dry` cannot see through the `code` stage (it does not run it): after a code edit,
`--changed` lists the stages that will rerun, besides their downstream stages.

The harvest fingerprint (which decides whether a partial store may be resumed) hashes the
same closure, so there is one list of "the code that computes activations".
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import shutil
import sys
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
"""Top-level packages of this project; imports of anything else are third-party."""
DVC_FILES = ("dvc.yaml", "dag/*/dvc.yaml")
"""The DAG's files: the root one and one per matrix family (dvc.yaml says why)."""
CODE_DIR = Path("artifacts/code")
"""Where the `code` stage writes each stage script's code file (relative to the repository)."""
_STAGE_MODULE = re.compile(r"python -m ((?:stages|pipeline)\.\w+)")
_CODE_DEP = re.compile(r"^(?:%s)/[\w/]*\.py$" % "|".join(PACKAGES))


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file of a project module ('pipeline.sites'), or None for a third-party one or a name
    that is not a module (e.g. a function in `from pipeline.sites import capturing`)."""
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(path: Path, module: str) -> set[str]:
    """Every module name an `import` statement anywhere in the file could refer to."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _with_parents(module: str) -> list[str]:
    """'pipeline.core.x' -> ['pipeline', 'pipeline.core', 'pipeline.core.x']: importing a module
    runs each enclosing package's __init__.py first."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def closure(module: str, root: Path = ROOT) -> tuple[str, ...]:
    """Repository-relative paths (sorted) of every project file that importing `module` runs."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in _with_parents(name):
            if candidate in seen:
                continue
            path = module_file(candidate, root)
            if path is None:
                continue
            seen[candidate] = path
            todo.extend(_imported_names(path, candidate))
    if module not in seen:
        raise FileNotFoundError(f"{module}: no such project module under {root}")
    return tuple(sorted(p.relative_to(root).as_posix() for p in seen.values()))


def code_hash(module: str, root: Path = ROOT) -> str:
    """Hash of the project code `module` runs (the closure its stage lists as deps): a partial
    result (a store, a checkpoint) written by other code is never resumed."""
    digest = hashlib.sha256()
    for path in closure(module, root):
        digest.update(path.encode())
        digest.update((root / path).read_bytes())
    return digest.hexdigest()[:16]


def dag_stages(root: Path = ROOT) -> dict[str, dict]:
    """Stage name, as `dvc repro -s` takes it ('dag/probes/dvc.yaml:probes' outside the root file),
    -> its definition, over every file of the DAG."""
    stages = {}
    for pattern in DVC_FILES:
        for path in sorted(root.glob(pattern)):
            prefix = "" if path.parent == root else f"{path.relative_to(root).as_posix()}:"
            stages.update({prefix + name: stage for name, stage in yaml.safe_load(path.read_text())["stages"].items()})
    return stages


def stage_modules(root: Path = ROOT) -> dict[str, str]:
    """Stage name -> the module its `cmd` runs ('python -m stages.x' or 'python -m pipeline.x')."""
    modules = {}
    for name, stage in dag_stages(root).items():
        match = _STAGE_MODULE.search(" ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"])
        if not match:
            raise ValueError(f"stage {name!r}: its cmd does not run 'python -m <module>'")
        modules[name] = match.group(1)
    return modules


def stage_scripts(root: Path = ROOT) -> list[str]:
    """Every stage script's module ('stages.probes'): the modules of stages/ that have a main()."""
    return sorted(f"stages.{p.stem}" for p in (root / "stages").glob("*.py") if "def main(" in p.read_text())


def code_file(module: str, out_dir: Path | str = CODE_DIR) -> Path:
    """The code file of a stage script: 'stages.probes' -> artifacts/code/probes.json."""
    return Path(out_dir) / f"{module.rpartition('.')[2]}.json"


def code_record(module: str, root: Path = ROOT) -> dict:
    """{module, files: {path: sha256}} of every file of the module's closure."""
    files = {path: hashlib.sha256((root / path).read_bytes()).hexdigest() for path in closure(module, root)}
    return {"module": module, "files": files}


def write_code_files(out_dir: Path, root: Path = ROOT) -> list[Path]:
    """One code file per stage script into `out_dir` (replaced as a whole)."""
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    written = []
    for module in stage_scripts(root):
        path = code_file(module, out_dir)
        path.write_text(json.dumps(code_record(module, root), indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def changed_scripts(out_dir: Path | str = CODE_DIR, root: Path = ROOT) -> dict[str, list[str]]:
    """Stage script -> the files of its closure that differ from its code file in `out_dir` (added,
    edited or removed); scripts whose code is unchanged are left out."""
    changed = {}
    for module in stage_scripts(root):
        path = root / code_file(module, out_dir)
        recorded = json.loads(path.read_text())["files"] if path.exists() else {}
        current = code_record(module, root)["files"]
        differ = sorted(p for p in set(recorded) | set(current) if recorded.get(p) != current.get(p))
        if differ:
            changed[module] = differ
    return changed


def problems(root: Path = ROOT) -> list[str]:
    """Each stage that does not depend on its script's code file, or that lists project source
    files directly (the code file stands for them)."""
    stages = dag_stages(root)
    found = []
    for name, module in stage_modules(root).items():
        deps = [str(d) for d in stages[name].get("deps", [])]
        if module == "pipeline.code_deps":  # the `code` stage itself: it depends on pipeline/ and stages/
            continue
        wanted = code_file(module).as_posix()
        if wanted not in deps:
            found.append(f"stage {name!r} ({module}) does not list {wanted} among its deps")
        for path in deps:
            if _CODE_DEP.match(path):
                found.append(f"stage {name!r} lists the source file {path}; depend on {wanted} instead")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the code files here (the `code` stage)")
    parser.add_argument("--changed", action="store_true", help="list the stage scripts whose code changed since the last run")
    args = parser.parse_args()
    if args.out:
        written = write_code_files(args.out)
        print(f"code: {len(written)} stage scripts -> {args.out}")
        return
    if args.changed:
        changed = changed_scripts()
        for module, files in changed.items():
            print(f"{module}: {', '.join(files)}")
        if not changed:
            print(f"no stage script's code changed since {CODE_DIR} was written")
        return
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
