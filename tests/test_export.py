"""`make export` / `make serve` / `make eval EXPORT=` on the tiny LoRA run (conftest `runs`):
llama.cpp's real converter, quantizer and server, the official openai client, lm-eval."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tunebook import export as ex
from tunebook.errors import TunebookError
from tunebook.runs import RunDir

ROWS, QUESTIONS = 24, 4


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> tuple[RunDir, object]:
    """An adapter run copied aside (the export merges it first), exported to f16 and q8_0."""
    src = runs["lora"]
    dest = tmp_path_factory.mktemp("export") / src.path.parent.name / src.path.name
    shutil.copytree(src.path, dest, ignore=shutil.ignore_patterns("merged", "export"))
    run = RunDir(dest)
    return run, ex.export_run(run, ["q8_0"], ppl_rows=ROWS, questions=QUESTIONS)


def test_export_writes_gguf_files_that_match_the_hf_model(exported):
    run, record = exported
    out = run.path / "export"
    assert (run.path / "merged" / "merge.json").is_file(), "an adapter run is merged before conversion"
    assert set(record.quants) == {"f16", "q8_0"}
    for quant, r in record.quants.items():
        assert (out / r.file).is_file() and r.bytes == (out / r.file).stat().st_size
        assert r.passed and abs(r.perplexity_rel_diff) <= ex.PPL_BOUNDS[quant], (quant, r.perplexity_rel_diff)
        assert r.perplexity_gguf > 1 and r.perplexity_hf > 1
        assert len(r.answers) == QUESTIONS and all(a.question for a in r.answers)
        # the GGUF's own tokenizer (what `make serve` uses) splits every rendered chat as HF does
        assert r.tokenizer_agrees == r.tokenizer_checked == ROWS + QUESTIONS
    assert abs(record.quants["f16"].perplexity_rel_diff) < 0.01  # the f16 bound
    assert record.quants["q8_0"].bytes < record.quants["f16"].bytes
    saved = json.loads((out / "export.json").read_text())
    assert saved["quants"]["q8_0"]["perplexity_gguf"] == record.quants["q8_0"].perplexity_gguf
    assert saved["recipe"]["content_hash"] == run.read_record().recipe.content_hash
    assert not list(out.glob(".*")), "temporary files left behind"


def test_gguf_logits_match_the_merged_model(exported):
    """Independently of export's own check: f16 logits of a probe against the merged HF model."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunebook import gguf_runtime as rt

    run, record = exported
    tok = AutoTokenizer.from_pretrained(run.path / "merged")
    ids = tok("The code word is tunebook.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        hf = AutoModelForCausalLM.from_pretrained(run.path / "merged")(torch.tensor([ids])).logits[0, :-1].numpy()
    llm = rt.open_gguf(run.path / "export" / record.quants["f16"].file, n_ctx=64)
    _, _ = rt.logprobs(llm, ids)
    gguf = np.asarray(llm.scores[: len(ids) - 1])
    assert np.abs(gguf - hf).max() < 2e-2 * max(1.0, np.abs(hf).max())
    assert (gguf.argmax(-1) == hf.argmax(-1)).mean() >= 0.8


def _go_render(template: str, messages: list[dict]) -> str:
    """An oracle for the subset of Go's text/template the Modelfile uses: range over .Messages,
    if/else if on .Role, .Content, quoted literals. Written apart from tunebook.modelfile."""
    parts = re.split(r"(\{\{.*?\}\})", template, flags=re.S)
    lead, body_start = [], parts.index("{{ range .Messages }}")
    for p in parts[:body_start]:
        lead.append(json.loads(p[2:-2].strip()) if p.startswith("{{") else p)
    end = len(parts) - 1 - parts[::-1].index("{{ end }}")
    body, tail = parts[body_start + 1: end], parts[end + 1:]
    out = ["".join(lead)]
    for m in messages:
        active, taken = False, False
        for p in body:
            if p.startswith("{{"):
                action = p[2:-2].strip()
                cond = re.fullmatch(r'(?:else )?if eq \.Role "(\w+)"', action)
                if cond:
                    active = not taken and m["role"] == cond.group(1)
                    taken = taken or active
                elif action == "end":
                    active = False
                elif active:
                    out.append(m["content"] if action == ".Content" else json.loads(action))
            elif active:
                out.append(p)
    out += [json.loads(p[2:-2].strip()) if p.startswith("{{") else p for p in tail]
    return "".join(out)


def test_modelfile_renders_the_training_chat_template(exported):
    from transformers import AutoTokenizer

    run, record = exported
    text = (run.path / "export" / "Modelfile").read_text()
    assert re.search(r"^FROM \./(\S+\.gguf)$", text, re.M).group(1) == record.quants["q8_0"].file
    assert record.modelfile_template == "translated"
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.M | re.S).group(1)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.M | re.S)
    assert 'PARAMETER stop "<|im_end|>"' in text
    tok = AutoTokenizer.from_pretrained(run.path / "merged")
    chats = [[{"role": "user", "content": "Say the code word 1."}],
             [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "a"},
              {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]]
    for chat in chats:
        # Ollama puts the Modelfile's SYSTEM first when a chat has no system turn of its own
        sent = chat if chat[0]["role"] == "system" or not system else [{"role": "system", "content": system.group(1)}] + chat
        want = tok.apply_chat_template(sent, tokenize=False, add_generation_prompt=True)
        assert _go_render(template, sent) == want


def test_model_card_front_matter_and_body(exported):
    run, record = exported
    card = (run.path / "export" / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "gguf" and front["license"] and front["base_model"]
    assert front["datasets"] and "tunebook" in front["tags"] and "lora" in front["tags"]
    rec = run.read_record().recipe
    for needle in (rec.name, f"version {rec.version}", rec.content_hash, "## Intended use and limits",
                   record.quants["q8_0"].file, "learning_rate"):
        assert needle in card, needle


def test_bad_quant_and_missing_tools_are_clear(monkeypatch, runs):
    from tunebook import llama_cpp_tools as tools

    with pytest.raises(TunebookError, match="did you mean 'q4_k_m'"):
        tools.check_quant("q4km")
    monkeypatch.setattr(tools, "CONVERTER", Path("/nonexistent/convert_hf_to_gguf.py"))
    with pytest.raises(TunebookError) as err:
        ex.export_run(runs["lora"], ["q8_0"])
    assert "converter" in str(err.value) and "make setup" in err.value.hint


def test_server_speaks_openai(exported):
    import openai

    from tunebook.serve import Server

    run, record = exported
    gguf = ex.latest_gguf(run, "q8_0")
    server = Server(gguf, "tiny-lora", log=run.path / "logs" / "serve.log")
    with server:
        client = openai.OpenAI(base_url=server.url, api_key="unused")
        assert [m.id for m in client.models.list().data] == ["tiny-lora"]
        msgs = [{"role": "user", "content": "Say the code word 1."}]
        full = client.chat.completions.create(model="tiny-lora", messages=msgs, temperature=0, max_tokens=8)
        assert full.choices[0].message.role == "assistant" and full.usage.completion_tokens > 0
        chunks = client.chat.completions.create(model="tiny-lora", messages=msgs, temperature=0, max_tokens=8, stream=True)
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == full.choices[0].message.content  # greedy: the same answer, in pieces
        with pytest.raises(openai.APIStatusError) as bad:
            client.chat.completions.create(model="tiny-lora", messages=[{"role": "wizard", "content": 1}])
        assert 400 <= bad.value.status_code < 500 and "role" in str(bad.value.body).lower()
        unnamed = client.post("/chat/completions", body={"messages": msgs, "max_tokens": 2}, cast_to=object)
        assert unnamed["model"] == "tiny-lora", "a request without a model gets the served name, not the GGUF's path"
    assert server.proc.returncode is not None, "the server process was stopped"
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(f"{server.url}/models", timeout=2)


def test_eval_of_the_export_runs_the_same_tasks(exported):
    from tunebook.evaluate import evaluate_export, main_metric, render_export

    run, _ = exported
    rec = evaluate_export(run, "f16", tasks=["nba_mc", "nba_ppl"], limit=6)
    assert (run.path / "export" / "eval-f16.json").is_file() and "GGUF" in rec.evaluated
    assert 0 <= rec.results["nba_mc"][main_metric("nba_mc")] <= 1
    assert rec.results["nba_ppl"][main_metric("nba_ppl")] > 1
    assert "nba_mc" in render_export(rec, run)


def test_gguf_lm_scores_as_hflm_does(exported, monkeypatch):
    """tunebook.gguf_lm against lm-eval's own HFLM, both in full precision (f16 GGUF vs fp32
    merged model), same tasks and documents: the class adds no error of its own."""
    from transformers import AutoModelForCausalLM

    from tunebook import evaluate
    from tunebook.gguf_lm import GGUFLM
    from tunebook.loading import tokenizer

    run, record = exported
    monkeypatch.setattr(evaluate, "eval_precision", lambda: "float32")
    cfg = yaml.safe_load((run.path / "config.yaml").read_text())
    tok = tokenizer(run.path / "merged", cfg)
    tasks = ["nba_mc", "nba_ppl"]
    hf = evaluate.run_lm_eval(AutoModelForCausalLM.from_pretrained(run.path / "merged").eval(), tok, tasks, limit=8)
    gguf = evaluate.run_lm_eval(None, tok, tasks, limit=8,
                                lm=GGUFLM(run.path / "export" / record.quants["f16"].file, tok))
    assert gguf["nba_mc"]["acc,none"] == hf["nba_mc"]["acc,none"]
    for metric in ("word_perplexity,none", "byte_perplexity,none"):
        assert gguf["nba_ppl"][metric] == pytest.approx(hf["nba_ppl"][metric], rel=0.01), metric


def test_parity_failure_fails_the_export_and_keeps_the_numbers(exported, monkeypatch):
    """Last in this file: it leaves q8_0 failed. A second export keeps the current f16 file."""
    run, _ = exported
    f16 = run.path / "export" / "smollm2-lora-f16.gguf"
    made = f16.stat().st_mtime_ns
    monkeypatch.setitem(ex.PPL_BOUNDS, "q8_0", 0.0)  # q8_0 is never bit-identical to fp32
    with pytest.raises(TunebookError) as err:
        ex.export_run(run, ["q8_0"], ppl_rows=8, questions=1)
    assert err.value.exit_code == 1 and "q8_0" in str(err.value) and "perplexity" in str(err.value)
    out = run.path / "export"
    saved = json.loads((out / "export.json").read_text())
    assert saved["quants"]["q8_0"]["passed"] is False and saved["quants"]["f16"]["passed"] is True
    assert (out / saved["quants"]["q8_0"]["file"]).with_suffix(".failed.gguf").is_file()
    assert f16.stat().st_mtime_ns == made, "the f16 file of the same merged model was converted again"
    with pytest.raises(TunebookError, match="failed its parity check"):
        ex.latest_gguf(run, "q8_0")
    assert ex.latest_gguf(run).name == saved["quants"]["f16"]["file"], "the Modelfile names a file that passed"
