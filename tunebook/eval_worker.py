"""`make eval ... NPROC=n`: lm-eval's data-parallel evaluation, each process under torchrun
scoring its share of the documents (lm-eval shards and gathers; torchrun starts the ranks).

Each rank loads the model the way a single-process eval does (`loading.load`, one policy),
so the scores answer the same question; only rank 0 writes them. On a CPU the ranks join
over gloo and split the cores between them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tunebook.errors import Problem, TunebookError

if TYPE_CHECKING:
    from tunebook.evaluate import Scored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def score_in_processes(cfg: dict, weights: Path, tasks: list[str], limit: int | None, nproc: int,
                       quantized: bool | None = None) -> Scored:
    from tunebook.adapt import engine_env
    from tunebook.launch import Launch
    from tunebook.machine import detect

    launch = Launch(nproc=nproc, master_port=_free_port())
    env, _ = engine_env(detect(), nproc=nproc, allocator=False)  # measured for training only
    with tempfile.TemporaryDirectory(prefix="tunebook-eval-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "scores.json"
        spec.write_text(json.dumps({"cfg": cfg, "weights": str(weights), "tasks": list(tasks), "limit": limit,
                                    "quantized": quantized}),
                        encoding="utf-8")
        cmd = launch.command("tunebook.eval_worker", [str(spec), str(out)])
        rc = subprocess.run(cmd, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}).returncode
        if rc != 0 or not out.exists():
            raise TunebookError([Problem("NPROC", "", f"the {nproc} evaluation processes exited with code {rc} "
                                         "(their output is above)")], exit_code=1)
        done = json.loads(out.read_text(encoding="utf-8"))
    from tunebook.evaluate import Scored

    return Scored(done["evaluated"], done["results"], done.get("per_doc") or {})


def main(spec_path: str, out_path: str) -> int:
    from tunebook.fast_start import process_start

    process_start()
    import torch

    from tunebook.engines import worker

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    worker.join_cpu_processes()
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():  # on GPUs nothing above opened it
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    from tunebook.evaluate import run_lm_eval
    from tunebook.loading import load
    from tunebook.runs import atomic_write_json

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    loaded = load(spec["cfg"], Path(spec["weights"]), spec.get("quantized"))
    model = loaded.model.to(f"cuda:{torch.cuda.current_device()}") if torch.cuda.is_available() else loaded.model
    requests: dict = {}
    per_doc: dict = {}
    results = run_lm_eval(model, loaded.tokenizer, spec["tasks"], spec["limit"], requests=requests, per_doc=per_doc)
    per_rank = [None] * worker.world_size()
    torch.distributed.all_gather_object(per_rank, requests.get("requests", 0))
    if worker.is_rank_zero():
        what = f"{loaded.description}, {len(per_rank)} processes (requests per rank: {', '.join(map(str, per_rank))})"
        atomic_write_json(Path(out_path), {"evaluated": what, "results": results, "per_doc": per_doc})
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
