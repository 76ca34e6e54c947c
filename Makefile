# prodrec: `make run` installs and runs every notebook headless; `make test` installs and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The catalog: DATA=/path/to/fashion-product-images-small. Empty = the first one found
# ($$PRODREC_DATA, /kaggle/input/..., ./data/...), then ../shared/data/fashion-sample, else a demo catalog.
DATA   ?= $(firstword $(wildcard ../shared/data/fashion-sample))
OUT    ?= outputs/run
N      ?= 5000
PYTEST_ARGS ?=
# The tests run on TEST_WORKERS pytest-xdist workers (auto: one per core, at most 4; each worker has its own
# embedding store), a test module at a time in the order tests/conftest.py sorts them. TEST_WORKERS=0 runs
# them in this process.
# The tests marked serial (a local Ray cluster: its raylet must start within 30 s) run alone afterwards.
TEST_WORKERS ?= auto
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --maxprocesses=4 --dist loadfile --no-loadscope-reorder)
# $(call pytest_phases,MARKER-EXPRESSION): the parallel phase, then the serial tests alone (exit 5: none selected).
# Bytecode caches are written (into .venv and the checkout) even where $$PYTHONDONTWRITEBYTECODE is set: the
# tests start hundreds of Pythons (CLI runs, notebook kernels) that would each compile torch, pandas,
# transformers... again (see `run` below; importing prodrec, torch and sentence-transformers took 42-94 s
# without caches against 21-22 s with them on the loaded 2-core reference box).
define pytest_phases
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest $(XDIST) -m "$(if $(XDIST),not serial)$(if $(and $(XDIST),$(1)), and )$(1)" $(PYTEST_ARGS)
	$(if $(XDIST),PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -m "serial$(if $(1), and $(1))" $(PYTEST_ARGS) || [ $$? -eq 5 ])
endef

.PHONY: install run test test-fast lint bench demo kaggle-stage clean notebook-outputs

# torch must be the CPU build here: a wheel that pip can already reach (a local wheel folder, a mirror) is
# used as it is; otherwise PyTorch's CPU index supplies it (PyPI's default Linux torch wheel brings
# multi-GB CUDA libraries). TORCH_INDEX=... overrides the choice, e.g. a CUDA index on a GPU machine.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# The installer: uv (about 20 s here where pip takes over 3 min), run with pip's own package sources
# (tools/uv_install.py); pip when uv cannot be installed or fails. INSTALLER=pip always uses pip.
INSTALLER ?= uv
# $(call pip_install,EXTRAS): the venv with prodrec[EXTRAS] editable, torch from the index chosen above.
define pip_install
	$(PYTHON) -m venv $(VENV)
	@probe=$$(mktemp -d); torch_pin=$$(grep -E '^torch==' constraints-cpu.txt); \
	if [ -n "$(TORCH_INDEX)" ]; then index="--extra-index-url $(TORCH_INDEX)"; \
	elif $(PIP) download -q --no-deps --no-index -d $$probe "$$torch_pin" >/dev/null 2>&1; then index=""; \
	  echo "torch: $$torch_pin found without an index (local wheel)"; \
	else index="--extra-index-url $(TORCH_CPU_INDEX)"; echo "torch: $$torch_pin from $(TORCH_CPU_INDEX)"; fi; \
	rm -rf $$probe; \
	if [ "$(INSTALLER)" = uv ] && $(PIP) install -q uv >/dev/null 2>&1 \
	  && $(PY) tools/uv_install.py $$index -c constraints-cpu.txt -e ".[$(1)]"; then \
	  echo "installed with $$($(VENV)/bin/uv --version)"; \
	else \
	  [ "$(INSTALLER)" = uv ] && echo "uv could not install; pip instead"; \
	  $(PIP) install -q --upgrade pip setuptools wheel && \
	  $(PIP) install $$index -c constraints-cpu.txt -e ".[$(1)]"; \
	fi
endef

$(VENV)/.installed: pyproject.toml constraints-cpu.txt setup.py
	$(call pip_install,all)
	touch $@

install: $(VENV)/.installed

# `make run` installs only what the notebooks use (the paper's models, the notebooks, the fast CPU backends, ranx for
# notebook 07's ranking metrics:
# no test tools, no Ray), unless everything is installed already; `make install` / `make test` add the rest.
RUN_EXTRAS ?= image,resnet,text,notebooks,fast,eval
$(VENV)/.installed-run: pyproject.toml constraints-cpu.txt setup.py
	$(call pip_install,$(RUN_EXTRAS))
	touch $@

# Every notebook on the paper's 5,000 products; every model on the fastest exact backend (build_experiment's
# default backend="auto": ONNX Runtime / OpenVINO on a CPU, exported once into the store; torch on a GPU).
# Python's bytecode caches are written into the venv even where $$PYTHONDONTWRITEBYTECODE is set (Docker
# images and CI boxes set it): otherwise each notebook's kernel compiles torch, pandas, transformers... again
# (about 70 s of the run on the 2-core reference box).
run: $(if $(wildcard $(VENV)/.installed),install,$(VENV)/.installed-run)
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/prodrec run-notebooks --out $(OUT) --demo-if-missing \
	  $(if $(DATA),--data $(DATA)) -p n_products $(N)

test: install
	$(VENV)/bin/lint-imports
	$(call pytest_phases,)

test-fast: install
	$(VENV)/bin/lint-imports
	$(call pytest_phases,not slow)

lint: install   # the layers contract (pyproject.toml [tool.importlinter])
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m benchmarks

demo: install
	$(VENV)/bin/prodrec demo-catalog outputs/demo-catalog

kaggle-stage: install   # make kaggle-stage OWNER=your_kaggle_name
	$(VENV)/bin/prodrec kaggle-stage build/kaggle $(if $(OWNER),--owner $(OWNER))

clean:
	rm -rf outputs build test-artifacts .pytest_cache

# Re-execute the committed notebooks in place in the small CI configuration (their stored outputs are what
# nbval compares against). Run after changing a notebook or anything that changes its checked outputs.
notebook-outputs: install
	cd notebooks && PRODREC_DATA=../../shared/data/fashion-sample PRODREC_NB_N_PRODUCTS=200 \
	  PRODREC_NB_MAX_TRAIN=1000 PRODREC_NB_LEARN_EPOCHS=10 \
	  PRODREC_NB_OUT=../outputs/nbval PRODREC_OFFLINE=1 HF_HUB_OFFLINE=1 \
	  ../$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace [0-9][0-9]_*.ipynb
	$(PY) -c "import glob; from prodrec.run.notebooks import tidy_stored; tidy_stored(sorted(glob.glob('notebooks/[0-9][0-9]_*.ipynb')), 'outputs/nbval')"  # as a run cleans them: no bars, repeated warnings or machine paths; no widget state or timestamps
