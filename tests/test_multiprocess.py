"""Two processes on this CPU through torchrun and gloo train what one process with gradient
accumulation 2 trains.

Memorisable data (8 rows) and micro-batch 4: one process with accumulation 2 and two ranks
with one micro-batch each both take every step over all 8 rows, so the gradients are the
same mean over the same tokens and only the order of the sums differs: gloo's all-reduce
adds two partial gradients where one process adds two micro-batches. In fp32 that is
rounding at 1e-7 relative per step; the bound is 1e-3 of the loss per step (measured here:
the two curves were equal to the last bit over 6 steps at lr 1e-2). A rank that trained alone on all
the data (accelerate left in single-process mode, the trap engines/worker.py handles)
gives the curve of micro-batch 8 with no accumulation, which this data cannot tell
apart: so the test also asserts world size 2 from the ranks themselves, gloo, and a
dataloader sharded between them (each rank's epoch is half the steps).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tiny_recipe
from tunebook.errors import TunebookError
from tunebook.launch import Launch, from_env
from tunebook.train import train

STEPS = 6


def test_two_cpu_processes_train_what_one_with_accumulation_trains(tiny_llama, memorise_data, tmp_path):
    common = dict(max_steps=STEPS, micro_batch_size=4, learning_rate=1e-2, lora_dropout=0.0, logging_steps=1,
                  bf16=False, save_strategy="no", save_steps=None)
    one = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "one.yaml", tiny_llama, memorise_data,
                            gradient_accumulation_steps=2, **common)
    two = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "two.yaml", tiny_llama, memorise_data,
                            gradient_accumulation_steps=1, **common)
    a = train(one, runs_root=tmp_path / "one", echo=False).read_record()
    b = train(two, runs_root=tmp_path / "two", echo=False, launch=Launch(nproc=2, master_port=29517)).read_record()
    assert b.distributed["world_size"] == 2 and b.distributed["backend"] == "gloo"
    assert b.launch["launcher"] == "torchrun" and len(b.distributed["peak_rss_mib_per_rank"]) == 2
    # 8 rows in batches of 4 over 2 ranks: one step per epoch on each rank, as for one process with accumulation 2
    assert [p.step for p in a.loss_curve] == [p.step for p in b.loss_curve] == list(range(1, STEPS + 1))
    assert b.last_log["epoch"] == pytest.approx(a.last_log["epoch"])
    pairs = [(p.loss, q.loss) for p, q in zip(a.loss_curve, b.loss_curve)]
    assert all(abs(x - y) <= 1e-3 * abs(x) for x, y in pairs), pairs
    assert pairs[-1][1] < pairs[0][1]  # and it learned
    threads = {c["key"]: c["new"] for c in b.adaptations}
    assert threads["env.OMP_NUM_THREADS"] == str(max(1, (b.machine.model_extra or {}).get("cpu_count", 2) // 2))


def test_launch_settings_are_checked_and_unsloth_says_it_is_one_process(monkeypatch):
    monkeypatch.setenv("NNODES", "2")
    monkeypatch.setenv("NODE_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    launch = from_env("4")
    assert launch.world_size == 8
    cmd = launch.command("tunebook.engines.axolotl_worker", ["c.yaml", "m.json"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--nproc_per_node=4", "--nnodes=2", "--node_rank=1"]
    assert "--master_addr=10.0.0.1" in cmd and cmd[-4:] == ["-m", "tunebook.engines.axolotl_worker", "c.yaml", "m.json"]
    monkeypatch.setenv("NODE_RANK", "2")
    with pytest.raises(TunebookError, match="NODE_RANK: 2 is not below NNODES=2"):
        from_env("4")
    monkeypatch.delenv("NNODES")
    monkeypatch.delenv("NODE_RANK")
    with pytest.raises(TunebookError, match="NPROC: must be an integer >= 1, got 'two'"):
        from_env("two")
    from tunebook.resolve import resolve

    with pytest.raises(TunebookError, match="the unsloth engine trains in one process"):
        resolve("recipes/smollm2/qlora.yaml", check_inputs=False, launch=Launch(nproc=2))


def test_shipped_deepspeed_configs_parse_and_a_missing_one_is_named():
    import json

    from tunebook.value_checks import deepspeed_problems

    where = lambda key: ("r.yaml", 9)  # noqa: E731
    shipped = sorted(Path("recipes/deepspeed").glob("*.json"))
    assert len(shipped) >= 4
    for path in shipped:
        stage = json.loads(path.read_text())["zero_optimization"]["stage"]
        assert stage in (1, 2, 3) and deepspeed_problems({"deepspeed": path.as_posix()}, where) == []
    (p,) = deepspeed_problems({"deepspeed": "recipes/deepspeed/zero4.json"}, where)
    assert (p.source, p.line, p.key) == ("r.yaml", 9, "deepspeed") and "no such DeepSpeed config" in p.message
    assert "recipes/deepspeed/zero3_bf16.json" in p.message  # what there is to choose from
    (p,) = deepspeed_problems({"deepspeed": "recipes/deepspeed/zero3.json", "load_in_4bit": True}, where)
    assert "needs an adapter" in p.message


def test_fsdp2_settings_are_checked_against_the_model_and_deepspeed():
    from tunebook.recipe import load_recipe
    from tunebook.value_checks import fsdp_problems

    where = lambda key: ("r.yaml", 7)  # noqa: E731
    for path in sorted(Path("recipes").glob("*/*fsdp*.yaml")):  # shipped: clean
        assert fsdp_problems(load_recipe(path).config, where) == [], path
    cfg = load_recipe("recipes/llama3/full-fsdp2.yaml").config
    typo = {**cfg, "fsdp_config": {**cfg["fsdp_config"], "transformer_layer_cls_to_wrap": "LlamaDecoderLayr"}}
    (p,) = fsdp_problems(typo, where)
    assert p.key == "fsdp_config.transformer_layer_cls_to_wrap" and "did you mean 'LlamaDecoderLayer'" in p.message
    qwen = {**cfg, "recipe": {**cfg["recipe"], "family": "qwen3"}}  # a Llama layer on a Qwen3 model
    assert "not a layer of a qwen3 model" in fsdp_problems(qwen, where)[0].message
    both = {**cfg, "deepspeed": "recipes/deepspeed/zero3.json"}  # Axolotl refuses this only for FSDP1's `fsdp:`
    assert "keep one" in fsdp_problems(both, where)[0].message


def test_show_prints_the_torchrun_command_for_an_8_gpu_node_even_where_the_model_is_not(capsys):
    from tunebook.cli import main

    code = main(["show", "recipes/mistral/full.yaml", "--nproc", "8"])
    out, err = capsys.readouterr()
    assert "-m torch.distributed.run --nproc_per_node=8 --nnodes=1" in out
    assert "-m tunebook.engines.axolotl_worker 'runs/mistral-full/<run-id>/config.yaml'" in out
    # an offline machine without the model in its HF cache cannot check it: the error `make train` gives
    assert "Traceback" not in err and (code == 0 or (code == 2 and "base_model" in err))


@pytest.mark.matrix  # a local Ray cluster and two engine workers: ~1 minute, nightly (make test-matrix)
def test_use_ray_trains_on_a_local_ray_cluster_with_two_cpu_workers(tiny_llama, memorise_data, tmp_path):
    """Axolotl's `use_ray`/`ray_num_workers` from a recipe: Ray Train places 2 CPU workers, each
    runs the engine worker, gloo joins them; the curve is the 2-process torchrun curve's
    (the same gradients: see the module docstring), within the same 1e-3."""
    common = dict(max_steps=3, micro_batch_size=4, learning_rate=1e-2, lora_dropout=0.0, logging_steps=1,
                  bf16=False, save_strategy="no", save_steps=None, gradient_accumulation_steps=1)
    ray_recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "ray.yaml", tiny_llama, memorise_data,
                                   use_ray=True, ray_num_workers=2, **common)
    torchrun_recipe = write_tiny_recipe(Path("recipes/smollm2/lora.yaml"), tmp_path / "tr.yaml", tiny_llama,
                                        memorise_data, **common)
    r = train(ray_recipe, runs_root=tmp_path / "ray", echo=False).read_record()
    t = train(torchrun_recipe, runs_root=tmp_path / "tr", echo=False, launch=Launch(nproc=2, master_port=29519)).read_record()
    assert r.launch["launcher"] == "ray" and r.launch["world_size"] == 2
    assert r.distributed["world_size"] == 2 and r.distributed["backend"] == "gloo"
    assert {c["key"] for c in r.adaptations} >= {"use_ray", "ray_num_workers"}  # said, and kept from the engine
    pairs = [(p.loss, q.loss) for p, q in zip(t.loss_curve, r.loss_curve)]
    assert len(pairs) == 3 and all(abs(x - y) <= 1e-3 * abs(x) for x, y in pairs), pairs


def test_ray_launch_command_and_its_refusals(monkeypatch):
    from tunebook.launch import for_recipe

    said = []
    cfg = {"use_ray": True, "ray_num_workers": 3, "resources_per_worker": {"GPU": 1}}
    launch = for_recipe(Launch(), cfg, has_cuda=False, set_key=lambda k, v, why: said.append(k))
    assert (launch.ray, launch.nproc, launch.ray_resources) == (True, 3, None)  # a GPU request is not asked of a CPU
    assert said == ["use_ray", "ray_num_workers", "resources_per_worker"]
    cmd = launch.command("tunebook.engines.axolotl_worker", ["c.yaml", "m.json"])
    assert cmd[1:4] == ["-m", "tunebook.engines.ray_launch", "--workers=3"] and "--gpu" not in cmd
    assert cmd[-4:] == ["--", "tunebook.engines.axolotl_worker", "c.yaml", "m.json"]
    gpu = for_recipe(Launch(nproc=8), dict(cfg), has_cuda=True, set_key=lambda *a: None)
    assert gpu.nproc == 8 and "--gpu" in gpu.command("m", []) and '--resources={"GPU": 1}' in gpu.command("m", [])
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    env_launch = from_env()
    assert env_launch.ray and "--address=ray://head:10001" in for_recipe(env_launch, {}, False, None).command("m", [])
    from tunebook.resolve import resolve

    with pytest.raises(TunebookError, match="use_ray / RAY_ADDRESS needs the axolotl engine"):
        resolve("recipes/smollm2/qlora.yaml", check_inputs=False, launch=env_launch)


def test_show_on_cuda_prints_the_config_a_gpu_node_runs(capsys):
    """On this CPU the DeepSpeed key is dropped (said); `ON=cuda` shows what the 8-GPU node keeps."""
    from tunebook.cli import main

    assert main(["show", "recipes/mistral/full.yaml", "--nproc", "8", "--on", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "--nproc_per_node=8" in out and "deepspeed: recipes/deepspeed/zero3_bf16.json" in out
    assert "# adapted for cuda-8x" in out and "DeepSpeed/FSDP need CUDA GPUs" not in out
    assert "attn_implementation: flash_attention_2" in out  # the GPU kernel stays on a GPU node
