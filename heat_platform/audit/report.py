"""Lineage and audit log for people: plain text for the terminal (``heat-platform lineage``) and
Markdown for the Dagster UI (the ``audit_trail`` asset)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from heat_platform.audit.lineage import Lineage, ModelLineage
from heat_platform.data.catalog import AuditEntry
from heat_platform.models.audit_log import AuditCheck

METRICS_SHOWN = 12


def text(lineage: Lineage) -> str:
    """The whole chain, one fact per line, hashes in full."""
    lines: list[str] = []
    request = lineage.reference.request
    if request is not None:
        lines.append(f"request {request['request_id']} at {request.get('ts')}: "
                     f"{request.get('endpoint')}, {request.get('n_points')} points, experiment "
                     f"{request.get('experiment')}, model_version {request.get('model_version')}"
                     f" (logged in {request.get('log_file')})")
    if lineage.bento is not None:
        lines.append(f"bento {lineage.bento['tag']} built {lineage.bento['created']}, default "
                     f"experiment {lineage.bento['default']}")
    for chain in lineage.models:
        lines += _model_text(chain)
    if lineage.verification is not None:
        lines.append(f"verification: {len(lineage.checked)} files re-hashed, "
                     f"{len(lineage.verification)} mismatches")
        lines += [f"  MISMATCH {m}" for m in lineage.verification]
    return "\n".join(lines)


def _model_text(chain: ModelLineage) -> list[str]:
    model, run, gate, data = chain.model, chain.mlflow_run, chain.gate, chain.training_set
    lines = []
    if chain.bento_model is not None:
        lines.append(f"  serves {chain.experiment} with BentoML model {chain.bento_model['tag']}"
                     f" ({chain.bento_model['file']})")
    lines += [
        f"model {model['name']} v{model['version']} ({model['kind']}): {model['status']}; "
        f"registered {model['registered_at']}",
        f"  artifact {model['artifact']} sha256 {model['sha256']}",
        f"  mlflow run {run['run_id']} ({run['status']}) {run['url']}",
        f"    git commit {run['git_commit']}, Dagster run {run['dagster_run_id']}",
        "    packages " + ", ".join(f"{k} {v}" for k, v in run["packages"].items()),
        f"    params ({len(run['params'])}): " + ", ".join(
            f"{k}={v}" for k, v in list(run["params"].items())[:METRICS_SHOWN])
        + (", ..." if len(run["params"]) > METRICS_SHOWN else ""),
        f"    metrics ({len(run['metrics'])}): " + ", ".join(
            f"{k}={v:.6g}" for k, v in list(run["metrics"].items())[:METRICS_SHOWN])
        + (", ..." if len(run["metrics"]) > METRICS_SHOWN else ""),
        "    artifacts: " + ", ".join(run["artifacts"]),
    ]
    decision = gate.get("decision")
    if decision:
        lines.append(f"  gate (Dagster run {gate['judged_in_dagster_run']}): "
                     f"{decision['decision']} v{decision['winner']}; this run: {gate['run_tag']}")
        lines += [f"    - {reason}" for reason in decision["reasons"]]
    else:
        lines.append("  gate: not judged")
    lines.append(f"  audit log ({len(chain.audit)} entries about v{model['version']}):")
    lines += [f"    #{e['id']} {e['at']} {e['action']}{'/' + e['phase'] if e['phase'] else ''} "
              f"by {e['actor']} v{e['from_version'] or '-'} -> v{e['to_version'] or '-'} "
              f"(run {e['dagster_run_id']}) hash {e['entry_hash'] or '(legacy)'}: "
              + "; ".join(e["reasons"]) for e in chain.audit]
    lines.append(f"  training set data_version {data['data_version']} at {data['directory']}")
    if "missing" in data:
        lines.append(f"    {data['missing']}")
    else:
        lines.append(f"    {data['n_train']} training and {data['n_validation']} validation "
                     f"readings, noise {(data.get('noise') or {}).get('source', 'unknown')}")
        lines += [f"    file {name} sha256 {sha}" for name, sha in data["files"].items()]
    spec = data.get("problem_spec")
    if spec:
        lines.append(f"    problem.yaml sha256 {spec['sha256']} stored {spec['blob_path']}")
    lines.append(f"  raw files ({len(chain.raw_files)} partitions, "
                 f"{data.get('quarantined_rows', 0)} rows quarantined):")
    for raw in chain.raw_files:
        lines += [
            f"    batch {raw.batch}: sha256 {raw.sha256}, {raw.size_bytes} bytes",
            f"      from {raw.source_path}, ingested {raw.ingested_at} (run {raw.ingest_run_id})",
            f"      stored {raw.blob_path}",
            f"      validation {raw.status} {raw.validated_at} (run {raw.validation_run_id}): "
            f"{raw.n_rows} rows, {raw.n_valid} valid, {raw.n_quarantined} quarantined"
            + (f"; {raw.message}" if raw.message else ""),
            f"      in this training set: {raw.n_train} training, {raw.n_validation} "
            "validation readings",
        ]
    return lines


def markdown(lineage: Lineage | None, history: Iterable[AuditEntry], check: AuditCheck) -> str:
    """The champion's lineage and the experiment's decisions, for the Dagster UI."""
    out = []
    if check.ok:
        out.append(f"**Audit log intact**: {check.chain.head}, recorded head "
                   f"{check.recorded_head or 'none'}.")
    else:
        out.append("**Audit log check FAILED**:\n" + "\n".join(f"- {p}" for p in check.problems))
    out += [f"- note: {n}" for n in check.notes]
    if lineage is None:
        out.append("\nNo champion yet.")
    for chain in (lineage.models if lineage else []):
        model, run, data = chain.model, chain.mlflow_run, chain.training_set
        out += [
            f"\n### Champion {model['name']} v{model['version']} ({model['kind']})",
            f"- model artifact sha256 `{model['sha256']}`",
            f"- MLflow run [{run['run_id']}]({run['url']}), git commit `{run['git_commit']}`, "
            f"trained in Dagster run `{run['dagster_run_id']}`",
            f"- training set `{data['data_version']}`"
            + (f", problem.yaml `{data['problem_spec']['sha256']}`"
               if data.get("problem_spec") else ""),
            "",
            "| batch | raw file sha256 | source | ingested | validation | valid | quarantined |",
            "|---|---|---|---|---|---|---|",
        ]
        out += [f"| {_cell(r.batch)} | `{r.sha256}` | {_cell(r.source_path)} | {r.ingested_at} "
                f"| {r.status} | {r.n_valid} | {r.n_quarantined} |" for r in chain.raw_files]
        decision = chain.gate.get("decision")
        if decision:
            out.append(f"\nGate: **{decision['decision']}** v{decision['winner']} — "
                       + "; ".join(_cell(r) for r in decision["reasons"]))
    out += ["\n### Decisions (newest first)",
            "| # | time (UTC) | action | phase | actor | from | to | reasons | hash |",
            "|---|---|---|---|---|---|---|---|---|"]
    out += [f"| {e.id} | {e.at:%Y-%m-%d %H:%M:%S} | {e.action} | {e.phase or ''} | "
            f"{_cell(e.actor)} | {e.from_version or ''} | {e.to_version or ''} | "
            f"{_cell('; '.join(e.reasons))[:200]} | `{(e.entry_hash or 'legacy')[:12]}` |"
            for e in history]
    return "\n".join(out)


def _cell(value: object) -> str:
    """User text (batch names, paths, reasons) as literal text in Markdown: no markup, no pipe
    or line break to end a table cell."""
    return re.sub(r"([\\`*_\[\]<>|#!~])", r"\\\1", str(value)).replace("\n", " ")
