"""`make bench-engines` measures every contender the same way; these check the measuring.

The full bench trains six times on the real model (minutes), so here: the watcher that times
step lines and polls RSS, run on a child with known behaviour, and the contenders' command
lines, each resolved through tunebook's own validation so a typo in them fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tunebook import bench_engines as be
from tunebook.recipe import parse_overrides

CHILD = """
import sys, time
block = b"x" * (300 * 2**20)             # 300 MiB, touched: resident until exit
for i in range(3):
    time.sleep(0.4)
    sys.stdout.write("{'loss': %d.0, 'epoch': 0.1}\\r" % i)   # tqdm-style: \\r, not \\n
    sys.stdout.flush()
print("done")
"""


def test_step_lines_are_timed_and_peak_rss_is_the_largest_process(tmp_path):
    rc, stamps, rss_mib, wall = be._run([sys.executable, "-c", CHILD], {}, tmp_path / "log", neighbour=False, steps=3)
    # counts and order only: on a busy machine two lines may arrive in one read, and the
    # poll may see the peak late, never above what the child held plus the interpreter
    assert rc == 0 and len(stamps) == 3 and stamps == sorted(stamps)
    assert rss_mib > 0  # the poll saw the process; its size is a measurement, not asserted
    assert wall >= stamps[-1]
    assert (tmp_path / "log").read_text().count("'loss'") == 3


BAR_CHILD = """
import sys, time
for i in (5, 272):  # transformers' weight loading draws a bar before training starts
    sys.stdout.write("\\rLoading weights: 100%%|####| %d/272 [00:01<00:00, 140.2it/s]" % i)
print()
for i in range(4):
    time.sleep(0.2)
    sys.stdout.write("\\r 40%%|####      | %d/3 [00:01<00:02, 1.0it/s, loss 2.1 · tok/s 300]" % min(i, 3))
    sys.stdout.flush()
print()
"""


def test_a_contender_that_shows_a_progress_bar_is_timed_by_its_steps(tmp_path):
    """tunebook's engines print a bar with loss and tok/s, not a dict per step: each new step
    count is one stamp (0/3 is not a step; a redraw of the same count is not another)."""
    rc, stamps, _rss, _wall = be._run([sys.executable, "-c", BAR_CHILD], {}, tmp_path / "log", neighbour=False,
                                      steps=3)
    assert rc == 0 and len(stamps) == 3 and stamps == sorted(stamps)  # the loading bar's 272 is not a step


def test_busy_neighbour_runs_during_the_contender_and_is_stopped(tmp_path):
    import psutil

    probe = "import psutil; print(sum(p.cmdline()[-1:] == ['while True: pass'] for p in psutil.process_iter()))"
    before = {p.pid for p in psutil.process_iter()}
    rc, _, _, _ = be._run([sys.executable, "-c", probe], {}, tmp_path / "log", neighbour=True, steps=1)
    assert rc == 0 and int((tmp_path / "log").read_text().strip()) >= 1
    leftover = [p for p in psutil.process_iter() if p.pid not in before and p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE and p.cmdline()[-1:] == ["while True: pass"]]
    assert not leftover


def test_contenders_run_the_same_steps_with_args_tunebook_accepts(tmp_path):
    from tunebook.resolve import resolve

    recipe, qlora = Path("recipes/smollm2/lora.yaml"), Path("recipes/smollm2/qlora.yaml")
    cs = be.contenders(recipe, qlora, 7, tmp_path, "data/nba/train.jsonl", "models/smollm2-135m-instruct")
    names = [c.name for c in cs]
    assert names[0] == "axolotl train (plain)" and names[-1] == "transformers + peft (floor)"
    plain = yaml.safe_load((tmp_path / "plain-axolotl.yaml").read_text())
    assert plain["max_steps"] == 7 and plain["save_strategy"] == "no" and "save_steps" not in plain
    original = yaml.safe_load(recipe.read_text())
    assert {k: v for k, v in plain.items() if k not in ("max_steps", "save_strategy", "output_dir", "save_steps")} == \
        {k: v for k, v in original.items() if k not in ("max_steps", "save_strategy", "output_dir", "save_steps")}
    for c in cs:
        if "--args" not in c.cmd:
            continue
        args = c.cmd[c.cmd.index("--args") + 1]
        assert parse_overrides(args)["max_steps"] == 7
        engine = c.cmd[c.cmd.index("--engine") + 1] if "--engine" in c.cmd else None
        config = resolve(c.cmd[4], args, engine).adapted
        assert config["max_steps"] == 7 and config["save_strategy"] == "no"
        if "padded" in c.shapes:
            assert config["micro_batch_size"] == 4 and not config["sample_packing"]
    assert sum(c.neighbour for c in cs) == 1
    assert cs[-1].cmd[-3:-1] == ["7", "4"]
    plain_unsloth = next(c for c in cs if c.name == "unsloth (plain)")
    assert plain_unsloth.cmd[2] == "tunebook.plain_unsloth" and plain_unsloth.cmd[-3:-1] == ["7", "4"]
    assert plain_unsloth.tokens == "file" and plain_unsloth.cmd[-1] == str(plain_unsloth.tokens_file)


@pytest.mark.matrix  # a second Unsloth training (~20 s) for a bench-only script: nightly, not make test
def test_plain_unsloth_trains_the_steps_and_counts_its_real_tokens(tiny_llama, memorise_data, tmp_path):
    """Unsloth as its notebooks run it (the baseline of the "1.2x Unsloth's own CPU path" target),
    on a tiny model: timed by the same step lines as every contender, its own count of the
    non-pad tokens of the batches it trained (8 rows of 2 turns, 4 per step, padded)."""
    out = tmp_path / "counts.json"
    rc, stamps, _, _ = be._run([sys.executable, "-m", "tunebook.plain_unsloth", str(tiny_llama), str(memorise_data),
                                "2", "4", str(out)], {**be.OFFLINE, "PATH": "/usr/bin:/bin"}, tmp_path / "log",
                               neighbour=False, steps=2)
    assert rc == 0, (tmp_path / "log").read_text(errors="replace")[-3000:]
    assert len(stamps) == 2
    counts = json.loads(out.read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    rows = [json.loads(line)["messages"] for line in memorise_data.read_text().splitlines()]
    # TRL closes each text with the EOS token (the template ends in "\n"): one more token a row
    lengths = sorted(len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"]) + 1 for m in rows)
    # two batches of 4 of these rows: at least the 8 shortest, at most the 8 longest, never the padding
    assert sum(lengths[:8]) <= counts["tokens_real"] <= sum(lengths[-8:]) and counts["steps"] == 2


def test_rates_peaks_and_ratios_are_derived_from_what_was_measured():
    plain = be.Result("axolotl train (plain)", "packed", ok=True, steps=10, steady_s=45.0, tokens_from="tunebook → axolotl",
                      flops_per_token=4 * 100)
    tb = be.Result("tunebook → axolotl", "packed", ok=True, steps=20, steady_s=19.0, tokens_real=10_000,
                   flops_per_token=4 * 100)
    failed = be.Result("tunebook → unsloth", "padded x 4", ok=False, steps=0)
    peaks = {"bf16": 4e5, "fp32": None}
    be.derive([plain, tb, failed], peaks)
    assert tb.tokens_per_s == round(10_000 * 19 / 20 / 19.0, 1) == 500.0
    assert plain.tokens_real == 5_000 and plain.tokens_per_s == round(5_000 * 9 / 10 / 45.0, 1) == 100.0
    assert tb.vs_plain_axolotl == 5.0 and plain.vs_plain_axolotl == 1.0
    assert tb.frac_bf16_peak == round(400 * 500.0 / 4e5, 3) and tb.frac_fp32_peak is None
    assert failed.tokens_per_s is None and failed.vs_plain_axolotl is None
    be.derive([plain, tb, failed], peaks)  # idempotent: a saved report can be re-derived
    assert plain.notes.count("real tokens: tunebook → axolotl's per step (same packs)") == 1
    assert "| tunebook → axolotl | packed |" in be.table(
        {"machine_kind": "cpu-2c-x", "machine": {"cpu_model": "x"}, "steps": 20, "git_commit": "abc", "at": "now",
         "peaks_flops": peaks, "results": [vars(r) for r in (plain, tb, failed)]})
