"""The documents a reader opens first: every link resolves, and the front page stays short."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

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


def dvc_outputs() -> list[Path]:
    """What the pipeline writes (dvc.yaml's outs, metrics and plots): a link to one resolves once
    `dvc repro` or `dvc pull` has run, so a fresh clone without them still has no broken link."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outputs = []
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []):
                name = entry if isinstance(entry, str) else next(iter(entry))
                if "${" not in name:
                    outputs.append((ROOT / name).resolve())
    return outputs


def links(path: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(FENCE.sub("", path.read_text()))
            if not m.group(1).startswith(("http://", "https://", "mailto:"))]


OUTPUTS = dvc_outputs()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_in_the_document_resolves(document):
    broken = []
    for link in links(document):
        target, _, anchor = link.partition("#")
        path = (document.parent / target).resolve() if target else document
        if not path.exists() and not any(path == out or path.is_relative_to(out) for out in OUTPUTS):
            broken.append(link)
        elif anchor and path.suffix == ".md" and path.exists() and anchor not in anchors(path):
            broken.append(link)
    assert not broken, f"{document.name}: links that lead nowhere: {broken}"


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


def test_a_keys_comment_continues_on_the_indented_comment_lines_below_it():
    update_readme = load_update_readme()
    text = "# file\nseed: 0  # one\n\nkd:  # section\n  alpha: 0.9  # two\n             # three\n  temperature: 4\n"
    assert update_readme.documented_keys(text) == {
        "seed": ("0", "one"), "kd": ("", "section"), "kd.alpha": ("0.9", "two three"), "kd.temperature": ("4", "")}
