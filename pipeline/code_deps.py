"""Which project files a stage's code depends on, read from the source with `ast` (nothing is imported).

A stage's code is the transitive closure of the project modules its stage script imports:
top-level and function-level imports both count, and so does each package's `__init__.py`.
`dvc.yaml` lists exactly that closure among each stage's `deps`, so that any edit to code a
stage runs reruns the stage. The lists are generated, never written by hand:

    python -m pipeline.code_deps --write    # regenerate the code deps in dvc.yaml
    python -m pipeline.code_deps            # check them; exit 1 naming each stage and file

The harvest fingerprint (which decides whether a partial store may be resumed) hashes the
same closure, so there is one list of "the code that computes activations".
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import sys
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
"""Top-level packages of this project; imports of anything else are third-party."""
DVC_YAML = "dvc.yaml"
_STAGE_MODULE = re.compile(r"python -m (stages\.\w+)")
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


def stage_modules(dvc_yaml: Path) -> dict[str, str]:
    """Stage name -> the stage script's module, from each stage's `cmd` ('python -m stages.x')."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    modules = {}
    for name, stage in stages.items():
        match = _STAGE_MODULE.search(" ".join(stage["cmd"]) if isinstance(stage["cmd"], list) else stage["cmd"])
        if not match:
            raise ValueError(f"{dvc_yaml}: stage {name!r}: its cmd does not run 'python -m stages.<module>'")
        modules[name] = match.group(1)
    return modules


def declared_code_deps(dvc_yaml: Path) -> dict[str, set[str]]:
    """Stage name -> the project source files among its declared deps."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: {d for d in stage.get("deps", []) if isinstance(d, str) and _CODE_DEP.match(d)} for name, stage in stages.items()}


def problems(root: Path = ROOT) -> list[str]:
    """Each stage whose declared code deps miss a file of its closure, or list one outside it."""
    dvc_yaml = root / DVC_YAML
    declared = declared_code_deps(dvc_yaml)
    found = []
    for name, module in stage_modules(dvc_yaml).items():
        needed = set(closure(module, root))
        for path in sorted(needed - declared[name]):
            found.append(f"stage {name!r} ({module}) imports {path}, which is not among its deps in {DVC_YAML}")
        for path in sorted(declared[name] - needed):
            found.append(f"stage {name!r} ({module}) lists {path} in its deps but never imports it")
    return found


def rewrite(text: str, code_deps: dict[str, tuple[str, ...]]) -> str:
    """dvc.yaml text with each stage's code deps replaced by `code_deps[stage]` (after its other
    deps); comments and every other line are kept as they are."""
    out: list[str] = []
    stage, pending = None, None
    for line in text.splitlines(keepends=True):
        if pending is not None:
            item = re.match(r"^      - (\S+)\s*$", line)
            if item:
                if not _CODE_DEP.match(item.group(1)):
                    out.append(line)
                continue
            out.extend(f"      - {path}\n" for path in pending)
            pending = None
        header = re.match(r"^  ([A-Za-z_][\w-]*):\s*$", line)
        if header:
            stage = header.group(1)
        elif re.match(r"^\S", line):
            stage = None
        out.append(line)
        if stage and re.match(r"^    deps:\s*$", line):
            if stage not in code_deps:
                raise ValueError(f"{DVC_YAML}: stage {stage!r} has no stage module")
            pending = code_deps[stage]
    if pending is not None:
        out.extend(f"      - {path}\n" for path in pending)
    return "".join(out)


def write(root: Path = ROOT) -> bool:
    """Regenerate the code deps of every stage in dvc.yaml; True if the file changed."""
    dvc_yaml = root / DVC_YAML
    text = dvc_yaml.read_text()
    new = rewrite(text, {name: closure(module, root) for name, module in stage_modules(dvc_yaml).items()})
    if new != text:
        dvc_yaml.write_text(new)
    return new != text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="regenerate the code deps in dvc.yaml")
    args = parser.parse_args()
    if args.write:
        print(f"{DVC_YAML}: code deps {'updated' if write() else 'already up to date'}")
    found = problems()
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
