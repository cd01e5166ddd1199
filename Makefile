# Every target creates .venv and installs the project into it when needed.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lab bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,batch]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (runbook)" >/dev/null
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/runbook demo

# nbval runs each notebook alone, as an engineer would; their run folders go to a
# throw-away directory so that a test run leaves nothing under reports/.
test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	nbval_reports=$$(mktemp -d) && RUNBOOK_REPORTS_DIR=$$nbval_reports \
		$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks; \
		status=$$?; rm -rf "$$nbval_reports"; exit $$status

# JUPYTER_PATH first: the venv's "python3" kernel (installed with the stamp) wins over
# any user-level kernel of that name, so the notebooks run with this project's Python.
# Jupyter refuses root unless told; build machines and containers often are root.
lab: $(STAMP)
	JUPYTER_PATH="$(CURDIR)/$(VENV)/share/jupyter" $(BIN)/jupyter lab \
		--ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)/notebooks" \
		$(if $(filter 0,$(shell id -u)),--allow-root)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) reports .pytest_cache
