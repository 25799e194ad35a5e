"""dvc.yaml held to the code: a stage's deps name every module its command runs, and its params
every params.yaml key it reads, so that DVC reruns a stage whenever what it computes could change.

A stage's code is the import closure of its module (``prunekd <stage>`` runs
``prunekd.stages.<stage>``, through the map in ``prunekd.cli`` that this test reads too), found in
the source with ``ast``: absolute and relative imports, module-level and inside functions, but not
those under ``if TYPE_CHECKING:``, which never run. The params a stage reads are the attribute
chains on ``params`` in the functions its ``run`` reaches within the stages package. Outside it,
code is handed sections or values, never the whole of params (handing it on whole counts as reading
every key, except to the logging in LOGS_PARAMS), so a section handed on counts as read whole, and
a key read only to refuse a mismatched input (model.arch, against the teacher file) counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from prunekd.cli import COMMANDS
from prunekd.config import Params, TrainConfig

from ..conftest import ROOT

PACKAGE = "prunekd"

# Modules that cannot change a byte a stage writes, a metric or a model: they are no stage's deps,
# so an edit to them reruns nothing. Every other module a stage imports must be among its deps.
EXEMPT = {
    # a package's __init__: a docstring (and prunekd's version string, which no output carries)
    "prunekd", "prunekd.stages",
    # the base class of the refusals: no behaviour of its own
    "prunekd.errors",
    # the user-error exit code and the names of environment variables only tracking reads
    "prunekd.constants",
    # prints progress on stderr and yields each item it is given, unchanged (test_progress)
    "prunekd.progress",
    # MLflow logging (runs, lineage ids, registry) and the check that the store is reachable: nothing
    # it returns reaches an output; history.csv's rows come from the stage's own EpochLog
    "prunekd.tracking", "prunekd.tracking._store", "prunekd.tracking.base", "prunekd.tracking.connection",
    "prunekd.tracking.registry", "prunekd.tracking.run",
}


# ---- the code a stage runs ------------------------------------------------------------------------

def module_file(module: str, src: Path) -> Path | None:
    """The source file of ``module`` under ``src``, or None if it is not one of ours."""
    path = src.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` that can run: all but the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and is_type_checking(node.test):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def import_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imported_modules(module: str, src: Path, package: str) -> set[str]:
    """The modules of ``package`` that importing ``module`` imports directly (with their parents)."""
    path = module_file(module, src)
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = import_base(node, module, path.name == "__init__.py")
            # ``from . import x`` imports the module x if there is one; otherwise x is a name in base
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            raise AssertionError(f"{path}: a dynamic import, which this test cannot follow")
    parents = {".".join(name.split(".")[:i]) for name in names for i in range(1, name.count(".") + 2)}
    return {m for m in parents if m.split(".")[0] == package and module_file(m, src)}


def closure(module: str, src: Path, package: str = PACKAGE) -> set[str]:
    """``module`` and every module of ``package`` that importing it runs."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(name, src, package) - seen)
    return seen


def stage_body(stage: dict) -> dict:
    """A stage's definition, for a plain stage, a ``matrix:`` one, or a ``foreach:``/``do:`` one."""
    return stage["do"] if "foreach" in stage else stage


def dep_problems(name: str, stage: dict, root: Path, commands: dict[str, str], package: str = PACKAGE,
                 exempt: set[str] = EXEMPT) -> list[str]:
    """What dvc.yaml's stage ``name`` gets wrong about the code its command runs: a module it
    imports that is not among its deps, and a source file among its deps that it does not import
    (or that cannot change its outputs)."""
    body, src = stage_body(stage), root / "src"
    prog, command = body["cmd"].split()[:2]
    assert prog == package and command in commands, f"stage {name}: {body['cmd']!r} is no {package} command"
    files = {module_file(m, src).relative_to(root).as_posix()
             for m in closure(commands[command], src, package) - exempt}
    deps = {d for d in body.get("deps", []) if isinstance(d, str)}
    code_deps = {d for d in deps if d.startswith(f"src/{package}/")}
    return ([f"stage {name}: deps lack {f} (its command imports it)" for f in sorted(files - deps)]
            + [f"stage {name}: deps list {f}, which its command does not import or which cannot change its "
               "outputs (test_dvc_yaml.EXEMPT)" for f in sorted(code_deps - files)])


# ---- the params a stage reads ---------------------------------------------------------------------

SECTIONS = {name: set(field.annotation.model_fields) for name, field in Params.model_fields.items()
            if isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")}
# A section method that a stage calls reads these keys of the section; any other method (or the
# section passed on whole) counts as reading all of it.
METHOD_READS = {"for_data": set(TrainConfig.model_fields)}  # the training settings, not a sweep's keys
# Functions outside the stages package that are handed the whole of params only to log it.
LOGS_PARAMS = {"stage_run"}
ALL, ITEM = "*", "${item}"  # reads: every key; the section a matrix item names (getattr(params, mode))


def chain(node: ast.AST) -> tuple[str, list[str]] | None:
    """``a.b.c`` as ("a", ["b", "c"])."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    return (node.id, parts) if isinstance(node, ast.Name) else None


def key_reads(parts: list[str]) -> set[str]:
    """The params keys that ``params.<parts>`` reads."""
    section = parts[0]
    if section not in SECTIONS:
        return {section}
    if len(parts) > 1 and parts[1] in SECTIONS[section]:
        return {f"{section}.{parts[1]}"}
    if len(parts) > 1 and parts[1] in METHOD_READS:
        return {f"{section}.{key}" for key in METHOD_READS[parts[1]]}
    return {section}


class StageCode:
    """The top-level functions of the stages package, and in each of its modules the names that
    stand for one of them (``names``) or for one of its modules (``modules``)."""

    def __init__(self, src: Path, package: str = PACKAGE):
        self.functions: dict[tuple[str, str], ast.FunctionDef] = {}
        self.names: dict[str, dict[str, tuple[str, str]]] = {}
        self.modules: dict[str, dict[str, str]] = {}
        stages = f"{package}.stages"
        for path in sorted((src / package / "stages").glob("*.py")):
            module = f"{stages}.{path.stem}"
            tree = ast.parse(path.read_text(), str(path))
            names, modules = self.names.setdefault(module, {}), self.modules.setdefault(module, {})
            for node in tree.body:
                if isinstance(node, ast.FunctionDef):
                    self.functions[module, node.name] = node
                    names[node.name] = (module, node.name)
                elif isinstance(node, ast.ImportFrom):
                    base = import_base(node, module, False)
                    for a in node.names:
                        if base == stages:  # from . import artifacts
                            modules[a.asname or a.name] = f"{base}.{a.name}"
                        elif base.startswith(stages + "."):  # from .artifacts import load_teacher
                            names[a.asname or a.name] = (base, a.name)

    def params_read(self, module: str) -> set[str]:
        """The params keys that ``module``'s ``run`` reads, following calls within the stages package."""
        todo, seen, reads = [(module, "run")], set(), set()
        while todo:
            key = todo.pop()
            if key in seen or key not in self.functions:
                continue
            seen.add(key)
            reads |= self.reads_of(self.functions[key], self.names[key[0]], self.modules[key[0]], todo)
        return reads

    def reads_of(self, function: ast.FunctionDef, names: dict, modules: dict, todo: list) -> set[str]:
        for arg in function.args.args + function.args.kwonlyargs:
            if ast.unparse(arg.annotation or ast.Constant("")).strip("'\"") == "Params":
                assert arg.arg == "params", f"{function.name}: this test follows a Params argument named params"
        parents = {child: node for node in ast.walk(function) for child in ast.iter_child_nodes(node)}
        aliases, alias_values = {"params": []}, set()  # x = params.prune: x.unit reads prune.unit
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                found = chain(node.value)
                if found and found[0] == "params" and found[1]:
                    aliases[node.targets[0].id] = found[1]
                    alias_values.add(node.value)
        reads = set()
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load):
                todo.append(names[node.id])  # called or handed on: what it reads counts
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
                todo.append((modules[node.value.id], node.attr))  # artifacts.load_teacher
            if not (isinstance(node, ast.Name) and node.id in aliases and isinstance(node.ctx, ast.Load)):
                continue
            top = node
            while isinstance(parents.get(top), ast.Attribute) and parents[top].value is top:
                top = parents[top]
            if top in alias_values:
                continue  # read where the alias is used
            parts = aliases[node.id] + (chain(top)[1] if top is not node else [])
            if parts:
                reads |= key_reads(parts)
                continue
            reads |= self.whole_params_use(node, parents.get(node), names, modules)
        return reads

    @staticmethod
    def whole_params_use(node: ast.Name, parent: ast.AST | None, names: dict, modules: dict) -> set[str]:
        """What handing on the whole of params reads."""
        if not (isinstance(parent, ast.Call) and node in parent.args):
            return {ALL}
        func = parent.func
        if isinstance(func, ast.Name) and func.id == "getattr" and parent.args[0] is node:
            name = parent.args[1]
            return key_reads([name.value]) if isinstance(name, ast.Constant) else {ITEM}
        followed = (isinstance(func, ast.Name) and func.id in names) or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules)
        logged = getattr(func, "id", getattr(func, "attr", None)) in LOGS_PARAMS
        return set() if followed or logged else {ALL}


def covered(read: str, entries: list) -> bool:
    keys = set()
    for entry in entries:
        if isinstance(entry, dict):  # {"params.yaml": None} depends on every key of the file
            for file_keys in entry.values():
                if not file_keys:
                    return True
                keys |= set(file_keys)
        else:
            keys.add(entry)
    if read == ITEM:
        return any(k.startswith("${item.") for k in keys)
    if read in SECTIONS and SECTIONS[read] <= {k.partition(".")[2] for k in keys if k.startswith(read + ".")}:
        return True
    return any(read == k or read.startswith(k + ".") for k in keys)


def param_problems(name: str, stage: dict, code: StageCode, commands: dict[str, str]) -> list[str]:
    body = stage_body(stage)
    reads = code.params_read(commands[body["cmd"].split()[1]])
    return [f"stage {name}: params lack {read} (its code reads it)"
            for read in sorted(reads) if not covered(read, body.get("params", []))]


# ---- the real dvc.yaml ----------------------------------------------------------------------------

DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = sorted(DVC_YAML["stages"])


def test_every_stage_command_is_a_prunekd_stage():
    assert set(STAGES) == {name for name, module in COMMANDS.items() if module.startswith("prunekd.stages.")}


def outputs(stages: dict) -> list[tuple[str, str]]:
    """(output path, the stage making it) for every output in dvc.yaml's ``stages`` (matrix items
    left as written)."""
    return [(next(iter(out)) if isinstance(out, dict) else out, name)
            for name, stage in stages.items() for out in stage_body(stage).get("outs", [])]


def order_problems(stages: dict, order: tuple[str, ...]) -> list[str]:
    """Where ``order`` runs a stage before one whose output it reads (a dep that is an output, lies
    in one, or holds one: ``models/retrained`` holds every retrain's and every quantize's)."""
    problems, made = [], outputs(stages)
    for name, stage in stages.items():
        for dep in (d for d in stage_body(stage).get("deps", []) if isinstance(d, str)):
            makers = {maker for path, maker in made if maker != name and (
                dep == path or dep.startswith(path.rstrip("/") + "/") or path.startswith(dep.rstrip("/") + "/"))}
            problems += [f"{name} reads {dep}, made by {maker}, which comes after it"
                         for maker in sorted(makers) if order.index(maker) > order.index(name)]
    return problems


def test_the_cli_lists_the_stages_in_an_order_dvc_yaml_allows():
    """``prunekd.cli.STAGES`` runs each stage after those whose outputs it reads (benchmarks/gpu.py's
    study runs them in that order)."""
    from prunekd.cli import STAGES as ORDER

    assert order_problems(DVC_YAML["stages"], ORDER) == []
    for late in ("check", "teacher", "quantize", "latency"):  # each moved after the report: found
        moved = (*(s for s in ORDER if s != late), late)
        assert any(f"made by {late}, which comes after it" in p for p in order_problems(DVC_YAML["stages"], moved))


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_exactly_the_code_it_runs(stage):
    problems = dep_problems(stage, DVC_YAML["stages"][stage], ROOT, COMMANDS)
    assert not problems, "dvc.yaml: " + "; ".join(problems)


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_depends_on_the_params_it_reads(stage):
    problems = param_problems(stage, DVC_YAML["stages"][stage], StageCode(ROOT / "src"), COMMANDS)
    assert not problems, "dvc.yaml: " + "; ".join(problems)


def test_a_missing_code_dep_of_a_real_stage_is_named():
    """The report reads the prepared data (data.load_prepared) for its per-image statistics."""
    report = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["report"]
    report["deps"].remove("src/prunekd/data.py")
    assert dep_problems("report", report, ROOT, COMMANDS) == [
        "stage report: deps lack src/prunekd/data.py (its command imports it)"]


def test_the_exempt_modules_exist():
    assert all(module_file(m, ROOT / "src") for m in EXEMPT), EXEMPT


def test_a_missing_param_of_a_real_stage_is_named():
    prune = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prune"]
    prune["params"].remove("prune.round_to")
    assert param_problems("prune", prune, StageCode(ROOT / "src"), COMMANDS) == [
        "stage prune: params lack prune.round_to (its code reads it)"]


# ---- the checker on a package of its own ----------------------------------------------------------

def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


TOY = {
    "src/toy/__init__.py": "",
    "src/toy/core.py": "from .util import helper\n",
    "src/toy/util.py": "import toy.deep.leaf\n",
    "src/toy/deep/__init__.py": "",
    "src/toy/deep/leaf.py": "",
    "src/toy/late.py": "",
    "src/toy/typed.py": "",
    "src/toy/quiet.py": "",
    "src/toy/stages/__init__.py": "",
    "src/toy/stages/shared.py": "from .. import quiet\n",
    "src/toy/stages/one.py": ("from typing import TYPE_CHECKING\n"
                              "from ..core import helper\n"
                              "from . import shared\n"
                              "if TYPE_CHECKING:\n    from ..typed import Thing\n"
                              "def run(params, layout):\n    from toy import late\n"),
}
TOY_COMMANDS = {"one": "toy.stages.one"}
TOY_EXEMPT = {"toy", "toy.deep", "toy.stages", "toy.quiet"}
TOY_DEPS = ["data/x", "src/toy/core.py", "src/toy/util.py", "src/toy/deep/leaf.py", "src/toy/late.py",
            "src/toy/stages/shared.py", "src/toy/stages/one.py"]


def toy_problems(root: Path, deps: list[str]) -> list[str]:
    return dep_problems("one", {"cmd": "toy one", "deps": deps}, root, TOY_COMMANDS, "toy", TOY_EXEMPT)


def test_the_closure_follows_every_kind_of_import_and_skips_type_checking_ones(tmp_path):
    write(tmp_path, TOY)
    assert closure("toy.stages.one", tmp_path / "src", "toy") == {
        "toy", "toy.core", "toy.util", "toy.deep", "toy.deep.leaf", "toy.late", "toy.quiet", "toy.stages",
        "toy.stages.shared", "toy.stages.one"}
    assert toy_problems(tmp_path, TOY_DEPS) == []


def test_a_stage_that_starts_importing_a_core_module_fails_until_its_deps_name_it(tmp_path):
    write(tmp_path, TOY | {"src/toy/model.py": "",
                           "src/toy/stages/one.py": TOY["src/toy/stages/one.py"] + "    from ..model import Net\n"})
    assert toy_problems(tmp_path, TOY_DEPS) == ["stage one: deps lack src/toy/model.py (its command imports it)"]
    assert toy_problems(tmp_path, TOY_DEPS + ["src/toy/model.py"]) == []


def test_a_dep_on_code_the_stage_does_not_run_is_named(tmp_path):
    write(tmp_path, TOY | {"src/toy/unused.py": ""})
    assert toy_problems(tmp_path, TOY_DEPS + ["src/toy/unused.py", "src/toy/quiet.py"]) == [
        "stage one: deps list src/toy/quiet.py, which its command does not import or which cannot change its "
        "outputs (test_dvc_yaml.EXEMPT)",
        "stage one: deps list src/toy/unused.py, which its command does not import or which cannot change its "
        "outputs (test_dvc_yaml.EXEMPT)"]


def test_params_reads_are_followed_through_helpers_aliases_and_getattr(tmp_path):
    write(tmp_path, {
        "src/toy/stages/helpers.py": ("def helper(params: Params):\n"
                                      "    p = params.prune\n    return p.round_to, params.teacher.for_data(True)\n"),
        "src/toy/stages/other.py": "def measure(params):\n    return params.measure.repeats\n",
        "src/toy/stages/one.py": ("from . import other\n"
                                  "from .helpers import helper\n"
                                  "def unused(params):\n    return params.data\n"
                                  "def run(params, layout, mode):\n"
                                  "    stage_run('one', params)\n"
                                  "    return params.seed, helper(params), getattr(params, mode), params.kd, \\\n"
                                  "        other.measure(params)\n"),
    })
    code = StageCode(tmp_path / "src", "toy")
    assert code.params_read("toy.stages.one") == {
        "seed", "prune.round_to", ITEM, "kd", "measure.repeats"} | {f"teacher.{k}" for k in TrainConfig.model_fields}
    stage = {"cmd": "toy one", "params": ["seed", "prune.round_to", "teacher", "${item.mode}", "measure"]}
    assert param_problems("one", stage, code, TOY_COMMANDS) == ["stage one: params lack kd (its code reads it)"]


def test_params_handed_on_whole_count_as_reading_every_key(tmp_path):
    write(tmp_path, {"src/toy/stages/one.py": "def run(params, layout):\n    return flatten(params)\n"})
    code = StageCode(tmp_path / "src", "toy")
    assert code.params_read("toy.stages.one") == {ALL}
    assert param_problems("one", {"cmd": "toy one", "params": ["seed"]}, code, TOY_COMMANDS) == [
        "stage one: params lack * (its code reads it)"]
    assert param_problems("one", {"cmd": "toy one", "params": [{"params.yaml": None}]}, code, TOY_COMMANDS) == []
