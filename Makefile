VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CPYTHON_TESTS := $(VENV)/cpython-tests/.fetched

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

test: lint $(CPYTHON_TESTS)
	$(VENV)/bin/pytest -q

# CPython's own concurrent.futures tests, which the executor is run against: Debian's
# libpython3.X-testsuite, unpacked into the virtual environment (apt-get download needs no
# root). Where apt-get cannot fetch it, those tests are skipped and say why.
$(CPYTHON_TESTS): $(STAMP)
	rm -rf $(VENV)/cpython-tests && mkdir -p $(VENV)/cpython-tests
	cd $(VENV)/cpython-tests && \
	version=$$($(abspath $(PY)) -c 'import sys; print("%d.%d" % sys.version_info[:2])') && \
	{ { apt-get download libpython$$version-testsuite && \
		dpkg-deb -x libpython$$version-testsuite_*.deb . && rm -f ./*.deb; } >fetch.log 2>&1 || \
	echo "libpython$$version-testsuite could not be fetched: CPython's executor tests will" \
		"be skipped (see $(VENV)/cpython-tests/fetch.log)"; }
	touch $@

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
