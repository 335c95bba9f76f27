# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
# `make demo` needs the hub extra only; `make test`/`lint`/`bench` add the dev tools and the
# TFLite export toolchain (a second stamp on top of the first).
STAMP := $(VENV)/.installed-$(HASH)
TEST_STAMP := $(VENV)/.installed-test-$(HASH)
# TFLite export (litert-torch) and exactly what its export path imports, pinned to a tested set.
LITERT_TORCH := litert-torch==0.10.0 litert-converter==0.5.0 ai-edge-quantizer==0.10.0 \
	ai-edge-litert==2.3.0 torchao==0.18.0 jax==0.10.2 jaxlib==0.10.2 opt-einsum==3.4.0 \
	absl-py==2.5.1 immutabledict==4.2.1 tabulate==0.10.0
# Installs go through uv when it installs (several times faster than pip), else pip: .ci/install.py.
INSTALL := $(PY) .ci/install.py

.PHONY: install install-test sysdeps labelstudio demo test lint bench fuzz fuzz-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(INSTALL) -e '.[hub]'
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(INSTALL) -e '.[dev]'
	@# --no-deps: litert-converter needs xdsl, which pins typing-extensions<4.13 and would downgrade pydantic.
	$(INSTALL) --no-deps $(LITERT_TORCH)
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: install
	$(VENV)/bin/leanloop demo $(DEMO_ARGS)

# Debian packages for the real servers the tests start (PostgreSQL, ffmpeg, ...); not for demo.
sysdeps:
	@bash .ci/sysdeps

# Label Studio in a venv of its own, for the round trip with a real Label Studio server.
labelstudio:
	@bash .ci/labelstudio

# pytest-xdist: TEST_JOBS workers (most tests wait on processes and servers, so 2 nearly halve
# the time on 2 cores); the grouping is in tests/conftest.py. TEST_JOBS=0 runs in one process.
TEST_JOBS ?= 2
test: install-test sysdeps labelstudio fuzz-deps
	@# A short coverage-guided pass over every parser first (make fuzz runs them for longer), so
	@# that pytest's summary is the run's closing line.
	@$(PY) -c "import atheris" 2>/dev/null && $(PY) -m fuzz --seconds 1 --jobs 4 \
		|| echo "note: atheris not installed, coverage-guided fuzzing skipped"
	$(PY) -m pytest -q -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

# Coverage-guided fuzzing (atheris/libFuzzer) of every parser of outside bytes: each runs until
# it has tried FUZZ_INPUTS inputs, at most FUZZ_SECONDS (exit 1 on a crash, or a parser short of
# its inputs within the time), FUZZ_JOBS at once; a table per parser at the end.
FUZZ_INPUTS ?= 1000000
FUZZ_SECONDS ?= 900
FUZZ_JOBS ?= 2
fuzz-deps: install-test
	@$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install -q atheris \
		|| echo "note: atheris does not install here"

fuzz: fuzz-deps
	$(PY) -m fuzz --inputs $(FUZZ_INPUTS) --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy runtime hub trainer bsdiff leanloop bench hil fuzz

bench: install-test
	@# Delta anchors that come as CLI tools (skipped with a note when they cannot be installed).
	@command -v xdelta3 >/dev/null && command -v zstd >/dev/null || \
		(apt-get install -y -q xdelta3 zstd >/dev/null 2>&1 || echo "note: xdelta3/zstd CLI not installed")
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
