"""The data pipeline: formats, malformed input, accounting, PII, dedup, filters, splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunebook.data import formats
from tunebook.data.dedup import content_text, normalise
from tunebook.data.pii import DEFAULT_ALLOW, find_pii, luhn_ok
from tunebook.data.pipeline import DataError, Options, run
from tunebook.data.quality import Filters
from tunebook.data.reader import EmptyInput, iter_records
from tunebook.data.split import leakage, split_of

SAMPLES = Path("data/samples")


def write(path: Path, lines: list) -> Path:
    path.write_bytes(b"".join((l if isinstance(l, bytes) else (l if isinstance(l, str) else json.dumps(l)).encode()) + b"\n"
                             for l in lines))
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def rejects(out: Path) -> list[dict]:
    return rows(out.with_name(out.stem + ".rejects.jsonl"))


# ---- round trips

@pytest.mark.parametrize("src,via", [("alpaca.jsonl", "messages"), ("sharegpt.json", "messages"),
                                     ("alpaca.jsonl", "sharegpt"), ("alpaca.csv", "messages")])
def test_round_trips_preserve_content(tmp_path, src, via):
    start = SAMPLES / src
    fmt = formats.detect(next(iter_records(start)).row)[0]
    mid, back = tmp_path / "mid.jsonl", tmp_path / "back.jsonl"
    assert run(start, mid, Options(to=via, near_dup_threshold=None, progress=False)).written > 0
    s = run(mid, back, Options(to=fmt, near_dup_threshold=None, progress=False))
    original = [r.row for r in iter_records(start)]
    assert s.written == len(original)
    # the same words in the same order (alpaca's input joins the user turn on the way)
    for a, b in zip(original, rows(back)):
        assert normalise(content_text(a)) == normalise(content_text(b))
        assert formats.detect(b) == [fmt]


def test_lossy_conversions_are_refused_with_a_reason(tmp_path):
    with pytest.raises(DataError, match="completion -> messages is refused: plain text has no turns"):
        run(SAMPLES / "completion.jsonl", tmp_path / "x.jsonl", Options(to="messages", progress=False))
    with pytest.raises(DataError, match="preference -> messages is refused"):
        run(SAMPLES / "preference.jsonl", tmp_path / "x.jsonl", Options(to="messages", progress=False))
    with pytest.raises(DataError, match="needs a chat template"):
        run(SAMPLES / "messages.jsonl", tmp_path / "x.jsonl", Options(to="completion", progress=False))
    # a multi-turn conversation can't become alpaca: that row is rejected, the others pass
    s = run(SAMPLES / "sharegpt.json", tmp_path / "a.jsonl", Options(to="alpaca", progress=False))
    assert (s.written, s.rejected) == (1, 1)
    assert "more turns (lossy)" in rejects(tmp_path / "a.jsonl")[0]["reason"]


def test_messages_to_completion_through_a_chat_template(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    out = tmp_path / "c.jsonl"
    run(SAMPLES / "messages.jsonl", out, Options(to="completion", progress=False,
                                                 template=lambda m: tok.apply_chat_template(m, tokenize=False)))
    text = rows(out)[0]["text"]
    assert "<|im_start|>assistant\n10 rebounds.<|im_end|>" in text


def test_detects_format_and_asks_when_ambiguous(tmp_path):
    both = write(tmp_path / "both.jsonl", [{"text": "x", "instruction": "a", "output": "b"}])
    with pytest.raises(DataError, match="fits alpaca and completion; say which with FROM"):
        run(both, tmp_path / "o.jsonl", Options(to="messages", progress=False))
    s = run(both, tmp_path / "o.jsonl", Options(to="messages", src="alpaca", progress=False))
    assert s.written == 1


# ---- malformed input: each class, its message and its line

@pytest.mark.parametrize("line,expected", [
    ("{not json", "invalid JSON at column 2"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]}, "messages[1].content must be a string"),
    ({"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "a"}]}, "messages[0].content must be a string, not int"),
    ({"messages": []}, "is an empty conversation"),
    ({"messages": [{"role": "user", "content": "q"}]}, "last turn of 'messages' is 'user', not assistant"),
    ({"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}, "role 'bot' is not one of"),
    (b'{"messages": "\xff"}', "not UTF-8"),
])
def test_each_malformed_class_is_rejected_with_its_line(tmp_path, line, expected):
    good = {"messages": [{"role": "user", "content": "fine"}, {"role": "assistant", "content": "yes"}]}
    src = write(tmp_path / "in.jsonl", [good, line, {**good, "messages": good["messages"][:1] + [{"role": "assistant", "content": "other"}]}])
    out = tmp_path / "out.jsonl"
    s = run(src, out, Options(to="messages", src="messages", progress=False))
    assert (s.read, s.written, s.rejected) == (3, 2, 1)
    (r,) = rejects(out)
    assert r["line"] == 2 and expected in r["reason"] and r["file"] == str(src)


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(EmptyInput, match="empty"):
        run(tmp_path / "e.jsonl", tmp_path / "o.jsonl", Options(to="messages", progress=False))


def test_accounting_identity_and_cli_summary(tmp_path):
    out = tmp_path / "b.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tunebook", "data", "convert", str(SAMPLES / "broken.jsonl"),
                           "--to", "messages", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "read        9" in proc.stdout and "written     2" in proc.stdout and "rejected    6" in proc.stdout
    assert "check       read = written + rejected + duplicates + filtered: ok" in proc.stdout
    assert len(rows(out)) == 2 and len(rejects(out)) == 7  # 6 rejected + 1 duplicate: nothing lost
    lines = sorted(r["line"] for r in rejects(out))
    assert lines == [2, 3, 4, 5, 6, 7, 9]


def test_cli_unknown_file_is_a_clean_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tunebook", "data", "convert", str(tmp_path / "nope.jsonl"),
                           "--to", "messages", "--out", str(tmp_path / "o.jsonl")], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr


# ---- PII

def test_pii_recall_and_precision_on_the_labelled_sample():
    tp = fp = fn = 0
    for line in Path("tests/data/pii_labelled.jsonl").read_text().splitlines():
        r = json.loads(line)
        want = {(p["type"], p["value"]) for p in r["pii"]}
        got = set(find_pii(r["text"]))
        tp, fp, fn = tp + len(want & got), fp + len(got - want), fn + len(want - got)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert tp >= 30 and precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_pii_is_replaced_with_typed_placeholders_and_counted(tmp_path):
    src = write(tmp_path / "p.jsonl", [{"instruction": "Mail x.y@z.com, card 4111 1111 1111 1111", "output": "ok 10.1.2.3"}])
    out = tmp_path / "o.jsonl"
    s = run(src, out, Options(to="alpaca", progress=False))
    (row,) = rows(out)
    assert row["instruction"] == "Mail <EMAIL>, card <CREDIT_CARD>" and row["output"] == "ok <IP_ADDRESS>"
    assert dict(s.pii) == {"EMAIL": 1, "CREDIT_CARD": 1, "IP_ADDRESS": 1}
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


# ---- dedup and filters

def _alpaca(i: int, text: str) -> dict:
    return {"instruction": text, "input": "", "output": f"answer {i}"}


BASE = "Stat line: Jayson Tatum 11-20 FG, 3-7 3PT, 6-7 FT, 2 OREB, 6 DREB, 5 AST. How many points did he score tonight?"


def test_dedup_catches_exact_and_planted_near_duplicates_but_keeps_distinct_rows(tmp_path):
    distinct = [_alpaca(i, f"Stat line: Player {i} {i}-{i + 9} FG, {i % 4}-{i % 7 + 4} 3PT. Points for player number {i}?")
                for i in range(30)]
    planted = [
        _alpaca(0, BASE),
        _alpaca(0, BASE),  # exact
        _alpaca(0, BASE.replace("How many", "how   MANY")),  # case and spacing only: exact after normalising
        _alpaca(0, BASE.replace("tonight?", "tonight!")),  # one character: near
    ]
    # short questions that differ in the one token that matters stay apart (FastChat's sample:
    # near-dup merged "Are you davinci-003?" into "-001?"): under near_dup_min_chars, exact only
    short = [{"instruction": f"Are you davinci-00{k}?", "input": "", "output": "No."} for k in (1, 3)]
    src = write(tmp_path / "d.jsonl", distinct + planted + short)
    out = tmp_path / "o.jsonl"
    s = run(src, out, Options(to="alpaca", src="alpaca", progress=False, near_dup_threshold=0.85,
                              near_dup_min_chars=100))
    assert s.written == 33 and s.duplicates == 2 and s.near_duplicates == 1
    kinds = {r["line"]: r["kind"] for r in rejects(out)}
    assert kinds == {32: "duplicate", 33: "duplicate", 34: "near_duplicate"}
    # the defaults of `make data`: exact duplicates only
    s = run(src, out, Options(to="alpaca", src="alpaca", progress=False))
    assert (s.written, s.duplicates, s.near_duplicates) == (34, 2, 0)


def test_quality_filters_record_their_reason(tmp_path):
    src = write(tmp_path / "q.jsonl", [_alpaca(1, "ok question here"), _alpaca(2, "x"),
                                       _alpaca(3, "1234 5678 9999 0000 1111 2222"), _alpaca(4, "go team go team go team go team go team")])
    out = tmp_path / "o.jsonl"
    s = run(src, out, Options(to="alpaca", progress=False, scrub_pii=False, near_dup_threshold=None,
                              filters=Filters(min_chars=12, min_alpha_ratio=0.5, max_repetition=0.6)))
    assert (s.written, s.filtered) == (1, 3)
    reasons = [r["reason"] for r in rejects(out)]
    assert any(r.startswith("too short") for r in reasons)
    assert any(r.startswith("alphabetic ratio") for r in reasons)
    assert any(r.startswith("repetition ratio") for r in reasons)


# ---- splits

def test_split_is_stable_when_rows_are_added():
    first = [_alpaca(i, f"question {i}") for i in range(200)]
    before = {json.dumps(r): split_of(r, 0.1, 0.1) for r in first}
    more = first + [_alpaca(i, f"new question {i}") for i in range(200)]
    after = {json.dumps(r): split_of(r, 0.1, 0.1) for r in more}
    assert all(after[k] == v for k, v in before.items())
    counts = {s: list(after.values()).count(s) for s in ("train", "val", "test")}
    assert 20 <= counts["val"] <= 60 and 20 <= counts["test"] <= 60


def test_leakage_check_finds_near_duplicates_across_splits():
    train = [_alpaca(0, BASE)] + [_alpaca(i, f"totally different question number {i}") for i in range(1, 10)]
    test = [_alpaca(0, BASE.replace("tonight?", "tonight!")), _alpaca(99, "nothing like the others at all")]
    found = leakage({"train": train, "val": [], "test": test})
    assert [(f["split"], f["index"], f["kind"]) for f in found] == [("test", 0, "near")]
    assert leakage({"train": train, "test": [train[3]]})[0]["kind"] == "exact"


def test_shipped_nba_splits_do_not_leak():
    load = lambda n: rows(Path(f"data/nba/{n}.jsonl"))  # noqa: E731
    assert leakage({"train": load("train"), "val": load("val"), "test": load("test")}) == []


def test_parquet_and_csv_inputs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_in = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(5)]
    pq.write_table(pa.Table.from_pylist(rows_in), tmp_path / "in.parquet")
    s = run(tmp_path / "in.parquet", tmp_path / "o.jsonl", Options(to="messages", progress=False))
    assert (s.detected, s.written) == ("alpaca", 5)
    assert rows(tmp_path / "o.jsonl")[4]["messages"][1]["content"] == "a4"
    s = run(SAMPLES / "alpaca.csv", tmp_path / "c.jsonl", Options(to="messages", progress=False))
    assert (s.detected, s.written) == ("alpaca", 3)


def test_token_length_stats_and_histogram(tmp_path, smollm2_dir):
    from transformers import AutoTokenizer

    from tunebook.data.stats import report

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    png = tmp_path / "h.png"
    stats = report(SAMPLES / "messages.jsonl", tok, sequence_len=30, png=png)
    expected = sorted(len(tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"])
                      for r in rows(SAMPLES / "messages.jsonl"))
    assert (stats["rows"], stats["min"], stats["max"]) == (2, expected[0], expected[-1])
    assert stats["truncated"] == sum(x > 30 for x in expected)
    assert stats["roles"] == {"user": 2, "assistant": 2, "system": 1}
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


# ---- at size: processes, and summaries a person reads

def test_two_processes_write_what_one_writes_byte_for_byte(tmp_path):
    """The per-row stages run in worker processes, chunk by chunk; the one process that writes
    takes their results in input order, so outputs, rejects and accounting are the same."""
    from tunebook.data.synth import alpaca_rows

    lines = [json.dumps(r) for r in alpaca_rows(3000, seed=1)]
    lines[10] = "{not json"
    lines[20] = json.dumps({"instruction": "", "input": "", "output": ""})  # rejected: nothing in it
    src = write(tmp_path / "in.jsonl", lines)
    outs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "o.jsonl"
        s = run(src, out, Options(to="messages", near_dup_threshold=0.85, workers=workers, chunk_rows=256,
                                  progress=False))
        assert s.balanced and s.workers == workers
        outs[workers] = (out.read_bytes(), out.with_name("o.rejects.jsonl").read_bytes(),
                         (s.written, s.rejected, s.duplicates, s.near_duplicates, s.filtered, dict(s.pii)))
    assert outs[1] == outs[2]
    written, rejected, dups, near, _filtered, pii = outs[1][2]
    assert rejected >= 2 and dups > 30 and near > 0 and pii.get("EMAIL", 0) > 0  # the synthetic rows' shape


def test_reasons_are_counted_by_kind_with_three_examples_and_json_items_are_items(tmp_path):
    rows_ = [_alpaca(i % 8, f"Question number {i % 8} about the season") for i in range(86)]  # 8 kept, 78 duplicates
    src = tmp_path / "a.json"
    src.write_text(json.dumps(rows_), encoding="utf-8")
    out = tmp_path / "o.jsonl"
    s = run(src, out, Options(to="messages", progress=False))
    assert (s.written, s.duplicates) == (8, 78)
    assert dict(s.reasons) == {"duplicate: exact duplicate of N": 78}  # one kind, not one line per kept row
    text = s.render()
    assert text.count("e.g. item ") == 3 and "e.g. item 9: exact duplicate of item 1" in text
    assert all("item" in r and "line" not in r for r in rejects(out))  # a JSON array has items, not lines
    assert text.count(str(src)) == 1  # the input path once


def test_pii_report_allow_list_and_dedup_report_are_written_for_review(tmp_path):
    src = write(tmp_path / "r.jsonl", [
        _alpaca(1, "Call 415-555-0134 or write to ann@corp.example.org about the trade."),
        _alpaca(2, "Generate a hypothetical phone number such as 123-456-7890."),  # a documented placeholder
        _alpaca(3, "Our team code is 555-0100 internally."),  # allowed by the user's list below
        _alpaca(4, "Compute 472547338 + 960397912423686 for me."),  # arithmetic, not a card
        _alpaca(1, "Call 415-555-0134 or write to ann@corp.example.org about the trade."),  # exact duplicate
    ])
    allow = tmp_path / "allow.txt"
    allow.write_text("555-0100\n")
    out, report, clusters = tmp_path / "o.jsonl", tmp_path / "pii.jsonl", tmp_path / "dups.jsonl"
    s = run(src, out, Options(to="alpaca", progress=False, pii_report=report, dedup_report=clusters,
                              pii_allow=DEFAULT_ALLOW | {"555-0100"}))
    found = rows(report)
    assert [(r["line"], r["type"], r["value"]) for r in found] == [
        (1, "PHONE", "415-555-0134"), (1, "EMAIL", "ann@corp.example.org"),
        (5, "PHONE", "415-555-0134"), (5, "EMAIL", "ann@corp.example.org")]
    assert "Call 415-555-0134 or write" in found[0]["context"]
    kept = [r["instruction"] for r in rows(out)]
    assert "123-456-7890" in kept[1] and "555-0100" in kept[2] and "960397912423686" in kept[3]
    assert dict(s.pii) == {"PHONE": 2, "EMAIL": 2}
    assert rows(clusters) == [{"file": str(src), "kept": "line 1", "removed": [{"line": 5, "kind": "exact", "jaccard": 1.0}]}]


# ---- real shapes (tests/data/real/: LLaMA-Factory's demo files, unchanged)

REAL = Path("tests/data/real")


def test_llamafactory_tool_calls_become_openai_tool_calls_and_come_back(tmp_path):
    src = REAL / "llamafactory_glaive_toolcall_en.json"
    source = json.loads(src.read_text())
    s = run(src, tmp_path / "m.jsonl", Options(to="messages", progress=False))
    assert (s.detected, s.read, s.written) == ("sharegpt", len(source), len(source)) and not s.not_carried
    out = rows(tmp_path / "m.jsonl")
    for row, orig in zip(out, source):
        assert row["tools"] == json.loads(orig["tools"])  # carried, as a list of schemas
        calls = [t for t in row["messages"] if t.get("tool_calls")]
        assert len(calls) == sum(t["from"] == "function_call" for t in orig["conversations"])
        assert all(c["tool_calls"][0]["function"]["name"] for c in calls)
        assert sum(t["role"] == "tool" for t in row["messages"]) == sum(t["from"] == "observation" for t in orig["conversations"])
    assert any(t.get("tool_calls") for r in out for t in r["messages"])  # the sample has tool calls
    back = run(tmp_path / "m.jsonl", tmp_path / "s.jsonl", Options(to="sharegpt", progress=False))
    assert back.written == len(source)
    for row, orig in zip(rows(tmp_path / "s.jsonl"), source):
        assert [t["from"] for t in row["conversations"]] == [t["from"] for t in orig["conversations"]]
        assert json.loads(row["tools"]) == json.loads(orig["tools"])
        calls = [json.loads(t["value"]) for t in row["conversations"] if t["from"] == "function_call"]
        assert calls == [json.loads(t["value"]) for t in orig["conversations"] if t["from"] == "function_call"]
    # alpaca has no place for tools: refused per row with the reason, never written without them
    s = run(tmp_path / "m.jsonl", tmp_path / "a.jsonl", Options(to="alpaca", progress=False))
    assert s.rejected >= 1 and any("tool" in r["reason"] for r in rejects(tmp_path / "a.jsonl"))


def test_llamafactory_preference_rows_and_content_parts_read_as_preference_and_messages(tmp_path):
    s = run(REAL / "llamafactory_dpo_en.json", tmp_path / "p.jsonl", Options(to="preference", progress=False))
    assert (s.detected, s.rejected) == ("preference", 0) and s.written == s.read == 4
    first = rows(tmp_path / "p.jsonl")[0]
    assert first["prompt"][0]["role"] == "user" and isinstance(first["chosen"], str) and first["chosen"] != first["rejected"]
    s = run(REAL / "llamafactory_v1_dpo.jsonl", tmp_path / "v.jsonl", Options(to="preference", progress=False))
    assert (s.detected, s.written, s.rejected) == ("preference", 3, 0)
    v1 = rows(tmp_path / "v.jsonl")[0]
    # whole conversations sharing their first turns: the prompt is what they share
    assert [t["role"] for t in v1["prompt"]] == ["system", "user"] and v1["chosen"][0]["role"] == "assistant"
    assert isinstance(v1["prompt"][1]["content"], str)  # content parts flattened
    assert s.not_carried["prompt[].loss_weight"] == 3  # said, not silently dropped
    s = run(REAL / "llamafactory_v1_sft.jsonl", tmp_path / "sft.jsonl", Options(to="messages", progress=False))
    assert s.written == 4 and s.not_carried["messages[].loss_weight"] == 4 and "not carried" in s.render()
    assert all(isinstance(t["content"], str) for r in rows(tmp_path / "sft.jsonl") for t in r["messages"])
    s = run(REAL / "llamafactory_kto_en.json", tmp_path / "k.jsonl", Options(to="messages", progress=False))
    assert s.written == 4  # KTO rows (messages + label) pass as conversations; the label stays with them
    assert all("label" in r for r in rows(tmp_path / "k.jsonl"))


def test_openai_shapes_orca_columns_and_trl_implicit_prompts(tmp_path):
    """Shapes written here after the OpenAI, Orca DPO and TRL documentation (no file of theirs ships)."""
    openai = [
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Points for 11-20 FG, 3 threes, 6 FT?"}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "31 points."}]}]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]},
                      {"role": "assistant", "content": "A chart."}]},
        {"tools": [{"type": "function", "function": {"name": "box_score", "parameters": {"type": "object"}}}],
         "messages": [{"role": "user", "content": "Score of the Celtics game?"},
                      {"role": "assistant", "content": None, "tool_calls": [
                          {"id": "c1", "type": "function", "function": {"name": "box_score", "arguments": "{\"team\": \"BOS\"}"}}]},
                      {"role": "tool", "tool_call_id": "c1", "content": "{\"BOS\": 112, \"NYK\": 104}"},
                      {"role": "assistant", "content": "Boston won 112-104."}]},
    ]
    s = run(write(tmp_path / "o.jsonl", openai), tmp_path / "m.jsonl", Options(to="messages", progress=False))
    assert (s.written, s.rejected) == (2, 1)
    (bad,) = rejects(tmp_path / "m.jsonl")
    assert bad["line"] == 2 and "'image_url' part" in bad["reason"]
    a, b = rows(tmp_path / "m.jsonl")
    assert a["messages"][0]["content"] == "Points for 11-20 FG, 3 threes, 6 FT?"
    assert b["tools"][0]["function"]["name"] == "box_score" and b["messages"][2]["tool_call_id"] == "c1"
    pref = [
        {"system": "You are an analyst.", "question": "Who won?", "chosen": "Boston, 112-104.", "rejected": "New York."},  # Orca DPO
        {"chosen": [{"role": "user", "content": "Who won?"}, {"role": "assistant", "content": "Boston."}],  # TRL, implicit prompt
         "rejected": [{"role": "user", "content": "Who won?"}, {"role": "assistant", "content": "New York."}]},
    ]
    s = run(write(tmp_path / "p.jsonl", pref), tmp_path / "pp.jsonl", Options(to="preference", progress=False))
    assert (s.detected, s.written) == ("preference", 2)
    orca, trl = rows(tmp_path / "pp.jsonl")
    assert orca["prompt"] == [{"role": "system", "content": "You are an analyst."}, {"role": "user", "content": "Who won?"}]
    assert trl["prompt"] == [{"role": "user", "content": "Who won?"}]
    assert trl["chosen"] == [{"role": "assistant", "content": "Boston."}]


def test_ray_tasks_write_what_one_process_writes(tmp_path):
    """`--executor ray`: the per-row stages as Ray tasks (a local Ray with 2 workers here;
    RAY_ADDRESS points at a cluster), merged in input order: byte-identical outputs."""
    import ray

    from tunebook.data.synth import alpaca_rows

    src = write(tmp_path / "in.jsonl", [json.dumps(r) for r in alpaca_rows(2000, seed=3)])
    got = {}
    try:
        for executor, workers in (("local", 1), ("ray", 2)):
            out = tmp_path / executor / "o.jsonl"
            s = run(src, out, Options(to="messages", near_dup_threshold=0.85, workers=workers, executor=executor,
                                      chunk_rows=250, progress=False))
            got[executor] = (out.read_bytes(), out.with_name("o.rejects.jsonl").read_bytes(),
                             (s.read, s.written, s.duplicates, s.near_duplicates, dict(s.pii)))
        assert ray.is_initialized() and ray.cluster_resources().get("CPU") == 2
    finally:
        ray.shutdown()
    assert got["ray"] == got["local"] and got["local"][2][2] > 0
