"""Full, LoRA and QLoRA each train through the real Axolotl on a tiny random Llama.

One run per method (the session-scoped `runs` fixture in conftest, shared with test_export),
each engine process costs ~30 s of start-up here whatever the model size.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
import yaml

from conftest import METHODS, STEPS, _recipe_of, write_tiny_recipe  # noqa: F401 (runs: conftest)
from tiny_models import fold_skip_list
from tunebook.engines.allocator import find_tcmalloc
from tunebook.errors import TunebookError
from tunebook.recipe import load_recipe
from tunebook.runs import MARKER, RunDir, dir_size
from tunebook.train import train

REQUIRED = [
    "status", "run_id", "recipe.name", "recipe.version", "recipe.content_hash", "engine", "git_commit",
    "packages.axolotl", "packages.torch", "packages.transformers", "machine.kind", "machine.cpu_count",
    "seed", "adaptations", "wall_time_s", "train_runtime_s", "tokens.total", "tokens.trainable",
    "tokens.per_second", "peak_rss_mib", "loss_curve", "output_dir", "params.trainable",
]


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


@pytest.mark.parametrize("method", list(METHODS))
def test_run_directory_is_complete(runs, method):
    run = runs[method]
    record = json.loads((run.path / "run.json").read_text())
    for key in REQUIRED:
        assert _get(record, key) not in (None, "", []), f"run.json lacks {key}"
    assert record["status"] == "finished" and run.is_complete
    assert not (run.path / MARKER).exists()
    assert (run.path.parent / "latest").resolve() == run.path.resolve()
    src, engine = _recipe_of(method)
    assert record["recipe"]["method"] == src.stem and record["engine"] == (engine or load_recipe(src).meta.engine)
    assert len(record["loss_curve"]) == STEPS and record["steps"] == STEPS
    assert record["tokens"]["total"] >= record["tokens"]["trainable"] > 0
    assert record["timing"]["malloc_trim"]["enabled"] is True  # engines/heap_trim.py, both engines
    # the allocator the engine process really ran on (engines/allocator.py), both engines
    assert record["timing"]["allocator"] == ("tcmalloc" if find_tcmalloc() else "glibc")
    launched = yaml.safe_load((run.path / "config.yaml").read_text())
    assert launched["output_dir"] == str(run.output)
    assert launched["max_steps"] == STEPS
    assert (run.path / "recipe.yaml").is_file() and run.log.stat().st_size > 0
    assert record["engine"] in run.log.read_text()


@pytest.mark.parametrize("method", list(METHODS))
def test_loss_falls_on_a_memorisable_set(runs, method):
    losses = [p["loss"] for p in json.loads((runs[method].path / "run.json").read_text())["loss_curve"]]
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.25, losses  # nats


def test_full_output_loads_with_plain_transformers(runs, tiny_llama):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tuned = AutoModelForCausalLM.from_pretrained(runs["full"].output)
    assert (runs["full"].output / "model.safetensors").is_file()
    assert not list(runs["full"].output.glob("*.bin")), "pickled weights written"
    diffs = [(a - b).abs().max().item() for a, b in zip(base.parameters(), tuned.parameters())]
    assert max(diffs) > 0


@pytest.mark.parametrize("method", ["lora", "qlora", "qlora-axolotl"])
def test_adapter_loads_with_peft_and_changes_the_model(runs, tiny_llama, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = runs[method].output
    assert (out / "adapter_model.safetensors").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    with torch.no_grad():
        before = base(ids).logits
    tuned = PeftModel.from_pretrained(base, out)
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().max() > 0 for p in lora_b), "lora_B still zero: nothing trained"
    with torch.no_grad():
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def test_each_engine_ran_the_attention_the_adaptation_chose(runs):
    # the recipes say sdpa (for GPUs); on a CPU both engines get eager (measured faster), and
    # run.json says what the model ran, read off it inside the engine process
    for method in ("lora", "qlora", "qlora-axolotl"):
        record = json.loads((runs[method].path / "run.json").read_text())
        launched = yaml.safe_load((runs[method].path / "config.yaml").read_text())
        assert launched["attn_implementation"] == "eager", method
        assert record["attention"] == "eager", method


def test_each_engine_stepped_the_fused_adamw_the_recipes_name(runs):
    # the for-loop AdamW cost a full fine-tuning step 1.30x on a CPU; run.json says what the
    # trainer built, read off it at the first step inside the engine process
    for method in METHODS:
        launched = yaml.safe_load((runs[method].path / "config.yaml").read_text())
        record = json.loads((runs[method].path / "run.json").read_text())
        assert launched["optimizer"] == "adamw_torch_fused", method
        stepped = record["optimizer"]
        assert stepped["name"] == "AdamW" and stepped["fused"] is True, (method, stepped)
        assert record["optimizer"]["asked"] == "adamw_torch_fused", method


def test_each_engine_recomputed_the_forward_only_when_the_recipe_said_so(runs):
    # TRL's SFTConfig turned gradient checkpointing on under the Unsloth engine behind the
    # recipe's false (1.5x the matmuls of a step); run.json says what the model ran, read at
    # its first step. The smollm2 QLoRA recipe asks for it, full and LoRA do not.
    asked = {}
    for method in METHODS:
        launched = yaml.safe_load((runs[method].path / "config.yaml").read_text())
        record = json.loads((runs[method].path / "run.json").read_text())
        asked[method] = launched["gradient_checkpointing"]
        assert record["gradient_checkpointing"] is asked[method], method
    assert asked == {"full": False, "lora": False, "qlora": True, "qlora-axolotl": True}


def test_checkpointing_in_use_reads_the_layers(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tunebook.engines.timing import checkpointing_in_use

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    assert checkpointing_in_use(model) is False
    model.gradient_checkpointing_enable()
    assert checkpointing_in_use(model) is True
    model.gradient_checkpointing_disable()
    assert checkpointing_in_use(model) is False


def test_qlora_trained_real_bitsandbytes_4bit_layers(runs, tiny_llama):
    kept = fold_skip_list(yaml.safe_load(Path("recipes/smollm2/qlora.yaml").read_text()))
    assert kept  # the recipe keeps its most NF4-sensitive projections 16-bit
    for method in ("qlora", "qlora-axolotl"):
        record = json.loads((runs[method].path / "run.json").read_text())
        # 2 layers x 7 projections, less the recipe's 16-bit ones (folded onto 2 layers), measured
        # inside the engine process on the model it trained: both engines honour the list
        assert record["params"]["linear4bit_modules"] == 14 - len(kept), method
    assert json.loads((runs["lora"].path / "run.json").read_text())["params"]["linear4bit_modules"] == 0
    # eval, chat and the learning curve load the trained-on base: the same layers in 4 bit
    from tunebook.loading import load_run

    loaded = load_run(runs["qlora"])
    import bitsandbytes as bnb

    four = {n.removeprefix("base_model.model.").removesuffix(".base_layer") for n, m in loaded.model.named_modules()
            if isinstance(m, bnb.nn.Linear4bit)}
    assert len(four) == 14 - len(kept) and not four & set(kept)
    # and the adapter loads onto a 4-bit NF4 base with plain transformers + peft
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama, quantization_config=q)
    model = PeftModel.from_pretrained(base, runs["qlora"].output)
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 14
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 20, 30]])).logits).all()


def test_engine_failure_leaves_the_run_marked_incomplete(tmp_path, tiny_llama):
    # weights that pass every check before launch (a config, a .safetensors file) but do not load
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_llama, broken)
    for f in broken.glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file")
    data = tmp_path / "ok.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' * 8)
    recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "recipe.yaml", broken, data)
    with pytest.raises(TunebookError) as info:
        train(recipe, runs_root=tmp_path / "runs", echo=False)
    assert info.value.exit_code == 1 and "INCOMPLETE" in info.value.hint
    (run_path,) = (tmp_path / "runs" / "smollm2-lora").iterdir()
    run = RunDir(run_path)
    assert (run_path / MARKER).exists() and not run.is_complete
    record = json.loads(run.record_path.read_text())
    assert record["status"] == "failed" and "Error" in record["error"] and "\n" not in record["error"]
    # one line of cause on the terminal, the traceback in the log it names
    assert len(info.value.problems) == 1 and "Traceback" not in info.value.render()
    assert str(run.log) in info.value.hint and "Traceback" in run.log.read_text()
    assert not (run_path.parent / "latest").exists()


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_merge_matches_base_plus_adapter(runs, tiny_llama, method):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunebook.merge import merge_run

    info = merge_run(runs[method])
    merged_dir = runs[method].path / "merged"
    assert Path(info["path"]) == merged_dir and (merged_dir / "model.safetensors").is_file()
    assert not list(runs[method].path.glob(".merged.*")), "temporary merge folder left behind"
    # independently: fp32 base + adapter vs the merged folder, on a probe of our own
    ids = torch.tensor([[1, 7, 99, 1234, 20, 5]])
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        plain = base(ids).logits
        expected = PeftModel.from_pretrained(base, runs[method].output)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged_dir)(ids).logits
    assert torch.allclose(expected, got, atol=1e-4)
    assert not torch.allclose(plain, got, atol=1e-4), "merge produced the base model"


def test_chat_eval_and_merge_state_one_policy_for_a_qlora_adapter(runs, tmp_path, monkeypatch):
    """Chat loaded a QLoRA adapter on the fp32 base while eval used the 4-bit base: two models."""
    import bitsandbytes as bnb

    import tunebook.evaluate as ev
    from tunebook.chat import Chat
    from tunebook.loading import POLICY
    from tunebook.merge import merge_run

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    chat = Chat(runs["qlora"], max_new_tokens=4)
    record = ev.evaluate_run(runs["qlora"], tasks=["nba_mc"], limit=2)
    assert chat.description == record.evaluated and "(4-bit NF4) + adapter" in chat.description
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in chat.model.modules())
    assert record.policy == POLICY
    info = merge_run(runs["qlora"])
    assert info["policy"] == POLICY and "fp32" in info["merged_into"]
    assert info["logits_max_abs_diff_vs_4bit_model"] > 0  # said, not hidden: merged fp32 != 4-bit model
    assert Chat(runs["lora"], max_new_tokens=4).description.endswith(f"(fp32) + adapter {runs['lora'].output}".split(" + ")[-1])


def test_merge_refuses_a_full_run(runs):
    from tunebook.merge import merge_run

    with pytest.raises(TunebookError, match="no adapter to merge"):
        merge_run(runs["full"])


def test_chat_answers_with_the_trained_model_and_template(runs):
    from tunebook.chat import Chat

    chat = Chat(runs["lora"], max_new_tokens=8)
    history = [{"role": "user", "content": "Say the code word 1."}]
    answer = chat.reply(history)
    # the same generation by hand: the recipe's template, base+adapter, greedy
    ids = chat.tok.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert chat.tok.decode(ids["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        out = chat.model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=chat.tok.pad_token_id)
    assert answer == chat.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


@pytest.mark.parametrize("method", ["full", "lora"])
def test_memory_estimate_counts_the_model_it_trains(runs, method):
    """run.json's memory estimate (printed beside the measured peak in the run summary) is
    memory.estimate of the run's own config, counted from the real model: its parameters as the
    safetensors hold them, and the trainable count the engine reported. The measured peak is a
    measurement, read in run.json and the bench, never bounded here (its size varies with the
    machine's allocator and thread count)."""
    from safetensors import safe_open

    from tunebook.memory import estimate

    run = runs[method]
    record = json.loads((run.path / "run.json").read_text())
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    est = estimate(cfg, on_gpu=False)
    assert record["memory_estimate_mib"] == round(est.total / 2**20, 1)
    with safe_open(str(Path(cfg["base_model"]) / "model.safetensors"), "pt") as f:
        params = sum(f.get_tensor(k).numel() for k in f.keys())
    assert est.params == params
    assert est.trainable == record["params"]["trainable"]
    # counted in the dtypes the engine held: what it trained is fp32 (master weights under bf16
    # autocast too), and so are the gradients; a full run's weights are all fp32 masters
    assert record["precision"]["master_dtype"] == "float32"
    assert est.gradients == 4 * est.trainable
    if method == "full":
        assert est.weights >= 4 * est.params
    # eager attention keeps its probabilities for the backward; the estimate counts them
    assert cfg["attn_implementation"] == record["attention"] == "eager"
    assert estimate({**cfg, "attn_implementation": "sdpa"}, on_gpu=False).activations < est.activations


def test_eval_tasks_resolve_to_absolute_existing_files():
    from tunebook.evaluate import resolved_tasks

    with resolved_tasks() as tmp:
        names = sorted(p.stem for p in tmp.glob("*.yaml"))
        assert names == ["control_mc", "nba_mc", "nba_ppl", "nba_qa"]
        for p in tmp.glob("*.yaml"):
            cfg = yaml.safe_load(p.read_text().replace("!function ", ""))
            for f in cfg["dataset_kwargs"]["data_files"].values():
                assert Path(f).is_absolute() and Path(f).is_file(), f
        assert (tmp / "utils.py").is_file()


def test_eval_applies_the_adapter_and_writes_eval_json(runs, tmp_path, monkeypatch):
    import tunebook.evaluate as ev

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")  # keep the test's base scores out of runs/
    from tunebook.records import dump

    record = dump(ev.evaluate_run(runs["lora"], limit=4))
    saved = json.loads((runs["lora"].path / "eval.json").read_text())
    assert saved["results"] == record["results"]
    assert set(record["results"]) == {"nba_qa", "nba_mc", "control_mc", "nba_ppl"}
    for metric in ("exact_match,none", "numeric_match,none", "rougeL,none"):
        assert 0.0 <= record["results"]["nba_qa"][metric] <= 1.0
    assert "adapter" in record["evaluated"]
    run_ppl = record["results"]["nba_ppl"]["word_perplexity,none"]
    base_ppl = record["base"]["results"]["nba_ppl"]["word_perplexity,none"]
    assert run_ppl != pytest.approx(base_ppl, rel=1e-6), "the adapter changed nothing: was it applied?"
    from tunebook.loading import run_config

    again = ev.evaluate_base(run_config(runs["lora"]), record["tasks"], 4)
    assert again["cached"] and again["results"] == record["base"]["results"]


def test_compare_report_lists_every_method_with_the_numbers_of_eval_json(runs, tmp_path, monkeypatch):
    import re

    import tunebook.evaluate as ev
    from tunebook.compare import build_report

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    scored, score = [], ev.score

    def spy(*args, **kwargs):
        out = score(*args, **kwargs)
        scored.append((out.what, list(out.results)))
        return out

    monkeypatch.setattr(ev, "score", spy)
    picked = [runs["full"], runs["lora"], runs["qlora"]]
    for run in picked:
        ev.evaluate_run(run, tasks=["nba_mc", "control_mc"], limit=3)
    report = build_report(picked, tmp_path / "report")
    text = report.read_text()
    # QLoRA only: the control task on the 4-bit base alone and with the adapter on the fp32 base
    checks = {r.path.parent.name: json.loads((r.path / "eval.json").read_text())["quantization"] for r in picked}
    assert checks["smollm2-full"] is None and checks["smollm2-lora"] is None
    assert checks["smollm2-qlora"]["task"] == "control_mc"
    base = str(ev.run_config(runs["qlora"])["base_model"])
    assert (f"full model {base} (4-bit NF4)", ["control_mc"]) in scored
    assert (f"{base} (fp32) + adapter {runs['qlora'].output}", ["control_mc"]) in scored
    four = checks["smollm2-qlora"]["base_4bit"]["acc,none"]
    (note,) = [l for l in text.splitlines() if "the 4-bit NF4 base alone" in l]
    assert f"alone {four:.3f}" in note and text.index(note) > text.index("- smollm2-qlora: ")
    for run in picked:
        e = json.loads((run.path / "eval.json").read_text())
        name = e["recipe"]["name"]
        (line,) = [l for l in text.splitlines() if l.startswith(f"| {name} v")]
        acc = e["results"]["nba_mc"]["acc,none"]
        assert f"{acc:.3f}" in line
        assert re.search(rf"- {name}: {e['results']['control_mc']['acc,none']:.3f}", text)
    assert "| base |" in text
    # nba_mc split by question kind: each model's cell is the mean of its own per-document scores
    from tunebook.by_kind import doc_rows

    kinds = [d["task"] for d in doc_rows("nba_mc")[:3]]
    section = text[text.index("## nba_mc by question kind"):].split("\n## ")[0]
    header = next(l for l in section.splitlines() if l.startswith("| kind |"))
    assert header.split("|")[4:-1] == [" base ", " smollm2-full ", " smollm2-lora ", " smollm2-qlora "]
    lora = json.loads((runs["lora"].path / "eval.json").read_text())["per_doc"]["nba_mc"]
    row = next(l for l in section.splitlines() if l.startswith(f"| {kinds[0]} |"))
    mine = [s for s, k in zip(lora, kinds) if k == kinds[0]]
    assert row.split("|")[6].strip().strip("*") == f"{100 * sum(mine) / len(mine):.0f}%"
    # where the time went: each model's own training wall time and eval seconds, as recorded
    timing = text[text.index("## Time"):].split("\n## ")[0]
    for run in picked:
        e, rec = (json.loads((run.path / f).read_text()) for f in ("eval.json", "run.json"))
        (line,) = [l for l in timing.splitlines() if l.startswith(f"| {e['recipe']['name']} |")]
        assert line.split("|")[2:4] == [f" {rec['wall_time_s']:.0f} ", f" {e['seconds']:.0f} "]
    # which base each model was evaluated on: the QLoRA adapter on its 4-bit NF4 base
    evaluated = {l.split(":")[0][2:]: l for l in text.splitlines() if l.startswith("- ") and " + adapter " in l}
    assert set(evaluated) == {"smollm2-lora", "smollm2-qlora"}
    assert "(4-bit NF4) + adapter" in evaluated["smollm2-qlora"] and "(fp32) + adapter" in evaluated["smollm2-lora"]
    assert any(l.startswith("- smollm2-full: full model ") for l in text.splitlines())
    for png in ("task-nba_mc.png", "task-control_mc.png", "cost.png", "loss.png"):
        assert (tmp_path / "report" / png).read_bytes()[:4] == b"\x89PNG"
    page = (tmp_path / "report" / "report.html").read_text()
    # quality, cost, nba_mc by kind, control_mc by topic and time; plots inline
    assert page.count("<table>") == 5 and 'src="loss.png"' in page
    assert "## control_mc by question kind" in text
    assert "smollm2-qlora" in page and "<pre>" not in page


def test_learning_curve_scores_every_checkpoint_as_eval_loads_it(runs, tmp_path, monkeypatch):
    import tunebook.evaluate as ev
    from tunebook import learning_curve
    from tunebook.compare import build_report

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    picked = [runs["full"], runs["lora"], runs["qlora"]]
    for run in picked:
        ev.evaluate_run(run, tasks=["nba_mc", "control_mc"], limit=3)
        record, e = json.loads(run.record_path.read_text()), json.loads((run.path / "eval.json").read_text())
        # save_steps 0.334 of 6 steps: checkpoints 3 and 6 (the last one is the final model)
        assert [s for s, _ in learning_curve.checkpoints(run)] == [3, 6], run.path
        # what ships is the final model; checkpoints are counted apart
        assert record["checkpoints_bytes"] > 0 and record["output_bytes"] + record["checkpoints_bytes"] == dir_size(run.output)
        # the eval kept each document's score: its mean and stderr are lm-eval's own
        per_doc = e["per_doc"]["nba_mc"]
        assert len(per_doc) == 3 and e["results"]["nba_mc"]["acc,none"] == pytest.approx(statistics.fmean(per_doc))
        assert e["results"]["nba_mc"]["acc_stderr,none"] == pytest.approx(statistics.stdev(per_doc) / 3 ** 0.5)
        assert len(e["base"]["per_doc"]["nba_mc"]) == 3 and "control_mc" in e["per_doc"]
        # base and final points are read off that eval; only the checkpoints are scored
        scored = []
        real_score = learning_curve._score
        monkeypatch.setattr(learning_curve, "_score", lambda r, folder, n: scored.append(folder.name) or real_score(r, folder, n))
        monkeypatch.setattr(ev, "evaluate_base", lambda *a, **k: pytest.fail("base scored again"))
        points = learning_curve.ensure(run, 3)
        assert scored == ["checkpoint-3"]
        assert [p.source for p in points] == ["base", "checkpoint-3", "final"]
        assert [p.step for p in points] == [0, 3, 6]
        assert points[0].score == pytest.approx(e["base"]["results"]["nba_mc"]["acc,none"])
        assert points[-1].score == pytest.approx(e["results"]["nba_mc"]["acc,none"])
        assert points[-1].stderr == pytest.approx(e["results"]["nba_mc"]["acc_stderr,none"])
        assert points[-1].tokens == record["tokens"]["total"] and points[1].tokens == round(record["tokens"]["total"] / 2)
        assert all(0.0 <= p.score <= 1.0 and p.stderr is not None for p in points)
        # computed once per limit: a second call reads the file
        monkeypatch.setattr(learning_curve, "compute", lambda *a: pytest.fail("recomputed"))
        assert learning_curve.ensure(run, 3) == points
        monkeypatch.undo()
        monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    report = build_report(picked, tmp_path / "report")
    text = report.read_text()
    assert (tmp_path / "report" / "learning-curve.png").read_bytes()[:4] == b"\x89PNG"
    assert sum(l.startswith("| smollm2-") and "checkpoint-" in l for l in text.splitlines()) == 3


def test_learning_curve_verdict_reads_the_second_half_against_the_stderr():
    from tunebook.learning_curve import verdict

    def pts(*scores):
        return [{"tokens": i * 100, "score": s, "stderr": 0.03} for i, s in enumerate(scores)]

    assert verdict(pts(0.27, 0.40, 0.48, 0.49, 0.48)).startswith("flat")
    assert verdict(pts(0.27, 0.30, 0.35, 0.40, 0.45)).startswith("still rising")
    assert verdict(pts(0.27, 0.50, 0.50, 0.45, 0.40)).startswith("falling")
    assert verdict(pts(0.27, 0.40)) == "too few checkpoints to tell"


def test_an_engine_override_is_recorded_as_an_override(tiny_llama, memorise_data, tmp_path):
    from conftest import METHODS, STEPS, _recipe_of, write_tiny_recipe  # noqa: F401 (runs: conftest)
    from tunebook.train import train

    recipe = write_tiny_recipe(Path("recipes/smollm2/qlora.yaml"), tmp_path / "q.yaml", tiny_llama, memorise_data,
                               max_steps=1)
    rec = train(recipe, "", engine="axolotl", runs_root=tmp_path / "runs", echo=False).read_record()
    assert rec.engine == "axolotl" and rec.overrides == {"recipe.engine": "axolotl"} and not rec.as_written


def test_an_eval_is_reused_only_for_the_same_question(runs, tmp_path, monkeypatch):
    """`make eval TASKS=nba_mc` then `make compare`: compare must not read the nba_mc-only
    eval.json as if it held every task (it did: only `limit` was compared)."""
    import tunebook.evaluate as ev

    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    run = runs["lora"]
    ev.ensure_eval(run, ["nba_mc"], 2)
    wider = ev.ensure_eval(run, ["nba_mc", "control_mc"], 2)
    assert not wider.reused and set(wider.results) == {"nba_mc", "control_mc"}
    again = ev.ensure_eval(run, ["nba_mc", "control_mc"], 2)
    assert again.reused and again.results == wider.results
    assert not ev.ensure_eval(run, ["nba_mc", "control_mc"], 3).reused  # another limit
    # a task whose data changed is another question, though its name and limit are the same
    real = ev.task_versions
    monkeypatch.setattr(ev, "task_versions", lambda tasks, *a: {**real(tasks, *a), "nba_mc": "v9-changed"})
    assert not ev.ensure_eval(run, ["nba_mc", "control_mc"], 3).reused


def test_a_non_finite_loss_stops_the_run_and_fails_it(tiny_llama, memorise_data, tmp_path):
    """An exploding run must not end as 'finished' with loss NaN: the watchdog stops at the
    first non-finite loss and the run is failed, with the step."""
    from conftest import METHODS, STEPS, _recipe_of, write_tiny_recipe  # noqa: F401 (runs: conftest)

    recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "r.yaml", tiny_llama, memorise_data,
                               max_steps=6, learning_rate=1e30, max_grad_norm=0.0, bf16=False)
    with pytest.raises(TunebookError, match=r"the loss became (nan|inf) at step \d") as info:
        train(recipe, runs_root=tmp_path / "runs", echo=False)
    assert info.value.exit_code == 1
    (run_path,) = (tmp_path / "runs" / "smollm2-lora").iterdir()
    record = json.loads((run_path / "run.json").read_text())
    assert record["status"] == "failed" and len(record["loss_curve"]) < 6  # stopped early
    assert not (run_path.parent / "latest").exists()


def test_zero_trained_tokens_is_a_failure():
    from tunebook.train import _not_learning

    assert "0 tokens" in _not_learning({"tokens_trainable": 0, "global_step": 3})
    assert _not_learning({"tokens_trainable": 10, "global_step": 3, "nonfinite_loss": None}) is None


def test_sigterm_stops_the_engine_and_marks_the_run_interrupted(tiny_llama, memorise_data, tmp_path):
    """A CI timeout sends SIGTERM: the engine must not train on, orphaned, under a run.json
    that says `running` forever."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import METHODS, STEPS, _recipe_of, write_tiny_recipe  # noqa: F401 (runs: conftest)

    recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "r.yaml", tiny_llama, memorise_data,
                               max_steps=100000)
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "tunebook", "train", str(recipe), "--runs", str(runs)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    logs = []
    while time.time() < deadline and not any('"loss"' in p.read_text(errors="replace") for p in logs):
        time.sleep(1)
        logs = list(runs.glob("*/*/logs/engine.log"))
    assert logs, "the engine never reached a training step"
    config = str(logs[0].parents[1] / "config.yaml")

    def engine_alive() -> bool:
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if config in cmdline.read_bytes().decode(errors="replace"):
                    return True
            except OSError:
                continue
        return False

    assert engine_alive()
    proc.send_signal(signal.SIGTERM)
    # a hang guard, not a bound: the launcher itself gives the engine 10 s before killing it
    assert proc.wait(timeout=300) == 130, proc.stderr.read()
    assert not engine_alive(), "the engine kept training after its parent was stopped"
    record = json.loads((logs[0].parents[1] / "run.json").read_text())
    assert record["status"] == "interrupted" and (logs[0].parents[1] / "INCOMPLETE").exists()


def test_trimmed_logits_score_what_lm_eval_scores(runs):
    """`TrimmedHFLM` asks the model for the last K positions' logits only (nba_ppl; nba_mc's
    shared prompts ask for one): every score through lm-eval's evaluator (multiple choice,
    rolling perplexity, an adapter on the model) is the one plain HFLM computes (fp32 here, so
    equal to rounding), and the model was really asked for fewer positions than it was given."""
    from lm_eval.models.huggingface import HFLM

    from tunebook.eval_lm import TrimmedHFLM
    from tunebook.evaluate import run_lm_eval
    from tunebook.loading import load, run_config

    run = runs["lora"]
    loaded = load(run_config(run), run.output)
    asked = []
    forward = loaded.model.forward

    def spy(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        asked.append((ids.shape[1], kwargs.get("logits_to_keep")))
        return forward(*args, **kwargs)

    loaded.model.forward = spy
    scores = {}
    for cls in (HFLM, TrimmedHFLM):
        lm = cls(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4, max_length=1024,
                 softmax_dtype=torch.float32)
        per_doc: dict = {}
        scores[cls.__name__] = run_lm_eval(None, loaded.tokenizer, ["nba_mc", "nba_ppl"], 6, lm=lm, per_doc=per_doc), per_doc
    (plain, plain_docs), (trimmed, trimmed_docs) = scores["HFLM"], scores["TrimmedHFLM"]
    assert trimmed_docs["nba_mc"] == plain_docs["nba_mc"]
    for task in ("nba_mc", "nba_ppl"):
        for metric, value in plain[task].items():
            if isinstance(value, float):
                assert trimmed[task][metric] == pytest.approx(value, rel=1e-5), (task, metric)
    kept = [(n, k) for n, k in asked if k is not None]
    assert kept and all(0 < k < n for n, k in kept), asked


def test_eval_in_two_processes_scores_what_one_process_scores(runs):
    """`make eval NPROC=2`: lm-eval shards each task's documents between two ranks (gloo on a
    CPU) and gathers the per-document scores on rank 0, so every metric is the one process's
    (the same documents, the same model; sums in another order: 1e-9). Both paths of lm-eval:
    loglikelihood (nba_mc, 6 documents) and generation (nba_qa, 3)."""
    from tunebook.evaluate import score
    from tunebook.loading import run_config

    run = runs["lora"]
    cfg = run_config(run)
    one_what, one, one_docs = score(cfg, run.output, ["nba_mc", "nba_qa"], 6, nproc=1)
    two_what, two, two_docs = score(cfg, run.output, ["nba_mc", "nba_qa"], 6, nproc=2)
    # the per-document scores are gathered too, in document order (the learning curve reads them)
    assert len(one_docs["nba_mc"]) == 6 and two_docs["nba_mc"] == one_docs["nba_mc"]
    # lm-eval pads the ranks to equal batches: each answers half the requests (or one more)
    per_rank = [int(n) for n in two_what.split("requests per rank: ")[1].rstrip(")").split(", ")]
    assert two_what.startswith(f"{one_what}, 2 processes") and len(per_rank) == 2
    assert min(per_rank) > 0 and max(per_rank) < sum(per_rank) * 0.6
    for task in ("nba_mc", "nba_qa"):
        metrics = [m for m, v in one[task].items() if isinstance(v, float) and "stderr" not in m]
        assert metrics and one[task]["sample_len" if "sample_len" in one[task] else metrics[0]] is not None
        for m in metrics:
            assert two[task][m] == pytest.approx(one[task][m], abs=1e-9), (task, m)


def test_vllm_is_given_what_the_hf_path_loads(runs):
    """vLLM needs CUDA (not installed here): its lm-eval arguments are checked, not run."""
    from tunebook.evaluate import vllm_available, vllm_model_args
    from tunebook.loading import run_config

    assert not vllm_available()  # this CPU machine: the HF path
    lora = vllm_model_args(run_config(runs["lora"]), runs["lora"].output, nproc=4)
    assert lora["pretrained"] == str(run_config(runs["lora"])["base_model"]) and lora["lora_local_path"] == str(runs["lora"].output)
    assert lora["data_parallel_size"] == 4 and "quantization" not in lora and lora["max_lora_rank"] >= 8
    qlora = vllm_model_args(run_config(runs["qlora"]), runs["qlora"].output)
    assert qlora["quantization"] == "bitsandbytes"  # a QLoRA adapter is scored on its 4-bit base, as on the HF path
    full = vllm_model_args(run_config(runs["full"]), runs["full"].output)
    assert full["pretrained"] == str(runs["full"].output) and "lora_local_path" not in full


def test_tensorboard_events_hold_the_loss_curve_for_both_engines(runs):
    """On by default: the engine's own TensorBoard reporting writes into the run directory,
    and its loss scalars are run.json's loss curve, step for step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for method in ("lora", "qlora"):  # Axolotl and Unsloth
        record = runs[method].read_record()
        folder = Path(record.trackers["tensorboard"])
        assert folder.parent == runs[method].path and any(folder.rglob("events.out.tfevents.*"))
        acc = EventAccumulator(str(folder))
        acc.Reload()
        loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
        assert len(loss) == len(record.loss_curve) > 0
        assert loss == [(p.step, pytest.approx(p.loss, rel=1e-6)) for p in record.loss_curve], method
        assert {"train/learning_rate", "train/grad_norm", "train/tokens_per_second"} <= set(acc.Tags()["scalars"])


def test_mlflow_holds_the_run_its_params_metrics_files_and_eval_scores(runs, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    import tunebook.evaluate as ev

    run = runs["lora"]
    record = run.read_record()
    ref = record.trackers["mlflow"]
    assert ref["uri"].endswith("mlflow.db") and ref["experiment"] == f"tunebook/{record.recipe.name}"
    client = MlflowClient(tracking_uri=ref["uri"])
    got = client.get_run(ref["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == f"{record.recipe.name}/{record.run_id}"
    params = got.data.params
    assert params["tunebook.recipe.version"] == str(record.recipe.version)
    assert params["tunebook.recipe.content_hash"] == record.recipe.content_hash and "config.learning_rate" in params
    history = client.get_metric_history(ref["run_id"], "loss")  # logged live by the engine's callback
    assert len(history) == len(record.loss_curve) > 0
    assert [(m.step, m.value) for m in history] == [(p.step, pytest.approx(p.loss, rel=1e-6)) for p in record.loss_curve]
    assert got.data.metrics["summary.peak_rss_mib"] == record.peak_rss_mib
    assert {"run.json", "config.yaml", "recipe.yaml"} <= {a.path for a in client.list_artifacts(ref["run_id"])}
    # beside the SQLite database, not in ./mlruns of whatever folder the command ran in
    assert got.info.artifact_uri.startswith(Path(ref["uri"][len("sqlite:///"):]).parent.as_uri())
    assert not Path("mlruns").exists()
    monkeypatch.setattr(ev, "CACHE", tmp_path / "cache")
    scores = ev.evaluate_run(run, ["nba_mc"], 2).results["nba_mc"]
    assert client.get_run(ref["run_id"]).data.metrics["eval.nba_mc.acc"] == scores["acc,none"]
