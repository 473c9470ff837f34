"""`crawl2chat run | refresh | sweep | ablate | chat | serve-model | export | serve | setup | sample-crawl | report`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from cli.args import non_negative, positive, whole_numbers


def _config(args):
    from flows.config import ConfigError, deep_merge, load_config, parse_overrides

    try:
        overrides = parse_overrides(args.set or [])
        if args.work_dir:
            overrides["work_dir"] = args.work_dir
        if getattr(args, "strict", False):
            overrides = deep_merge(overrides, {"data": {"source": {"strict": True}}})
        return load_config(args.preset, overrides, args.overlay or [])
    except ConfigError as err:
        sys.exit(f"crawl2chat: config error: {err}")


class _StageFailureWithoutTraceback(logging.Filter):
    """A StageFailed already says which stage failed and why: log it as that one line.

    Other exceptions keep their traceback, since those are bugs to debug, not bad input.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from flows.common import MachineUnfit, StageFailed
        from tasks.core.lease import LeaseLost, WorkDirBusy

        if record.exc_info and isinstance(record.exc_info[1], (StageFailed, MachineUnfit, WorkDirBusy, LeaseLost)):
            record.msg = f"{record.getMessage().splitlines()[0]}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def cmd_run(args) -> int:
    config = _config(args)
    from flows.common import MachineUnfit, check_machine
    from tasks.core.lease import WorkDirBusy, hold_work_dir

    # Before any work, and before Prefect starts: a machine that lacks what the config asks for,
    # or a work dir another run is writing, is one line. The pipeline flow holds the same lease
    # again (reentrant within this process).
    try:
        check_machine(config)
        with hold_work_dir(config.work_dir, label="crawl2chat run"):
            return _run_pipeline(config)
    except (MachineUnfit, WorkDirBusy) as refusal:
        sys.exit(f"crawl2chat: {refusal}")


def _run_pipeline(config) -> int:
    from collections import Counter

    from flows.common import StageFailed, tally_stage_runs
    from flows.pipeline import pipeline

    # Prefect's console handler sits on the root logger once Prefect has configured logging.
    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        handler.addFilter(_StageFailureWithoutTraceback())

    with tally_stage_runs() as runs:
        state = pipeline(config, return_state=True)
    counts = Counter(state_name for _, state_name in runs)
    print(f"crawl2chat: {counts.get('Completed', 0)} stage runs executed, {counts.get('Cached', 0)} cached"
          + (f", {counts.get('Failed', 0)} failed" if counts.get("Failed") else ""))
    if state.is_failed():
        try:
            state.result()
        except StageFailed as err:
            print(f"crawl2chat: {err}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - one line instead of a traceback
            print(f"crawl2chat: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}",
                  file=sys.stderr)
        return 1
    print(f"crawl2chat: report card: {state.result()}")
    return 0


def cmd_refresh(args) -> int:
    """One data refresh, here and now (the `data-refresh` deployment runs the same flow on its
    schedule); prints the dataset's versions."""
    config = _config(args)
    from flows.common import MachineUnfit, StageFailed
    from flows.refresh import refresh_flow
    from tasks.core.dataset import describe
    from tasks.core.lease import WorkDirBusy

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        handler.addFilter(_StageFailureWithoutTraceback())
    try:
        result = refresh_flow(config)
    except (StageFailed, MachineUnfit, WorkDirBusy) as err:
        sys.exit(f"crawl2chat: {err}")
    print(f"crawl2chat: {result.files} new WARC file(s) taken in, {result.waiting} waiting; "
          f"dataset {result.dataset} at version {result.version}")
    for row in describe(result.dataset) if result.version else []:
        print("  v{version}: {created}  +{files_added} files, +{documents_added} documents ({crawls}); "
              "{train_tokens} train / {val_tokens} val tokens in {shards} shards".format(**row))
    return 0


def cmd_sweep(args) -> int:
    """A scaling-law sweep (docs/sweep.md): the preset's pretraining over a grid of depths, the loss
    fitted against compute; prints the report's path."""
    config = _config(args)
    from pydantic import ValidationError

    from flows.config import describe_validation_error
    from flows.sweep import sweep_flow
    from tasks.train.scaling import SweepConfig

    grid = {k: v for k, v in (("depths", args.depths), ("tokens_per_param", args.tokens_per_param),
                              ("tokens", args.tokens)) if v is not None}
    try:
        sweep = SweepConfig(**grid)
    except ValidationError as err:
        sys.exit(f"crawl2chat: sweep: {describe_validation_error(err)}")
    report = _counting_stage_runs(lambda: sweep_flow(config, sweep))
    print(f"crawl2chat: scaling report: {report}")
    return 0


def _counting_stage_runs(run_flow):
    """`run_flow()`'s result, after printing how many stage runs it executed and found cached; a
    failure that names its stage, or a refusal before any work, ends the command with that one line."""
    from flows.common import MachineUnfit, StageFailed, tally_stage_runs
    from tasks.core.lease import WorkDirBusy

    for handler in logging.getLogger().handlers + logging.getLogger("prefect").handlers:
        handler.addFilter(_StageFailureWithoutTraceback())
    try:
        with tally_stage_runs() as runs:
            result = run_flow()
    except (StageFailed, MachineUnfit, WorkDirBusy) as err:
        sys.exit(f"crawl2chat: {err}")
    states = [state for _, state in runs]
    print(f"crawl2chat: {states.count('Completed')} stage runs executed, {states.count('Cached')} cached")
    return result


def cmd_ablate(args) -> int:
    """An ablation (docs/ablations.md): variants of the data, each trained on one model and budget and
    scored on one reference set; prints every variant's verdict and the report's path. Exits 1 when
    a control fails, since then no verdict is given."""
    import json

    from flows.ablation_plan import load_ablation
    from flows.config import ConfigError

    try:
        ablation = load_ablation(args.file, args.work_dir)
    except ConfigError as err:
        sys.exit(f"crawl2chat: config error: {err}")
    from flows.ablate import ablate_flow

    report = Path(_counting_stage_runs(lambda: ablate_flow(ablation)))
    result = json.loads((report.parent / "ablation.json").read_text())
    for row in result["rows"]:
        comparison = row.get("comparison")
        verdict = "the base" if comparison is None else f"{comparison['verdict']} ({comparison['difference']:+.4f})"
        print(f"  {row['variant']:<20} {row['role']:<17} {row['bpb_mean']:.4f} bpb, {row['passes']:.1f} passes: "
              f"{verdict}")
    for name, why in result["failed"].items():
        print(f"  {name:<20} failed: {why}")
    print(f"crawl2chat: ablation report: {report}")
    if result["controls"] and not result["controls_passed"]:
        print("crawl2chat: a control failed, so the variants' verdicts are withheld (see the report)", file=sys.stderr)
        return 1
    return 0


def cmd_sample_crawl(args) -> int:
    from tasks.data.synthetic import CrawlConfig, generate_crawl

    manifest = generate_crawl(CrawlConfig(seed=args.seed, num_files=args.files, pages_per_file=args.pages), args.out)
    for f in manifest.files:
        print(f.path)
    print(f"{manifest.stats['pages']} pages; labels in {manifest.extras['labels'].path}: {manifest.stats['labels']}")
    return 0


def cmd_report(args) -> int:
    config = _config(args)
    path = Path(config.work_dir) / "report.md"
    if not path.exists():
        sys.exit(f"crawl2chat: no report card at {path}: run `crawl2chat run` first")
    print(path.read_text())
    return 0


def cmd_chat(args) -> int:
    config = _config(args)
    from cli.chat import Sampling, chat_session

    sampling = Sampling(temperature=args.temperature, top_k=args.top_k, max_tokens=args.max_tokens, seed=args.seed)
    return chat_session(config, args.model, args.prompt, sampling, args.device)


def cmd_serve_model(args) -> int:
    config = _config(args)
    from cli.serve_model import serve_models

    return serve_models(config, args.host, args.port, args.device)


def cmd_export(args) -> int:
    """One model of the work dir (or any checkpoint) as a Hugging Face folder, with its tokenizer."""
    config = _config(args)
    from cli.chat import ModelNotFound, checkpoint_for, model_index
    from tasks.export.hf import ExportError, export_hf

    try:
        index = {} if args.checkpoint and args.tokenizer else model_index(config.work_dir)
        checkpoint = args.checkpoint or checkpoint_for(index, args.model, allow_paths=False)
        files = export_hf(checkpoint, args.tokenizer or index["tokenizer"], args.hf)
    except ModelNotFound as err:
        sys.exit(f"crawl2chat: {err}" + (" (the tokenizer comes from there, or give --tokenizer)"
                                          if args.checkpoint else ""))
    except ExportError as err:
        sys.exit(f"crawl2chat: {err}")
    print(f"crawl2chat: {checkpoint} exported to {args.hf} ({len(files)} files); load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(args.hf)!r}, trust_remote_code=True)")
    return 0


def cmd_serve(args) -> int:
    from deployments.serve import serve_all
    from flows.config import ConfigError

    try:
        serve_all(args.preset, args.work_dir)
    except ConfigError as err:
        sys.exit(f"crawl2chat: config error: {err}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # The temporary local server's telemetry heartbeat contends for its SQLite file and
    # logs spurious "database is locked" tracebacks; a local CLI run has no use for it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    parser = argparse.ArgumentParser(prog="crawl2chat", description="From Common Crawl to a chat model.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p):
        p.add_argument("--preset", default="tiny", help="a preset name (flows/presets/) or a YAML file")
        p.add_argument("--overlay", action="append", metavar="NAME|FILE",
                       help="a partial config applied on top of the preset (flows/presets/overlays/), e.g. "
                            "fineweb-exact: the data stages rule for rule as FineWeb's reference (repeatable)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a field, e.g. --set train.pretrain.steps=100 (repeatable)")
        p.add_argument("--work-dir", help="where every stage writes (default: the preset's)")
        return p

    def with_strict(p):
        p.add_argument("--strict", action="store_true",
                       help="fail on a crawl file that is not a WARC file, is empty or is cut short (by default "
                            "it is skipped and counted: data.source.strict)")
        return p

    with_strict(with_config(sub.add_parser("run", help="run the whole pipeline"))).set_defaults(fn=cmd_run)
    with_strict(with_config(sub.add_parser("refresh", help="take in the crawl files not seen yet as the dataset's "
                                                           "next version (docs/refresh.md)"))).set_defaults(fn=cmd_refresh)
    p = with_config(sub.add_parser("sweep", help="a scaling-law sweep: pretraining over a grid of depths, loss "
                                                 "fitted against compute (docs/sweep.md)"))
    p.add_argument("--depths", type=whole_numbers, help="comma-separated depths, e.g. 2,3,4,5,6")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--tokens-per-param", type=float, help="training tokens per parameter of each depth")
    budget.add_argument("--tokens", type=whole_numbers, help="explicit token budgets, each trained at every depth")
    p.set_defaults(fn=cmd_sweep)
    p = sub.add_parser("ablate", help="which data recipe makes the better model? variants of the data trained and "
                                      "scored on one yardstick, with verdicts (docs/ablations.md)")
    p.add_argument("file", help="the ablation, e.g. configs/ablations/filters.yaml")
    p.add_argument("--work-dir", help="where every stage writes (default: the ablation's, else its preset's)")
    p.set_defaults(fn=cmd_ablate)
    p = with_config(sub.add_parser("chat", help="talk to a trained model"))
    p.add_argument("--model", default="rlhf", help="base, sft or rlhf (from the work dir's models.json), "
                                                   "or a checkpoint directory")
    p.add_argument("--prompt", help="answer one prompt and exit")
    p.add_argument("--temperature", type=non_negative, default=0.0, help="0 is greedy (the default)")
    p.add_argument("--top-k", type=positive, help="sample from the k likeliest tokens only")
    p.add_argument("--max-tokens", type=positive, default=96, help="the longest reply, in tokens")
    p.add_argument("--seed", type=int, default=0, help="the first reply's seed; each later reply takes the next")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(fn=cmd_chat)
    p = with_config(sub.add_parser("serve-model", help="serve the trained models: an OpenAI-compatible API "
                                                      "and a web chat page"))
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.set_defaults(fn=cmd_serve_model)
    p = with_config(sub.add_parser("export", help="write a model as a Hugging Face folder that transformers "
                                                 "loads (trust_remote_code=True), tokenizer included"))
    p.add_argument("--hf", required=True, metavar="DIR", help="the folder to write (new, empty or an earlier export)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="rlhf", help="base, sft, rlhf (the default) or dpo, from the work dir's "
                                                       "models.json")
    which.add_argument("--checkpoint", metavar="PATH", help="a checkpoint directory instead (step-NNNNNN/)")
    p.add_argument("--tokenizer", metavar="FILE", help="the tokenizer file (default: the work dir's)")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("serve", help="serve the deployments (UI runs, schedules) from this process")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--work-dir", help="where the served runs write (default: the preset's), made absolute "
                                      "from where serve starts")
    p.set_defaults(fn=cmd_serve)
    from cli.setup import add_setup_parser

    add_setup_parser(sub)
    p = sub.add_parser("sample-crawl", help="write the synthetic crawl on its own")
    p.add_argument("--out", default="sample-crawl")
    p.add_argument("--files", type=int, default=2)
    p.add_argument("--pages", type=int, default=50)
    p.add_argument("--seed", type=int, default=1234)
    p.set_defaults(fn=cmd_sample_crawl)
    with_config(sub.add_parser("report", help="print the last report card")).set_defaults(fn=cmd_report)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
