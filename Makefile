VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo demo-aws test soak lint bench bench-r clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

demo-aws: $(STAMP)
	$(PY) examples/demo_aws.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples conftest.py
	$(VENV)/bin/ruff format --check src tests benchmarks examples conftest.py
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

soak: $(STAMP)
	$(VENV)/bin/pytest -q -m soak

# Each Python peer in an environment of its own (batchcrew is not installed there), from
# benchmarks/systems/<peer>.txt; the R peers' packages only where R is installed.
PEERS := $(patsubst benchmarks/systems/%.txt,.bench/venvs/%/.installed,\
	$(wildcard benchmarks/systems/*.txt))
R_LIBRARY := .bench/R

.bench/venvs/%/.installed: benchmarks/systems/%.txt
	rm -rf .bench/venvs/$*
	python3 -m venv .bench/venvs/$*
	.bench/venvs/$*/bin/python -m pip install --quiet --upgrade pip
	.bench/venvs/$*/bin/python -m pip install --quiet -r $<
	touch $@

bench-r:
	@if command -v Rscript >/dev/null; then \
		mkdir -p $(R_LIBRARY) && \
		Rscript -e 'lib <- "$(R_LIBRARY)"; .libPaths(c(lib, .libPaths()))' \
			-e 'need <- setdiff(c("mirai", "crew"), rownames(installed.packages()))' \
			-e 'if (length(need)) install.packages(need, lib = lib, repos = "https://cloud.r-project.org")'; \
	else echo "Rscript not found: the R peers (mirai, crew) will be skipped"; fi

bench: $(STAMP) $(PEERS) bench-r
	$(PY) benchmarks/suite.py $(BENCH)

clean:
	rm -rf $(VENV) .bench build *.egg-info src/*.egg-info
