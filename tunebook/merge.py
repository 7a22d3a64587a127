"""`make merge`: bake a run's LoRA/QLoRA adapter into its full-precision base model.

The merged folder is written to a temporary directory and renamed into place, and only
after its logits were checked against base+adapter, so `merged/` is either right or absent.
"""

from __future__ import annotations

from tunebook.errors import Problem, TunebookError
from tunebook.loading import POLICY, load_run, run_config
from tunebook.runs import RunDir, atomic_save_pretrained, atomic_write_json

PROBE = "Compute 12 + 30. The answer is"


def merge_run(run: RunDir, atol: float = 1e-3) -> dict:
    import torch

    if not (run.output / "adapter_config.json").exists():
        raise TunebookError([Problem(str(run.output), "", "this run trained all weights; there is no adapter to merge")],
                            hint="its output/ folder already is a complete model")
    loaded = load_run(run, quantized=False)  # 4-bit weights cannot hold the merged delta
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(PROBE, return_tensors="pt")
    with torch.no_grad():
        expected = model(**ids).logits
    merged = model.merge_and_unload()
    with torch.no_grad():
        got = merged(**ids).logits
    diff = (expected - got).abs().max().item()
    scale = expected.abs().max().item()
    if diff > atol * max(1.0, scale):
        raise TunebookError([Problem(str(run.path), "", f"merged logits differ from base+adapter by {diff:.3g}")],
                            exit_code=1)
    cfg = run_config(run)
    vs_quantized = None
    if cfg.get("load_in_4bit"):
        # the model eval and chat use (4-bit base + adapter) is not the merged one: say by how much
        trained = load_run(run).model
        with torch.no_grad():
            vs_quantized = (trained(**ids).logits.float() - got).abs().max().item()
        del trained
    final = atomic_save_pretrained(run.path / "merged", merged, tok)
    info = {
        "base_model": cfg["base_model"],
        "adapter": str(run.output),
        "quantized_training": bool(cfg.get("load_in_4bit")),
        "merged_into": "full-precision (fp32) base" + (" (QLoRA adapters merge into the unquantized base)"
                                                          if cfg.get("load_in_4bit") else ""),
        "policy": POLICY,
        "logits_max_abs_diff": diff,
        "logits_max_abs_diff_vs_4bit_model": vs_quantized,
        "logits_scale": scale,
        "probe": PROBE,
        "path": str(final),
        "bytes": sum(p.stat().st_size for p in final.rglob("*") if p.is_file()),
    }
    atomic_write_json(final / "merge.json", info)
    return info
