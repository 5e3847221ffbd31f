# labmail — the two commands of the README, and a few helpers.
#   make lab    set everything up, start the embedded lab and JupyterLab on notebooks/ (in French, the student's
#               view: jupyter/etudiant; `labmail` on the PATH of JupyterLab's terminals)
#   make test   set everything up and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8888
JUPYTER_FLAGS := --no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) --ServerApp.root_dir=notebooks
ifeq ($(shell id -u),0)
JUPYTER_FLAGS += --allow-root
endif

.PHONY: lab test install install-test sysdeps stop status bench gallery clean student fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml jupyter/overrides.json | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp jupyter/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-grading: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[grading]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

sysdeps:
	bash scripts/system-deps.sh

lab: install
	$(BIN)/labmail lab start
	@echo "JupyterLab démarre : ouvrez l'adresse http://127.0.0.1:$(PORT)/lab?token=… affichée ci-dessous (Ctrl-C pour arrêter JupyterLab ; 'make stop' arrête le lab)."
	JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter/etudiant" PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab $(JUPYTER_FLAGS)

# Independent implementations the tests compare labmail with (Node: mailauth, pinned in tests/js/package-lock.json).
tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund --loglevel=error; \
	else echo "note: npm absent: the differential DMARC test against mailauth is skipped"; fi

# Two workers (pytest-xdist; each with its own session lab and its kernels on a loopback address of their own, see
# tests/kernels.py; a module's tests stay together): 247 s instead of 430 s in one process on 2 cores.
# make test PYTEST_WORKERS= runs everything in one process; PYTEST_ARGS="-k …" picks tests.
PYTEST_ARGS ?=
PYTEST_WORKERS ?= -n 2 --dist loadscope --no-loadscope-reorder

# The JupyterHub test's environment (tests/test_jupyterhub.py): made from the system's python3, which the students'
# accounts can run (the hub runs each server as its student; an interpreter under /root is out of their reach).
HUB_VENV := .venv-hub
$(HUB_VENV)/.installed: pyproject.toml jupyter/overrides.json
	@if /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null; then \
	  /usr/bin/python3 -m venv $(HUB_VENV) && $(HUB_VENV)/bin/python -m pip install -q --upgrade pip && \
	  $(HUB_VENV)/bin/python -m pip install -q -e '.[grading]' 'jupyterhub>=5,<7' && \
	  mkdir -p $(HUB_VENV)/share/jupyter/lab/settings && \
	  cp jupyter/overrides.json $(HUB_VENV)/share/jupyter/lab/settings/overrides.json && touch $@; \
	else echo "note: no system python3 with venv: the JupyterHub test is skipped"; fi

test: install-test sysdeps
	@$(MAKE) --no-print-directory tests/js/node_modules/.package-lock.json $(HUB_VENV)/.installed
	$(BIN)/python -m ruff check labmail tests scripts bench
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest $(PYTEST_WORKERS) --durations=15 $(PYTEST_ARGS)

# The long fuzz run (outside make test): every fuzz test with 40× its examples — over 100,000 cases in all.
FUZZ_SCALE ?= 40
fuzz: install-test
	LABMAIL_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/python -m pytest -m fuzz -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install-test
	bash scripts/system-deps.sh bench
	$(BIN)/python bench/run.py

gallery: install-test
	$(BIN)/python scripts/gallery.py docs/gallery
	$(BIN)/python scripts/real_thunderbird.py build/thunderbird && cp build/thunderbird/thunderbird.png docs/gallery/

# Student versions of every step (nbgrader generate_assignment: solutions and hidden tests removed) into release/.
# nbgrader runs alembic: the venv's bin/ goes first on PATH.
STEPS := $(filter-out 99-formateur,$(notdir $(wildcard notebooks/[0-9]*)))
student: $(VENV)/.installed-grading
	@for step in $(STEPS); do \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nbgrader generate_assignment "$$step" --force --log-level=WARN || exit 1; \
	done
	@echo "Versions étudiantes : release/<étape>/<étape>.ipynb ($(words $(STEPS)) étapes)."

status: install
	$(BIN)/labmail lab status

stop: install
	$(BIN)/labmail lab stop

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis release gradebook.db
