"""The documents a reader opens first: every link resolves in git, the default run's report they
show is the one dvc.lock records, and the front page stays short."""

import hashlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ..conftest import BIN

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(FENCE.sub("", path.read_text()))
            if not m.group(1).startswith(("http://", "https://", "mailto:"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_in_the_document_resolves(document):
    """In git: a fresh clone, or the repository read online, has no DVC outputs (reports/ and
    models/ come with `dvc repro` or `dvc pull`), so no document links into them."""
    broken = []
    tracked = set(subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.splitlines())
    folders = {parent.as_posix() for name in tracked for parent in Path(name).parents}
    for link in links(document):
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else None
        if name not in tracked and name not in folders:
            broken.append(link)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(link)
    assert not broken, f"{document.name}: links that lead nowhere in git: {broken}"


def test_the_slug_follows_githubs_rule():
    assert slug("Controls: what distillation's lead in that regime is made of") == \
        "controls-what-distillations-lead-in-that-regime-is-made-of"
    assert slug(" Is pruning worth it? Equal budgets") == "is-pruning-worth-it-equal-budgets"


def test_the_front_page_stays_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def load_update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "scripts" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_parameter_reference_is_generated_and_documents_every_key():
    update_readme = load_update_readme()
    block = update_readme.params_block()
    guide = (ROOT / "docs" / "guide.md").read_text()
    assert block in guide, "docs/guide.md's parameter table is stale: run python scripts/update_readme.py"
    rows = [row.split(" | ") for row in block.splitlines()[2:]]
    undocumented = [row[0] for row in rows if not row[-1].strip(" |")]
    assert not undocumented, f"params.yaml keys with no comment: {undocumented}"
    in_file = {key for key, (value, _) in update_readme.documented_keys((ROOT / "params.yaml").read_text()).items()
               if value}  # a section's own line has no value
    assert {row[0].strip("| `") for row in rows} == in_file  # every key of params.yaml, and no other


def test_the_readmes_test_times_are_the_last_measured_ones():
    """Generated from scripts/time_tests.sh's record, never typed."""
    readme = (ROOT / "README.md").read_text()
    assert f"<!-- tests:begin -->\n{load_update_readme().tests_block()}<!-- tests:end -->" in readme, \
        "README.md's test times are stale: run python scripts/update_readme.py"


def test_the_tables_of_paired_runs_are_generated():
    update_readme = load_update_readme()
    results = (ROOT / "docs" / "results.md").read_text()
    for name in update_readme.PAIRS:
        block = f"<!-- pairs:{name}:begin -->\n{update_readme.pairs_block(name)}<!-- pairs:{name}:end -->"
        assert block in results, f"docs/results.md's pairs:{name} table is stale: run python scripts/update_readme.py"


def test_every_figure_in_a_sentence_is_generated():
    """A figure the prose quotes from a published run (<!-- fig:<run>:<key> -->) is the run's own."""
    update_readme = load_update_readme()
    quoted = 0
    for document in DOCUMENTS:
        for match in update_readme.FIGURE.finditer(document.read_text()):
            whole = match.group(0)
            assert whole == f"{match['open']}{update_readme.figure(match['spec'])}{match['close']}", \
                f"{document.name}: {whole} is stale: run python scripts/update_readme.py"
            quoted += 1
    assert quoted >= 5
    with pytest.raises(SystemExit):  # a key the run does not have: one line, exit 2
        update_readme.figure("headroom-75:no_such_key")


def test_a_keys_comment_continues_on_the_indented_comment_lines_below_it():
    update_readme = load_update_readme()
    text = "# file\nseed: 0  # one\n\nkd:  # section\n  alpha: 0.9  # two\n             # three\n  temperature: 4\n"
    assert update_readme.documented_keys(text) == {
        "seed": ("0", "one"), "kd": ("", "section"), "kd.alpha": ("0.9", "two three"), "kd.temperature": ("4", "")}


def dvc_md5(path: Path) -> str:
    """DVC's hash of a file, or of a folder (the md5 of its files' sorted listing, ``.dir``)."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    entries = sorted(({"md5": hashlib.md5(f.read_bytes()).hexdigest(), "relpath": f.relative_to(path).as_posix()}
                      for f in path.rglob("*") if f.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def test_the_default_runs_published_report_is_the_one_dvc_lock_records():
    """docs/default-run/ (what the README shows of the default run, copied by update_readme.py)
    holds the very report, figures and curves dvc.lock records as reports/'s."""
    update_readme = load_update_readme()
    locked = {out["path"]: out["md5"] for stage in yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"].values()
              for out in stage.get("outs", [])}
    published = ROOT / update_readme.DEFAULT_RUN
    stale = [name for name in update_readme.published_outputs()
             if dvc_md5(published / name) != locked[f"reports/{name}"]]
    assert not stale, f"{update_readme.DEFAULT_RUN}: {stale} differ from dvc.lock's: run python scripts/update_readme.py"
    assert sorted(p.name for p in published.iterdir()) == sorted(update_readme.published_outputs())


def test_the_hash_of_a_folder_is_dvcs(tmp_path):
    """dvc_md5 against real `dvc add` of a folder with a nested file."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "sub" / "b.bin").write_bytes(bytes(range(256)))
    for args in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "add", "-q", "d"]):
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    [out] = yaml.safe_load((tmp_path / "d.dvc").read_text())["outs"]
    assert dvc_md5(tmp_path / "d") == out["md5"] and dvc_md5(tmp_path / "d" / "a.txt") == hashlib.md5(b"a").hexdigest()
