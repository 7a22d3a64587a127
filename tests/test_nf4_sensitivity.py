"""The ranking behind a recipe's 16-bit modules (tunebook/nf4_sensitivity.py), on a tiny Llama."""

from __future__ import annotations

from pathlib import Path

from tunebook.nf4_sensitivity import main, rank


def test_every_projection_is_ranked_by_what_its_nf4_rounding_costs(tiny_llama, capsys):
    r = rank(tiny_llama, Path("data/nba/val.jsonl"), rows=2)
    names = [n for n, _ in r.per_module]
    assert len(names) == 14 and len(set(names)) == 14  # 2 layers x 7 projections, lm_head left out
    assert all(n.startswith("model.layers.") for n in names)
    kls = [k for _, k in r.per_module]
    assert kls == sorted(kls, reverse=True) and kls[-1] > -1e-6 and kls[0] > 0
    assert r.kl_all > 0
    # what it prints is a recipe line, worst first
    assert main([str(tiny_llama), "data/nba/val.jsonl", "--rows", "2", "--top", "3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line == f"  llm_int8_skip_modules: [lm_head, {', '.join(names[:3])}]"


def test_a_4bit_base_is_cached_per_set_of_16bit_layers(tiny_llama):
    """The 4-bit base a QLoRA eval scores alone is cached; one that keeps other layers 16-bit is
    another model and must not be answered from that cache."""
    from tunebook.evaluate import eval_key

    def key(**kw):
        return eval_key([tiny_llama], ["control_mc"], 2, None, **kw)

    plain, four = key(), key(four_bit=True)
    kept = key(four_bit=True, kept_16bit=["model.layers.1.mlp.down_proj"])
    assert len({plain, four, kept}) == 3
    assert key(four_bit=True, kept_16bit=[]) == four  # keys of 4-bit loads that keep nothing stay as they were
    assert key(four_bit=True, kept_16bit=["a", "b"]) == key(four_bit=True, kept_16bit=["b", "a"])
