"""Copy the measured results into the documents that show them: README.md (the default run's
answer) and docs/results.md (its cost tables and every published run, docs/runs/<name>/ from
scripts/publish_run.py). Each document holds blocks

    <!-- results:begin --> ... <!-- results:end -->            the default run's answer and the thesis
    <!-- results-cost:begin --> ... <!-- results-cost:end -->  the default run's cost and latency tables
    <!-- run:<name>:begin --> ... <!-- run:<name>:end -->      a published run's answer or comparison
    <!-- params:begin --> ... <!-- params:end -->              every parameter: params.yaml's default and
                                                             comment, the bounds config.py enforces
    <!-- tests:begin --> ... <!-- tests:end -->                how long the main job and the tests take
    <!-- pairs:<name>:begin --> ... <!-- pairs:<name>:end -->  published runs paired image by image
                                                             (``PAIRS``, scripts/pair_runs.py)
    <!-- fig:<run>:<key> --> ... <!-- /fig -->                 one figure in a sentence: a published run's
                                                             metrics.json value, with its interval, or
                                                             two runs paired (``figure``)

and this script rewrites what is between the markers, with links relative to the document. The
default run's report, figures and sensitivity curves are DVC outputs (in reports/, not in git), so
it first copies them into docs/default-run/ (``DEFAULT_RUN``), where the blocks link: a reader of a
fresh clone or of the repository online sees them without `dvc pull` (tests/unit/test_docs.py holds
the copy to the hashes dvc.lock records).
Run after scripts/timed_repro.sh (and scripts/time_tests.sh); the results are generated, never typed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sys
from pathlib import Path

from prunekd.errors import refuse
from prunekd.io import stage_outputs
from prunekd.paths import FIGURES_DIR, REPORT_FILE, Layout

sys.path.insert(0, str(Path(__file__).parent))
from compare_runs import interval, record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/results.md", "docs/guide.md")
RUN_BLOCK = re.compile(r"(<!-- run:([\w.-]+):begin -->).*?(<!-- run:\2:end -->)", re.DOTALL)
# Of a report, the sections a block shows (the rest is one link away).
RUN_SECTIONS = ("## The answer", "## Compared")
OLD_RUN_SECTIONS = ("## Accuracy per ratio and mode", "## Paired differences")  # reports with no answer section
DEFAULT_BLOCKS = {
    "results": ("## The answer", "## Against the thesis"),
    "results-cost": ("## Cost per ratio", "## Latency per architecture", "## int8"),
}
FIRST_FIGURE_ONLY = {"results"}  # the front page shows the answer's figure, not every figure
DEFAULT_RUN = "docs/default-run"  # the default run's report and what it links to, copied from reports/


def published_outputs() -> tuple[str, ...]:
    """What of reports/ the default run's report shows: itself and the folders it links to."""
    return (REPORT_FILE, FIGURES_DIR, Layout(ROOT).sensitivity.name)


def publish_default_run() -> None:
    """Copy the default run's report, figures and sensitivity curves from reports/ (DVC outputs)
    into ``DEFAULT_RUN`` (in git), replacing what an earlier run left there: whole, and only once
    each is there (a checkout without the DVC outputs, before `dvc pull` or `dvc repro`, is refused
    and its copy left as it is)."""
    reports, out = Layout(ROOT).reports, ROOT / DEFAULT_RUN
    for name in (*published_outputs(), "repro_time.json", "test_time.json"):
        if not (reports / name).exists():
            refuse(f"reports/{name} not found: run `dvc pull` or `dvc repro` (and scripts/timed_repro.sh, "
                   "scripts/time_tests.sh) first; nothing was changed")
    with stage_outputs(out, root=ROOT) as scratch:
        made = scratch / out.name
        made.mkdir()
        for name in published_outputs():
            if (reports / name).is_dir():
                shutil.copytree(reports / name, made / name)
            else:
                shutil.copy2(reports / name, made / name)


def demote(markdown: str) -> str:
    return markdown.replace("\n## ", "\n### ")


def sections(report: str, wanted: tuple[str, ...]) -> str:
    """The report's sections that start with one of ``wanted``, in the report's order, each with
    the figure lines that follow it."""
    return "\n\n".join(s.strip() for s in re.split(r"\n(?=## )", report) if s.startswith(wanted))


def first_figure_only(markdown: str) -> str:
    figures = [line for line in markdown.splitlines() if line.startswith("![")]
    for extra in figures[1:]:
        markdown = markdown.replace(f"\n{extra}\n", "\n")
    return re.sub(r"\n{3,}", "\n\n", markdown)


def relink(markdown: str, folder: str, prefix: str) -> str:
    """A report's links to its own folder (``figures/``, ``sensitivity/``), as seen from a
    document whose way back to the project root is ``prefix``."""
    for sub in (f"{FIGURES_DIR}/", f"{Layout(ROOT).sensitivity.name}/", REPORT_FILE):
        markdown = markdown.replace(f"]({sub}", f"]({prefix}{folder}/{sub}")
    return markdown


def repro_extent(timing: dict) -> str:
    """How much of the DAG the timed `dvc repro` ran: every stage (as from nothing), or how many; a
    record from before the count is said to be from nothing, as it was made."""
    if "stages_run" not in timing:
        return "from nothing"
    if timing["stages_run"] == timing["stages"]:
        return f"every one of its {timing['stages']} stages run"
    return f"{timing['stages_run']} of its {timing['stages']} stages rerun (the rest unchanged)"


def default_block(name: str, prefix: str = "") -> str:
    layout = Layout(ROOT)
    report = relink((ROOT / DEFAULT_RUN / REPORT_FILE).read_text(), DEFAULT_RUN, prefix)
    body = demote("\n" + sections(report, DEFAULT_BLOCKS[name])).rstrip() + "\n"
    if name in FIRST_FIGURE_ONLY:
        body = first_figure_only(body)
    if name != "results":
        return body.lstrip("\n")
    timing = json.loads((layout.reports / "repro_time.json").read_text())  # scripts/timed_repro.sh's
    return (f"`dvc repro{' ' + timing['args'] if timing.get('args') else ''}` with the default params, "
            f"{repro_extent(timing)}, took **{timing['wall_s'] / 60:.1f} min** "
            f"on {timing['cpus']} CPU cores ({timing['processor']}, torch {timing['torch']}, "
            f"CUDA {'on' if timing['cuda'] else 'off'}); the whole report, with every paired difference, "
            f"the sensitivity of each layer and the figures, is [{DEFAULT_RUN}/{REPORT_FILE}]({prefix}{DEFAULT_RUN}/{REPORT_FILE}) "
            f"(`{layout.reports.relative_to(ROOT).as_posix()}/{REPORT_FILE}` as the run left it).\n"
            f"{body}")


def run_section(name: str, prefix: str = "") -> str:
    folder = ROOT / "docs" / "runs" / name
    report = relink((folder / REPORT_FILE).read_text(), f"docs/runs/{name}", prefix)
    link = f"{prefix}docs/runs/{name}/{REPORT_FILE}"
    command, commit = (record(folder.parent, name, key) for key in ("command", "commit"))
    return demote(f"From `{command}` at commit {commit} ([full report]({link})).\n\n"
                  + (sections(report, RUN_SECTIONS) or sections(report, OLD_RUN_SECTIONS)) + "\n")


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>\w+):(?P<value>[^#]*)(?:#\s?(?P<comment>.*))?$")
COMMENT_LINE = re.compile(r"^ +#\s?(?P<comment>.*)$")


def documented_keys(params_text: str) -> dict[str, tuple[str, str]]:
    """Each key of a params file (``section.key``) with its value as written and its comment,
    a comment's continuation lines (indented comment-only lines right below) joined on."""
    keys: dict[str, tuple[str, str]] = {}
    section, last = "", None
    for line in params_text.splitlines():
        if (m := KEY_LINE.match(line)):
            name = m["key"] if not m["indent"] else f"{section}.{m['key']}"
            section = m["key"] if not m["indent"] else section
            keys[name] = (m["value"].strip(), (m["comment"] or "").strip())
            last = name
        elif last and (m := COMMENT_LINE.match(line)):
            value, comment = keys[last]
            keys[last] = (value, f"{comment} {m['comment'].strip()}".strip())
        else:
            last = None
    return keys


JSON_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "string": "text", "null": "null"}
BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


def allowed(schema: dict) -> str:
    """What the config's validation accepts for one key, from its JSON schema: its types, bounds and
    choices, and the rule its validator checks (``config.rule``)."""
    if "rule" in schema:
        return f"{allowed({k: v for k, v in schema.items() if k != 'rule'})}: {schema['rule']}"
    if "anyOf" in schema:
        return " or ".join(allowed(option) for option in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if schema.get("type") == "array":
        return f"list of {allowed(schema['items'])}"
    bounds = [f"{sign} {schema[k]:,}" if isinstance(schema[k], int) else f"{sign} {schema[k]:g}"
              for k, sign in BOUNDS if k in schema]
    return " ".join([JSON_TYPES.get(schema.get("type"), "any"), ", ".join(bounds)]).strip()


def params_block(prefix: str = "") -> str:
    from prunekd.config import Params

    schema = Params.model_json_schema()
    documented = documented_keys((ROOT / "params.yaml").read_text())
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        ref = prop.get("$ref", "").rsplit("/", 1)[-1]
        leaves = schema["$defs"][ref]["properties"].items() if ref else [(None, prop)]
        for leaf, leaf_schema in leaves:
            key = f"{name}.{leaf}" if leaf else name
            value, comment = documented.get(key, ("", ""))
            comment = comment.replace("|", "\\|")
            rows.append(f"| `{key}` | `{value}` | {allowed(leaf_schema)} | {comment} |")
    return "\n".join(rows) + "\n"


# Tables of published runs paired image by image (scripts/pair_runs.py): name -> the ratio, the
# first column's heading, and rows of (what the row is, RUN:MODE, what it is held against, RUN:MODE).
PAIRS = {
    "controls": (0.26, "control at 26 %", [
        ("FT, 3 epochs", "ctl-ft-3ep:ft", "FT", "headroom-26:ft"),
        ("FT, best validation epoch kept", "ctl-ft-best:ft", "FT", "headroom-26:ft"),
        ("FT, a tenth of the learning rate", "ctl-ft-lr0.002:ft", "FT", "headroom-26:ft"),
        ("FT, a tenth of the learning rate", "ctl-ft-lr0.002:ft", "KD", "headroom-26:kd"),
        ("FT, label smoothing 0.1", "ctl-ft-ls0.1:ft", "FT", "headroom-26:ft"),
        ("KD, alpha 1.0", "ctl-kd-alpha1:kd", "KD", "headroom-26:kd"),
        ("KD, temperature 8", "ctl-kd-t8:kd", "KD", "headroom-26:kd"),
        ("KD, temperature 1", "ctl-kd-t1:kd", "FT", "headroom-26:ft"),
        ("KD, temperature 1", "ctl-kd-t1:kd", "KD", "headroom-26:kd"),
        ("KD, temperature 1", "ctl-kd-t1:kd", "FT at a tenth of the learning rate", "ctl-ft-lr0.002:ft"),
        ("KD (the regime's own)", "headroom-26:kd", "FT", "headroom-26:ft"),
    ]),
    "controls-75": (0.75, "control at 75 %", [
        ("FT, 3 epochs", "ctl-ft-3ep-75:ft", "FT", "headroom-75:ft"),
        ("FT, best validation epoch kept", "ctl-ft-best-75:ft", "FT", "headroom-75:ft"),
        ("FT, a tenth of the learning rate", "ctl-ft-lr0.002-75:ft", "FT", "headroom-75:ft"),
        ("FT, label smoothing 0.1", "ctl-ft-ls0.1-75:ft", "FT", "headroom-75:ft"),
        ("KD, alpha 1.0", "ctl-kd-alpha1-75:kd", "FT", "headroom-75:ft"),
        ("KD, temperature 8", "ctl-kd-t8-75:kd", "KD", "headroom-75:kd"),
        ("KD, temperature 1", "ctl-kd-t1-75:kd", "FT", "headroom-75:ft"),
        ("KD, temperature 1", "ctl-kd-t1-75:kd", "KD", "headroom-75:kd"),
        ("KD, temperature 1", "ctl-kd-t1-75:kd", "FT at a tenth of the learning rate", "ctl-ft-lr0.002-75:ft"),
        ("KD (the regime's own)", "headroom-75:kd", "FT", "headroom-75:ft"),
    ]),
}


def load_script(name: str):
    """scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pairs_block(name: str) -> str:
    """``PAIRS[name]`` as a table: each row's difference with its 95 % interval over seeds and test
    images, and in how many seeds the row's model scored higher."""
    if name not in PAIRS:
        refuse(f"<!-- pairs:{name}:begin -->: no such table of pairs; name one of {', '.join(PAIRS)} (PAIRS)")
    ratio, heading, rows = PAIRS[name]
    lines = [f"| {heading} | against | difference, 95 % CI | ahead in |", "|---|---|---|---|"]
    for label, a, against, b in rows:
        got = paired(a, b, ratio, f"<!-- pairs:{name}:begin -->")
        lines.append(f"| {label} | {against} | {got.diff:+.2f} [{got.low:+.2f}, {got.high:+.2f}] | "
                     f"{got.ahead} of {got.seeds} seeds |")
    commands = "; ".join(f"`{a} {b}`" for _, a, _, b in rows)
    return "\n".join(lines) + f"\n\n(`python scripts/pair_runs.py A B --ratio {ratio:g}` for each row: {commands}.)\n"


# A figure's marker and its closing one, with no other marker between: a closing marker deleted by
# mistake leaves the figure unfilled (and refused), never the prose up to the next figure's.
FIGURE = re.compile(r"(?P<open><!-- fig:(?P<spec>[\w.:-]+) -->)(?P<body>(?:(?!<!--).)*?)(?P<close><!-- /fig -->)",
                    re.DOTALL)
FIGURE_OPEN = re.compile(r"<!-- fig:([^>]*?) -->")


def signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "\u2212")


def paired(a: str, b: str, ratio: float, marker: str):
    """scripts/pair_runs.py's ``pair``, refused in one line naming ``marker`` where it cannot pair."""
    pair_runs = load_script("pair_runs")
    try:
        return pair_runs.pair(a, b, ratio)
    except pair_runs.PairError as exc:
        refuse(f"{marker}: {exc}")


def figure(spec: str) -> str:
    """One figure the prose quotes, as it shows it: ``<run>:<key>``, a published run's metrics.json
    value (``default``: the default run's, reports/metrics.json, in git) (a difference, ``..._minus_...``, signed with its 95 % interval where the run has one:
    ``−4.00 [−4.56, −3.45]``; any other figure as it is: ``90.25``), or
    ``pair:<run>:<mode>:<run>:<mode>:<ratio>``, two published runs paired image by image
    (scripts/pair_runs.py), the difference with its interval over seeds and test images."""
    marker = f"<!-- fig:{spec} -->"
    parts = spec.split(":")
    if parts[0] == "pair" and len(parts) == 6:
        try:
            ratio = float(parts[5])
        except ValueError:
            refuse(f"{marker}: the ratio {parts[5]!r} is not a number")
        got = paired(":".join(parts[1:3]), ":".join(parts[3:5]), ratio, marker)
        return f"{signed(got.diff)} [{signed(got.low)}, {signed(got.high)}]"
    if len(parts) != 2:
        refuse(f"{marker}: name <run>:<key> or pair:<run>:<mode>:<run>:<mode>:<ratio>")
    run, key = parts
    path = (Layout(ROOT).reports if run == "default" else ROOT / "docs" / "runs" / run) / "metrics.json"
    if not path.is_file():
        refuse(f"{path.relative_to(ROOT)} not found: {marker} names no published run")
    metrics = json.loads(path.read_text())
    if key not in metrics:
        refuse(f"{path.relative_to(ROOT)} has no {key!r} ({marker} in the documents)")
    return interval(metrics, key, "\u2212") if "_minus_" in key else f"{metrics[key]:.2f}"


def figures(text: str) -> str:
    """``text`` with every figure filled; a figure's marker without its closing one is refused."""
    filled = FIGURE.sub(lambda m: f"{m['open']}{figure(m['spec'])}{m['close']}", text)
    opened, closed = FIGURE_OPEN.findall(filled), [m["spec"] for m in FIGURE.finditer(filled)]
    for spec in opened:
        if spec not in closed:
            refuse(f"<!-- fig:{spec} --> has no <!-- /fig --> after it (before the next marker): close it")
        closed.remove(spec)
    return filled


def tests_block() -> str:
    """How long the README's two commands took: the main job (scripts/timed_repro.sh's record) and
    the tests, with the unit layer (scripts/time_tests.sh's)."""
    reports = Layout(ROOT).reports
    repro = json.loads((reports / "repro_time.json").read_text())
    tests = json.loads((reports / "test_time.json").read_text())
    cores = (f"{repro['cpus']} CPU cores" if repro["cpus"] == tests["cpus"]
             else f"{repro['cpus']} CPU cores (the tests: {tests['cpus']})")
    return (f"Last timed on {cores}: the main job {repro['wall_s'] / 60:.1f} min ({repro_extent(repro)}; "
            f"`scripts/timed_repro.sh`), `pytest` {tests['all_s'] / 60:.0f} min and `pytest tests/unit` "
            f"{tests['unit_s'] / 60:.1f} min (`scripts/time_tests.sh`).\n")


def fill(text: str, prefix: str) -> str:
    """``text`` with every block's contents regenerated; a run not yet published keeps its block."""
    for name in DEFAULT_BLOCKS:
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
        text = pattern.sub(lambda _, n=name, b=begin, e=end: f"{b}\n{default_block(n, prefix)}{e}", text)
    text = re.sub(r"(<!-- params:begin -->).*?(<!-- params:end -->)",
                  lambda m: f"{m.group(1)}\n{params_block(prefix)}{m.group(2)}", text, flags=re.DOTALL)
    text = re.sub(r"(<!-- tests:begin -->).*?(<!-- tests:end -->)",
                  lambda m: f"{m.group(1)}\n{tests_block()}{m.group(2)}", text, flags=re.DOTALL)
    text = figures(text)
    text = re.sub(r"(<!-- pairs:([\w.-]+):begin -->).*?(<!-- pairs:\2:end -->)",
                  lambda m: f"{m.group(1)}\n{pairs_block(m.group(2))}{m.group(3)}", text, flags=re.DOTALL)

    def run_block(block: re.Match) -> str:
        if not (ROOT / "docs" / "runs" / block.group(2) / "run.json").is_file():  # announced, not yet published
            print(f"update_readme: docs/runs/{block.group(2)} not published yet; its block is left as it is")
            return block.group(0)
        return f"{block.group(1)}\n{run_section(block.group(2), prefix)}{block.group(3)}"
    return RUN_BLOCK.sub(run_block, text)


def main() -> None:
    """Copy the default run, fill every document in memory, then write them: a block that cannot be
    filled stops the script before any document changes."""
    publish_default_run()
    filled = {}
    for document in DOCUMENTS:
        path = ROOT / document
        prefix = os.path.relpath(ROOT, path.parent).replace(os.sep, "/") + "/"
        filled[path] = fill(path.read_text(), "" if prefix == "./" else prefix)
    for path, text in filled.items():
        if text != path.read_text():
            path.write_text(text)


if __name__ == "__main__":
    main()
