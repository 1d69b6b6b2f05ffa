# tmln — two commands: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tmln-installed

.PHONY: demo demo-models real-models test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch/torchvision first, by exact version (pip takes them from the local disk where present)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tmln demo --out demo-run

# retrain the bundled demo models (src/tmln/models/bundled/demo-*) on phantoms: ~30 min on 2 CPU cores
demo-models: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/train_demo_models.py

# rebuild the bundled real-tissue models from ../shared/data/pcam (PCam, CC0): pcam-tumour (train, evaluate, bundle;
# ~70 min on 2 CPU cores with native bf16) and pcam-nodes (real-textured phantoms ~20 min, training ~35 min);
# see each card's training.wall_seconds; a GPU is used when present
real-models: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/train_real_models.py
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) scripts/train_real_nodes.py

# lint (ruff: pyflakes), the layering contract (import-linter, pyproject.toml), then the tests
test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 --dist loadfile -q

bench: $(STAMP)
	@echo "Each benchmark states its own command in benchmarks/results/*.md; run the one you need, then:"
	$(PY) benchmarks/assemble.py

clean:
	rm -rf demo-run .pytest_cache
