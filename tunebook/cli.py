"""The `tunebook` command. Every Make target is a thin call of one subcommand here."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tunebook.errors import TunebookError
from tunebook.paths import PATHS


def _cmd_setup_model(a) -> int:
    from tunebook import embedded_model

    if embedded_model.is_converted(a.out) and not a.force:
        print(f"embedded model: {a.out} already converted")
        return 0
    print(f"converting {embedded_model.find_gguf().name} -> {a.out} (about a minute) ...")
    embedded_model.convert(Path(a.out), force=a.force)
    print(f"embedded model: {a.out} ready")
    return 0


def _cmd_train(a) -> int:
    from tunebook.engines.process import stop_with_make
    from tunebook.train import train

    stop_with_make()
    from tunebook.launch import from_env

    train(a.recipe, a.args, engine=a.engine, runs_root=Path(a.runs), resume=a.resume or None,
          launch=from_env(a.nproc or None))
    return 0


def _cmd_validate(a) -> int:
    from tunebook.lock import RECIPES_ROOT, discover
    from tunebook.recipe import load_recipe
    from tunebook.validation import validate_recipe

    paths = [Path(p) for p in a.recipes] or discover(RECIPES_ROOT)
    failed = 0
    for path in paths:
        try:
            validate_recipe(load_recipe(path))
            print(f"ok      {path}")
        except TunebookError as exc:
            failed += 1
            print(f"FAILED  {path}")
            for p in exc.problems:
                print(f"    {p}")
    print(f"\n{len(paths) - failed} of {len(paths)} recipes valid")
    return 2 if failed else 0


def _cmd_show(a) -> int:
    from tunebook.launch import from_env
    from tunebook.recipe import dump_yaml, load_recipe
    from tunebook.resolve import resolve

    launch = from_env(a.nproc or None)
    if launch.distributed and not launch.ray:
        # first, so a node without the model (a hub id, offline here) still learns the command
        _print_launch(launch, load_recipe(a.recipe).meta)
    machine = None
    if a.on == "cuda":  # what a GPU node would run: its inputs (hub model, data) are not checked here
        from dataclasses import replace

        from tunebook.machine import detect

        machine = replace(detect(), cuda_devices=("NVIDIA GPU with bf16 (planned)",) * launch.nproc, cuda_bf16=True)
    resolved = resolve(a.recipe, a.args, engine=a.engine, launch=launch, machine=machine,
                       check_inputs=machine is None)  # the checks `make train` makes
    if resolved.launch.ray:  # the recipe's use_ray decides, so only after resolving
        _print_launch(resolved.launch, resolved.meta)
    print(dump_yaml(resolved.adapted))
    print(f"# adapted for {resolved.machine.kind}:")
    for c in resolved.changes:
        print(f"#   {c}")
    if resolved.notices:
        print("# notices (what this config changes about what is trained or shipped):")
        for n in resolved.notices:
            print(f"#   {n.key}: {n.message}")
    resolved.say_notices()
    return 0


def _print_launch(launch, meta) -> None:
    from tunebook.engines import get_engine

    config = f"runs/{meta.name}/<run-id>/config.yaml"
    cmd = launch.shell(get_engine(meta.engine).WORKER, [config, config.replace("config.yaml", "metrics.json")])
    if launch.ray:
        print(f"# launch: Ray Train, {launch.nproc} workers on {launch.ray_address or 'a local Ray cluster'}; "
              "`make train` runs:")
        print(f"#   {cmd}")
        return
    print(f"# launch: {launch.world_size} processes ({launch.nproc} per node x {launch.nnodes} node(s)); "
          "`make train ... NPROC=...` runs this on each node:")
    print(f"#   {cmd}")
    print(f"# the engine alone, by hand: torchrun --nproc_per_node={launch.nproc} --nnodes={launch.nnodes} "
          f"-m axolotl.cli.train {config}")


def _cmd_lock(a) -> int:
    from tunebook.lock import RECIPES_ROOT, check, update

    root = Path(a.root or RECIPES_ROOT)
    if a.check:
        problems = check(root)
        if problems:
            raise TunebookError(problems)
        print("versions.lock is up to date")
        return 0
    changed = update(root, a.message)
    print(f"versions.lock: {len(changed)} entries changed" + (": " + ", ".join(changed) if changed else ""))
    _report_skipped(root)
    return 0


def _report_skipped(root: Path) -> None:
    """Files under recipes/ that are not recipes: a line each on stderr, never a traceback."""
    from tunebook.lock import recipes

    for problem in recipes(root)[1]:
        print(f"skipped: {problem}", file=sys.stderr)


def _cmd_list(a) -> int:
    from tunebook.catalog import render_table, rows
    from tunebook.lock import RECIPES_ROOT

    print(render_table(rows()))
    _report_skipped(RECIPES_ROOT)
    return 0


def _cmd_new(a) -> int:
    from tunebook.catalog import import_recipe, new_recipe
    from tunebook.importer import is_recipe
    from tunebook.recipe import load_recipe

    root = Path(a.root or PATHS.recipes)
    if is_recipe(load_recipe(a.src).config):
        dest = new_recipe(Path(a.src), Path(a.dest), root)
        print(f"created {dest} (version 1, locked); edit it, then: make train RECIPE={dest}")
        return 0
    imported = import_recipe(Path(a.src), Path(a.dest), root)
    m = imported.meta
    print(f"imported {a.src} as {imported.path}: recipe {m['name']} v1 ({m['family']}, {m['method']}, "
          f"engine {m['engine']}), validated and locked")
    if imported.to_decide:
        print("still to decide on this machine:")
        for item in imported.to_decide:
            print(f"  - {item}")
    print(f"then: make show RECIPE={imported.path} ARGS=\"...\"   and   make train RECIPE={imported.path} ARGS=\"...\"")
    return 0


def _run_for(recipe_path: str, run: str | None):
    from tunebook.recipe import load_recipe
    from tunebook.runs import find_run

    return find_run(load_recipe(recipe_path).meta.name, run, PATHS.runs)


def _cmd_merge(a) -> int:
    from tunebook.merge import merge_run

    run = _run_for(a.recipe, a.run)
    print(f"merging the adapter of {run.path} into its full-precision base ...")
    info = merge_run(run)
    print(f"merged model: {info['path']} ({info['bytes'] / 2**20:.1f} MiB)\n"
          f"check: merged logits vs base+adapter max |diff| = {info['logits_max_abs_diff']:.2e} "
          f"(logit scale {info['logits_scale']:.1f})\nbase: {info['base_model']}, {info['merged_into']}"
          + (f"\nvs the 4-bit model eval and chat use: max |diff| = {info['logits_max_abs_diff_vs_4bit_model']:.2e}"
             if info["logits_max_abs_diff_vs_4bit_model"] is not None else "")
          + f"\npolicy: {info['policy']}")
    return 0


def _cmd_export(a) -> int:
    from tunebook.export import export_run, render

    run = _run_for(a.recipe, a.run)
    print(render(export_run(run, [q for q in a.quant.split(",") if q])))
    return 0


def _cmd_serve(a) -> int:
    from tunebook.export import latest_gguf, _previous, export_dir
    from tunebook.serve import serve

    run = _run_for(a.recipe, a.run)
    gguf = latest_gguf(run, a.quant or None)
    rec = _previous(export_dir(run))
    serve(gguf, rec.recipe.name if rec else run.path.parent.name, a.port, rec.system_prompt if rec else None)
    return 0


def _cmd_tensorboard(a) -> int:
    """TensorBoard over runs/ (or one recipe's runs): curves appear while a run is training."""
    from tunebook.recipe import load_recipe

    logdir = PATHS.runs / load_recipe(a.recipe).meta.name if a.recipe else PATHS.runs
    logdir.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("tensorboard")
    print(f"TensorBoard on {logdir}: http://127.0.0.1:{a.port}/  (Ctrl-C stops it)", flush=True)
    os.execv(str(exe), [str(exe), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(a.port)])


def _cmd_mlflow_ui(a) -> int:
    """MLflow's UI on the store `TRACKER=mlflow` runs log to (runs/mlflow.db unless MLFLOW_TRACKING_URI)."""
    from tunebook.trackers import default_mlflow_uri

    uri = default_mlflow_uri()
    PATHS.runs.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("mlflow")
    print(f"MLflow UI on {uri}: http://127.0.0.1:{a.port}/  (Ctrl-C stops it)", flush=True)
    os.execv(str(exe), [str(exe), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(a.port)])


def _cmd_chat(a) -> int:
    from tunebook.chat import Chat, ServerChat, interactive

    if a.server:  # a running `make serve` (or any OpenAI-compatible server)
        chat = ServerChat(a.server, system=a.system or None, max_new_tokens=a.max_new_tokens)
        print(f"model: {chat.description}", file=sys.stderr)
    else:
        from tunebook.loading import POLICY

        chat = Chat(_run_for(a.recipe, a.run), system=a.system or None, max_new_tokens=a.max_new_tokens)
        print(f"model: {chat.description}\npolicy: {POLICY}", file=sys.stderr)
    if a.prompt:
        print(chat.reply([{"role": "user", "content": a.prompt}]))
    else:
        interactive(chat)
    return 0


def _cmd_eval(a) -> int:
    from tunebook.evaluate import ensure_eval, evaluate_export, render, render_export

    run = _run_for(a.recipe, a.run)
    tasks = [t for t in a.tasks.split(",") if t] or None
    if a.export:
        print(render_export(evaluate_export(run, None if a.export == "latest" else a.export, tasks, a.limit), run))
        return 0
    print(render(ensure_eval(run, tasks, a.limit, nproc=a.nproc or int(os.environ.get("NPROC") or 1))))
    return 0


def _cmd_compare(a) -> int:
    from tunebook.compare import DEFAULT_RECIPES, build_report, collect

    recipes = a.recipes.split() if a.recipes else list(DEFAULT_RECIPES)
    runs = collect(recipes, a.limit)
    out = Path(a.out) if a.out else PATHS.reports / time.strftime("%Y%m%d-%H%M%S")
    report = build_report(runs, out)
    print(report.read_text(encoding="utf-8").split("## Plots")[0])
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0


def _cmd_bench_engines(a) -> int:
    from tunebook.bench_engines import run, table

    report = run(Path(a.recipe), Path(a.qlora), a.steps, Path(a.out))
    print(table(report))
    print(f"written to {a.out}/latest.md and {a.out}/<time>.json")
    return 0 if all(r["ok"] for r in report["results"]) else 1


def _cmd_profile(a) -> int:
    from tunebook.profile_step import profile, table

    print(table(profile(a.recipe, a.args, engine=a.engine, first=a.first, last=a.last, shapes=a.shapes)))
    return 0


def _cmd_bench_levers(a) -> int:
    from tunebook.bench_levers import run, table

    report = run({"lora": Path(a.recipe), "qlora": Path(a.qlora), "full": Path(a.full)}, a.steps, Path(a.out),
                 only=a.only)
    print(table(report))
    print(f"written to {a.out}/latest.md and {a.out}/<time>.json")
    return 0 if all(r["ok"] for r in report["results"]) else 1


def _cmd_bench(a) -> int:
    from tunebook.bench import run_bench

    rows, found = run_bench(a.matrix, Path(a.db), runs_root=Path(a.runs))
    print(f"== bench ({len(rows)} recipes) -> {a.db}")
    print(f"{'recipe':<22}{'tok/s':>9}{'peak MiB':>10}{'1st step s':>11}{'%best pk':>11}  quality / vs previous")
    for r in rows:
        # share of the faster of the two peaks (bf16 is None where the CPU lacks it)
        fracs = [x for x in (r["frac_bf16_peak"], r["frac_fp32_peak"]) if x]
        best = min(fracs) if fracs else None
        frac = f"{100 * best:.1f}" if best else "n/a"
        scaling = r["metrics"].get("scaling_efficiency")
        print(f"{r['recipe']:<22}{r['tokens_per_s'] or 0:>9.1f}{r['peak_rss_mib'] or 0:>10.0f}"
              f"{r['time_to_first_step_s'] or 0:>11.1f}{frac:>11}  {json.dumps(r['quality'])}"
              + (f"  scaling {scaling:.2f} of 1 process" if scaling else ""))
        print(f"{'':<63}{_versus(r, r.get('previous'))}")
    print(f"history plot: {Path(a.db).parent / 'plots' / 'history.png'}")
    if found:
        print("REGRESSIONS against the previous comparable run:")
        for line in found:
            print(f"  {line}")
        return 1
    print("no regressions against the previous comparable runs")
    return 0


def _versus(new: dict, old: dict | None) -> str:
    """One line of deltas, so a second nightly shows at a glance what moved and by how much."""
    if not old:
        return "first run of this version on this machine class: nothing to compare"

    def pct(key):
        a, b = old.get(key), new.get(key)
        return f"{100 * (b - a) / a:+.0f}%" if a and b else "n/a"

    q_old = json.loads(old["quality"]) if isinstance(old.get("quality"), str) else old.get("quality") or {}
    dq = ", ".join(f"{t} {v - q_old[t]:+.2f}" for t, v in (new.get("quality") or {}).items()
                   if isinstance(v, (int, float)) and isinstance(q_old.get(t), (int, float)))
    return f"vs #{old['id']} ({old['at']}): tok/s {pct('tokens_per_s')}, peak RSS {pct('peak_rss_mib')}, {dq or 'no shared tasks'}"




def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tunebook", description="Versioned fine-tuning recipes run by Axolotl / Unsloth.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("setup-model", help="convert the embedded SmolLM2 GGUF into an HF folder")
    p.add_argument("--out", default="models/smollm2-135m-instruct")
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=_cmd_setup_model)

    for name, fn, hlp in (("train", _cmd_train, "validate, adapt, launch the engine, record the run"),
                          ("show", _cmd_show, "print the resolved config with this machine's adaptations")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("recipe")
        p.add_argument("--args", default="", help='overrides: "key=value key2=value"')
        p.add_argument("--engine", default=None, choices=["axolotl", "unsloth"])
        p.add_argument("--runs", default=str(PATHS.runs), help="where run directories go")
        p.add_argument("--nproc", default="", help="processes on this node under torchrun (NPROC; one per GPU)")
        if name == "show":
            p.add_argument("--on", default="", choices=["", "cuda"],
                           help="cuda: the config a node with NPROC bf16 GPUs would run (inputs not checked here)")
        if name == "train":
            p.add_argument("--resume", default="", help="latest, or a run id: continue that run from its last checkpoint")
        p.set_defaults(fn=fn)

    p = sub.add_parser("validate", help="validate recipes (all when none given)")
    p.add_argument("recipes", nargs="*")
    p.set_defaults(fn=_cmd_validate)

    p = sub.add_parser("list", help="table of every recipe")
    p.set_defaults(fn=_cmd_list)

    for name in ("new", "import"):
        p = sub.add_parser(name, help="copy a recipe, or import an Axolotl config, as a new recipe (version 1, locked)")
        p.add_argument("src")
        p.add_argument("dest")
        p.add_argument("--root", default=None, help="the recipe book (default: recipes/)")
        p.set_defaults(fn=_cmd_new)

    p = sub.add_parser("merge", help="merge a run's adapter into its full-precision base")
    p.add_argument("recipe")
    p.add_argument("--run", default=None, help="run id or directory (default: latest finished)")
    p.set_defaults(fn=_cmd_merge)

    p = sub.add_parser("tensorboard", help="TensorBoard over runs/ (or RECIPE's runs), live while training")
    p.add_argument("recipe", nargs="?", default="")
    p.add_argument("--port", type=int, default=6006)
    p.set_defaults(fn=_cmd_tensorboard)

    p = sub.add_parser("mlflow-ui", help="MLflow's UI on the TRACKER=mlflow store (runs/mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(fn=_cmd_mlflow_ui)

    p = sub.add_parser("eval", help="lm-eval the run and its base on local tasks -> eval.json")
    p.add_argument("recipe")
    p.add_argument("--run", default=None)
    p.add_argument("--tasks", default="", help="comma-separated (default: nba_qa,nba_mc,control_mc,nba_ppl)")
    p.add_argument("--limit", type=int, default=None, help="first N documents of each task")
    p.add_argument("--nproc", type=int, default=None,
                   help="score in N processes under torchrun, each its share of the documents (lm-eval's data parallel)")
    p.add_argument("--export", default=None, help="score the exported GGUF of this quantization (make export) instead")
    p.set_defaults(fn=_cmd_eval)

    p = sub.add_parser("compare", help="base vs full vs LoRA vs QLoRA report (trains/evaluates what is missing)")
    p.add_argument("--recipes", default="", help="space-separated recipe paths (default: smollm2 full, lora, qlora)")
    p.add_argument("--limit", type=int, default=None, help="first N documents per task (default: the whole test sets)")
    p.add_argument("--out", default="")
    p.set_defaults(fn=_cmd_compare)

    p = sub.add_parser("bench-engines", help="plain axolotl vs tunebook/axolotl vs tunebook/unsloth vs transformers+peft")
    p.add_argument("--recipe", default="recipes/smollm2/lora.yaml")
    p.add_argument("--qlora", default="recipes/smollm2/qlora.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="bench/engines")
    p.set_defaults(fn=_cmd_bench_engines)

    p = sub.add_parser("bench-levers", help="each speed lever (threads, batch, compile, CE, ...) vs the shipped recipe")
    p.add_argument("--recipe", default="recipes/smollm2/lora.yaml")
    p.add_argument("--qlora", default="recipes/smollm2/qlora.yaml")
    p.add_argument("--full", default="recipes/smollm2/full.yaml")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--only", default=None, help="regex: only the levers whose name matches")
    p.add_argument("--out", default="bench/levers")
    p.set_defaults(fn=_cmd_bench_levers)

    p = sub.add_parser("profile", help="where a training step's time goes (torch.profiler over a few real steps)")
    p.add_argument("recipe")
    p.add_argument("--args", default="", help='overrides: "key=value key2=value"')
    p.add_argument("--engine", default=None, choices=["axolotl", "unsloth"])
    p.add_argument("--first", type=int, default=3, help="first profiled step (earlier ones warm up)")
    p.add_argument("--last", type=int, default=6)
    p.add_argument("--shapes", action="store_true", help="split each op by its input shapes")
    p.set_defaults(fn=_cmd_profile)

    p = sub.add_parser("bench", help="run the nightly matrix, append to bench/history.sqlite, flag regressions")
    p.add_argument("--matrix", default="bench/nightly.yaml")
    p.add_argument("--db", default=str(PATHS.bench_db))
    p.add_argument("--runs", default=str(PATHS.bench_runs), help="where the bench's run directories go")
    p.set_defaults(fn=_cmd_bench)

    p = sub.add_parser("export", help="GGUF (f16 + QUANT) with llama.cpp's tools, parity-checked, + Modelfile and model card")
    p.add_argument("recipe")
    p.add_argument("--run", default=None)
    p.add_argument("--quant", default="q4_k_m", help="comma-separated: f16, q8_0, q6_k, q5_k_m, q4_k_m, q4_0")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser("serve", help="OpenAI-compatible server (llama-cpp-python) on the run's exported GGUF")
    p.add_argument("recipe")
    p.add_argument("--run", default=None)
    p.add_argument("--quant", default=None, help="which export (default: the Modelfile's)")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(fn=_cmd_serve)

    p = sub.add_parser("chat", help="generate with a trained run (one-shot with --prompt, else interactive)")
    p.add_argument("recipe")
    p.add_argument("--run", default=None)
    p.add_argument("--prompt", default="")
    p.add_argument("--system", default="")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--server", default="", help="an OpenAI-compatible base URL (make serve prints it) instead of the run")
    p.set_defaults(fn=_cmd_chat)

    from tunebook.data.cli import register as register_data

    register_data(sub)

    p = sub.add_parser("lock", help="update recipes/versions.lock (or --check it)")
    p.add_argument("--check", action="store_true")
    p.add_argument("--root", default=None)
    p.add_argument("--message", "-m", default="", help="changelog line for bumped recipes")
    p.set_defaults(fn=_cmd_lock)
    return ap


def main(argv: list[str] | None = None) -> int:
    from tunebook.fast_start import process_start

    process_start()
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except TunebookError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
