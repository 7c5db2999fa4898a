"""The DAG's code dependencies follow the imports: every stage depends on its script's code file
(the hashes of the whole closure of project files the script imports, written by the `code`
stage), and an edit to one of them reruns every stage that imports it, and no other."""

import json
import shutil

import pytest

from pipeline import code_deps
from pipeline.code_deps import changed_scripts, closure, code_file, stage_modules, write_code_files
from tests.conftest import BIN, REPO, run, short_name


def test_every_stage_depends_on_its_code_file():
    problems = code_deps.problems()
    assert not problems, "dvc.yaml's code deps are wrong:\n" + "\n".join(problems)


def write_tree(tmp_path):
    for package in ("pipeline", "stages"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("import numpy\nfrom pipeline.b import thing\n")
    (tmp_path / "pipeline" / "b.py").write_text("thing = 1\n\ndef f():\n    from pipeline import c\n    return c\n")
    (tmp_path / "pipeline" / "c.py").write_text("from . import d\n")
    (tmp_path / "pipeline" / "d.py").write_text("")
    (tmp_path / "pipeline" / "unused.py").write_text("")
    (tmp_path / "stages" / "s.py").write_text("from pipeline.a import *\nfrom stages import helper\n\n\ndef main():\n    pass\n")
    (tmp_path / "stages" / "helper.py").write_text("")


def test_closure_follows_function_level_and_from_package_imports(tmp_path):
    """Written from scratch: a tiny package tree whose answer is known."""
    write_tree(tmp_path)
    assert closure("stages.s", tmp_path) == (
        "pipeline/__init__.py", "pipeline/a.py", "pipeline/b.py", "pipeline/c.py", "pipeline/d.py",
        "stages/__init__.py", "stages/helper.py", "stages/s.py",
    )


def test_the_check_names_the_stage_and_the_missing_code_file(tmp_path):
    for folder in ("pipeline", "stages", "dag"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    probes = tmp_path / "dag" / "probes" / "dvc.yaml"
    text = probes.read_text()
    probes.write_text(text.replace("      - artifacts/code/probes.json\n", "", 1))
    # `probes_extra` is `probes` for the second SAE grid (a YAML merge of the same definition).
    problems = code_deps.problems(tmp_path)
    assert [p.split(" (")[0] for p in problems] == ["stage 'dag/probes/dvc.yaml:probes'", "stage 'dag/probes/dvc.yaml:probes_extra'"], problems
    assert all("artifacts/code/probes.json" in p for p in problems)
    probes.write_text(text.replace("      - artifacts/code/probes.json\n", "      - artifacts/code/probes.json\n      - pipeline/lstsq.py\n", 1))
    problems = code_deps.problems(tmp_path)
    assert len(problems) == 2 and all("pipeline/lstsq.py" in p for p in problems)


def test_a_code_file_changes_exactly_when_its_closure_does(tmp_path):
    """The bytes of artifacts/code/<script>.json (what DVC compares) move with an edit to any file the
    script imports, and with nothing else; `changed_scripts` names the edited file."""
    write_tree(tmp_path)
    out = tmp_path / "artifacts" / "code"
    (path,) = write_code_files(out, tmp_path)
    assert path == code_file("stages.s", out)
    before = path.read_bytes()
    (tmp_path / "pipeline" / "unused.py").write_text("x = 1\n")
    assert changed_scripts(out, tmp_path) == {}
    write_code_files(out, tmp_path)
    assert path.read_bytes() == before
    with open(tmp_path / "pipeline" / "d.py", "a") as handle:
        handle.write("# a comment\n")
    assert changed_scripts(out, tmp_path) == {"stages.s": ["pipeline/d.py"]}
    write_code_files(out, tmp_path)
    assert path.read_bytes() != before
    assert changed_scripts(out, tmp_path) == {}


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


@pytest.mark.slow
def test_a_comment_edit_reruns_every_stage_that_imports_the_file(smoke_repo, tmp_path):
    """In a copy of the smoke run, append a comment to the SAE loader's module and to sites.py:
    `--changed` names the importers' scripts, and once the `code` stage has run, `dvc status`
    reports exactly the importers' stages as changed."""
    repo = tmp_path / "repo"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    before = run(["dvc", "status", "--json"], repo).stdout
    assert before.strip() in ("{}", ""), f"the smoke run is not up to date: {before}"
    edited = ("pipeline/sae_inference.py", "pipeline/sites.py")
    for path in edited:
        with open(repo / path, "a") as handle:
            handle.write("\n# a comment added by test_code_deps\n")
    assert set(json.loads(run(["dvc", "status", "--json"], repo).stdout)) == {"code"}
    modules = {short_name(name): module for name, module in stage_modules(repo).items() if name != "code"}
    importers = {name for name, module in modules.items() if set(edited) & set(closure(module, REPO))}
    # A family whose grid is empty at this scale (e.g. train_sae_extra) declares no stage.
    declared = {short_name(name).split("@")[0] for name in run(["dvc", "stage", "list", "--all", "--name-only"], repo).stdout.split()}
    importers &= declared
    listed = run([str(BIN / "python"), "-m", "pipeline.code_deps", "--changed"], repo).stdout
    assert {line.split(":")[0] for line in listed.splitlines()} == {modules[name] for name in importers}
    run(["dvc", "repro", "code"], repo)
    changed = {short_name(name).split("@")[0] for name in json.loads(run(["dvc", "status", "--json"], repo).stdout)}
    assert changed == importers, f"changed {sorted(changed)}, importers {sorted(importers)}"
    assert {"sae_outputs", "synthetic", "interventions", "component_ce", "harvest"} <= changed
    assert not {"probes", "scaling", "earlier_components", "sae_summary", "report"} & changed  # numpy-only: untouched


def test_no_stage_lists_a_dependency_twice():
    for name, stage in code_deps.dag_stages().items():
        deps = stage.get("deps") or []
        assert len(deps) == len(set(map(str, deps))), f"stage {name!r} lists a dependency twice"
