"""The DAG's code dependencies follow the imports: every stage lists the whole closure of
project files its script imports, and an edit to one of them reruns every stage that imports it."""

import json
import shutil

import pytest

from pipeline import code_deps
from pipeline.code_deps import closure, declared_code_deps, stage_modules
from tests.conftest import REPO, run


def test_every_stage_lists_the_whole_closure_of_its_imports():
    problems = code_deps.problems()
    assert not problems, "dvc.yaml's code deps drifted; run `python -m pipeline.code_deps --write`:\n" + "\n".join(problems)


def write_tree(tmp_path):
    for package in ("pipeline", "stages"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("import numpy\nfrom pipeline.b import thing\n")
    (tmp_path / "pipeline" / "b.py").write_text("thing = 1\n\ndef f():\n    from pipeline import c\n    return c\n")
    (tmp_path / "pipeline" / "c.py").write_text("from . import d\n")
    (tmp_path / "pipeline" / "d.py").write_text("")
    (tmp_path / "pipeline" / "unused.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("from pipeline.a import *\nfrom stages import helper\n")
    (tmp_path / "stages" / "helper.py").write_text("")


def test_closure_follows_function_level_and_from_package_imports(tmp_path):
    """Written from scratch: a tiny package tree whose answer is known."""
    write_tree(tmp_path)
    assert closure("stages.s", tmp_path) == (
        "pipeline/__init__.py", "pipeline/a.py", "pipeline/b.py", "pipeline/c.py", "pipeline/d.py",
        "stages/__init__.py", "stages/helper.py", "stages/s.py",
    )


def test_the_check_names_the_stage_and_the_missing_file(tmp_path):
    text = (REPO / "dvc.yaml").read_text().replace("      - pipeline/row_split.py\n", "", 1)
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline")
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    (tmp_path / "dvc.yaml").write_text(text)
    problems = code_deps.problems(tmp_path)
    assert len(problems) == 1 and "pipeline/row_split.py" in problems[0] and problems[0].startswith("stage '")
    code_deps.write(tmp_path)  # the generator repairs it and touches nothing else
    assert code_deps.problems(tmp_path) == []
    assert (tmp_path / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()


def test_the_code_hash_changes_with_the_closure_only(tmp_path):
    """Partial stores and training checkpoints are keyed by code_hash: an edit to any imported
    file must change it, an edit elsewhere must not."""
    write_tree(tmp_path)
    before = code_deps.code_hash("stages.s", tmp_path)
    (tmp_path / "pipeline" / "unused.py").write_text("x = 1\n")
    assert code_deps.code_hash("stages.s", tmp_path) == before
    with open(tmp_path / "pipeline" / "d.py", "a") as handle:
        handle.write("# a comment\n")
    assert code_deps.code_hash("stages.s", tmp_path) != before
    assert set(closure("stages.harvest")) == declared_code_deps(REPO / "dvc.yaml")["harvest"]


@pytest.mark.slow
def test_a_comment_edit_reruns_every_stage_that_imports_the_file(smoke_repo, tmp_path):
    """In a copy of the smoke run, append a comment to encode_decode's module and to sites.py:
    `dvc status` must report exactly the importers' stages as changed."""
    repo = tmp_path / "repo"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    before = run(["dvc", "status", "--json"], repo).stdout
    assert before.strip() in ("{}", ""), f"the smoke run is not up to date: {before}"
    edited = ("pipeline/sae_outputs.py", "pipeline/sites.py")
    for path in edited:
        with open(repo / path, "a") as handle:
            handle.write("\n# a comment added by test_code_deps\n")
    status = json.loads(run(["dvc", "status", "--json"], repo).stdout)
    changed = {name.split("@")[0] for name in status}
    modules = stage_modules(repo / "dvc.yaml")
    importers = {name for name, module in modules.items() if set(edited) & set(closure(module, REPO))}
    assert changed == importers, f"changed {sorted(changed)}, importers {sorted(importers)}"
    assert {"sae_outputs", "probes", "pursuit", "synthetic", "interventions", "component_ce", "scaling", "error_saes",
            "harvest"} <= changed
    dry = run(["dvc", "repro", "--dry"], repo).stdout
    ran = {line.split("'")[1].split("@")[0] for line in dry.splitlines() if line.startswith("Running stage")}
    assert importers <= ran


def test_dvc_yaml_keeps_the_shape_the_generator_rewrites():
    """`code_deps.rewrite` edits each stage's deps list line by line: it needs every item on its own
    `      - path` line, no comment or blank line inside the list, and no duplicate entry."""
    import re

    import yaml

    lines = (REPO / "dvc.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^    deps:\s*$", line):
            j = i + 1
            while j < len(lines) and not re.match(r"^    \S", lines[j]) and not re.match(r"^  \S", lines[j]):
                assert re.match(r"^      - \S+$", lines[j]), f"dvc.yaml:{j + 1}: {lines[j]!r} inside a deps list"
                j += 1
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        deps = stage.get("deps") or []
        assert len(deps) == len(set(map(str, deps))), f"stage {name!r} lists a dependency twice"
