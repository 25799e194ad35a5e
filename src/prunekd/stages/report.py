"""report: results.csv, summary.csv, report.md and figures from every run's metrics.

Also the sweep in MLflow: the report run adopts every run behind its tables as a child, and
registers the retrained models (and the teacher) under ``prunekd-<dataset>-<arch>`` with aliases.
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

import pandas as pd

from ..config import Params
from ..io import stage_outputs, write_json
from ..models import read_meta
from ..paths import (ACCURACY_FIGURE, ACCURACY_PLOT, HISTORY_PLOT, INT8_FILE, KD_FIGURE, LATENCY_FIGURE, METRICS_FILE,
                     MODEL_FILE, PARETO_FIGURE, PLOTS_DIR, REPORT_FILE, REPORT_OUTPUTS, RESULTS_FILE, RETRAINING_FIGURE,
                     SUMMARY_FILE, Layout)
from ..data import load_prepared
from ..report import (accuracy_table, aliases, collect, collect_correct, collect_histories, collect_int8,
                      deploy_int8, flat_metrics, history_table, int8_metrics, kd_gain_figure, latency_budgets,
                      latency_label, markdown,
                      plot_accuracy, plot_curves, plot_latency, plot_pareto, read_latency, read_sensitivity, summarize)
from ..latency import latency_metrics
from ..tracking import StageRun, adopt, dvc_experiment, model_run_id, register, stage_run
from .cli import run_cli

ARTIFACTS = "report"  # the report run's artifact folder in MLflow


def model_file(layout: Layout, row: pd.Series) -> Path:
    if row["mode"] == "teacher":
        return layout.teacher / MODEL_FILE
    return layout.retrained(row["ratio"], row["mode"], int(row["seed"])) / MODEL_FILE


def registered_name(dataset: str, arch: str) -> str:
    return f"prunekd-{dataset}-{arch.replace('/', '-')}"  # MLflow refuses '/' in names (torchvision/resnet18)


def record_sweep(run: StageRun, params: Params, layout: Layout, results: pd.DataFrame,
                 latency: pd.DataFrame) -> dict[str, str]:
    """Adopt the sweep's runs, register its models and set aliases; returns alias -> version."""
    if not run.run_id:  # tracking off: no run to adopt them, nothing recorded to register
        return {}
    run_ids = [model_run_id(model_file(layout, row)) for _, row in results.iterrows()]
    pruned = {model_run_id(layout.pruned(r) / MODEL_FILE) for r in params.prune.ratios}
    int8_ids = [model_run_id(model_file(layout, row).with_name(INT8_FILE)) if pd.notna(row["top1_int8"]) else ""
                for _, row in results.iterrows()]  # the quantize runs
    missing = adopt(run.run_id, [r for r in [*run_ids, *sorted(pruned), *int8_ids] if r])
    if missing:
        print(f"report: {len(missing)} run(s) not in this tracking store (models made elsewhere): "
              f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}", file=sys.stderr)
    experiment = dvc_experiment()

    def tags(row: pd.Series, precision: str) -> dict[str, str]:
        top1 = row["top1_int8" if precision == "int8" else "top1"]
        return ({"mode": row["mode"], "ratio": f"{row['ratio']:g}", "precision": precision,
                 "seed": "" if pd.isna(row["seed"]) else str(int(row["seed"])),
                 "test_top1": f"{top1:.2f}", "params": str(int(row["params"]))}
                | ({"dvc_exp": experiment} if experiment else {}))

    rows = list(results.iterrows())
    versions = {run_id: tags(row, "fp32") for run_id, (_, row) in zip(run_ids, rows) if run_id and run_id not in missing}
    int8_versions = {run_id: tags(row, "int8") for run_id, (_, row) in zip(int8_ids, rows)
                     if run_id and run_id not in missing}
    name = registered_name(read_meta(layout.teacher / MODEL_FILE).get("dataset", "data"), params.model.arch)
    # A DVC experiment's models are registered as versions, but the aliases stay with the workspace's
    # sweep: an experiment is a candidate until it is applied (`dvc exp apply`) and reproduced.
    wanted = {} if experiment else {alias: i for alias, i in aliases(results).items()}
    # The deploy registry (ONNX) holds both forms of each model; an alias there names the form to
    # deploy (report.deploy_int8: the int8 form where it is shown faster and keeps its accuracy).
    use_int8 = deploy_int8(results, latency)
    deployed = {alias: int8_ids[i] if use_int8.iloc[i] and int8_ids[i] in int8_versions else run_ids[i]
                for alias, i in wanted.items()}
    chosen = {}
    for registered_as, onnx, forms, targets in (
            (name, False, versions, {alias: run_ids[i] for alias, i in wanted.items()}),
            (f"{name}-onnx", True, versions | int8_versions, deployed)):
        registered = register(registered_as, forms, targets, onnx=onnx)
        chosen = {alias: registered[run_id] for alias, run_id in targets.items() if run_id in registered}
        print(f"registered {registered_as}: " + ", ".join(f"@{a} v{v}" for a, v in chosen.items()))
    run.set_tags({"registered_model": name, "registered_onnx_model": f"{name}-onnx"})
    return chosen


VERDICT_STARTS = ("- **", "Pooled across", "KD − FT differs")  # the answer's paragraphs that state a verdict


def run_description(report: str) -> str:
    """The report run's description in MLflow's UI: the report's answer section (the whole report
    is its artifact report/report.md, figures beside it)."""
    answer = [part for part in report.split("\n## ") if part.startswith("The answer")]
    body = ("## " + answer[0].strip()) if answer else "No answer section: this sweep ran no ft or kd mode."
    body = "\n".join(line for line in body.splitlines() if not line.startswith("!["))  # figures: in report.md
    # The UI shows a description's first lines and folds the rest: the verdicts (each ratio's line,
    # the pooled one) come first, then the regime they hold for and the table.
    heading, *paragraphs = [p for p in body.split("\n\n") if p.strip()]
    verdicts = [p for p in paragraphs if p.startswith(VERDICT_STARTS)]
    body = "\n\n".join([heading, *verdicts, *(p for p in paragraphs if p not in verdicts)])
    return body + f"\n\nThe whole report, with its figures: artifacts, `{PurePosixPath(ARTIFACTS, REPORT_FILE)}`."


def run(params: Params, layout: Layout) -> dict:
    latency = read_latency(layout.latency, params.prune.ratios)
    results = collect(layout, ratios=params.prune.ratios, modes=params.retrain.modes, seeds=params.retrain.seeds,
                      latency=latency)
    prepared = load_prepared(layout.prepared)
    correct = collect_correct(layout, results, prepared.test.y.numpy())
    int8 = collect_int8(layout, results, prepared.test.y.numpy(), correct)
    histories = collect_histories(layout, results)
    sensitivity = read_sensitivity(layout.curves)
    r = params.retrain
    regime = {"train_subset": r.train_subset, "epochs": r.epochs, "lr": r.lr, "keep": r.keep, "n_seeds": len(r.seeds)}
    summary = summarize(results)
    teacher = results[results["mode"] == "teacher"].iloc[0]
    # the new outputs replace the previous ones once the block, MLflow logging included, succeeds
    sensitivity_figure = layout.sensitivity_figure.relative_to(layout.reports).as_posix()  # as report.md links it
    with stage_outputs(*(layout.reports / name for name in REPORT_OUTPUTS), root=layout.root) as tmp:
        plot_accuracy(summary, float(teacher["top1"]), tmp / ACCURACY_FIGURE)
        plot_pareto(summary, teacher, tmp / PARETO_FIGURE, latency_label(latency))
        plot_latency(latency, tmp / LATENCY_FIGURE)
        plot_curves(histories, summary, tmp / RETRAINING_FIGURE)
        if {"kd", "ft"} & set(params.retrain.modes):
            kd_gain_figure(results, summary, tmp / KD_FIGURE, correct)
        results.to_csv(tmp / RESULTS_FILE, index=False)
        summary.to_csv(tmp / SUMMARY_FILE, index=False)
        flat = flat_metrics(results, summary, correct) | int8_metrics(results, int8, latency)
        write_json(tmp / METRICS_FILE, flat)  # what `dvc exp show` lists
        (tmp / PLOTS_DIR).mkdir()  # the table dvc.yaml's accuracy plot draws (dvc plots diff compares it)
        accuracy_table(summary, float(teacher["top1"])).to_csv(tmp / ACCURACY_PLOT, index=False)
        history_table(histories).to_csv(tmp / HISTORY_PLOT, index=False)
        (tmp / REPORT_FILE).write_text(markdown(
            results, summary=summary, latency=latency, sensitivity=sensitivity, correct=correct,
            regime_params=regime, num_classes=prepared.num_classes, accuracy_figure=ACCURACY_FIGURE,
            latency_figure=LATENCY_FIGURE, pareto_figure=PARETO_FIGURE, sensitivity_figure=sensitivity_figure,
            kd_figure=KD_FIGURE, retraining_figure=RETRAINING_FIGURE, int8=int8,
            budgets=latency_budgets(layout, params.prune.ratios)))
        with stage_run("report", params, layout=layout) as run:
            for name in REPORT_OUTPUTS:
                run.log_artifact(tmp / name, ARTIFACTS)
            run.log_artifact(layout.latency, ARTIFACTS)
            run.log_metrics(flat)  # the answer first: what the runs table shows for this run
            run.log_metrics({f"latency/{k}_ratio_{r['ratio']:g}": v for r in latency.to_dict("records")
                             for k, v in latency_metrics(r).items()})
            compare = run.save_comparison_view()
            run.describe(run_description((tmp / REPORT_FILE).read_text())
                         + f"\n\n[Compare ratios and modes]({compare}): test top-1 against params, grouped by "
                           "mode and ratio (the retrain runs, each point the mean of its seeds).")
            record_sweep(run, params, layout, results, latency)
    print(layout.report.read_text())
    return {"runs": len(results) - 1, "teacher_top1": float(teacher["top1"])}


def main(argv: list[str] | None = None) -> int:
    return run_cli("report", argv, lambda args, params, layout: run(params, layout), doc=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
