# The two commands of the README's Quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: run test lint system-deps build-deps bench clean test-native-asan

# Under CI the native core must build, warning-free (setup.py reads these).
ifeq ($(CI),true)
export XMLFLOW_NATIVE_WERROR = 1
export XMLFLOW_NATIVE_REQUIRED = 1
endif
NATIVE_SRC = setup.py src/xmlflow/xml/_native.c

run: $(VENV)/.installed
	$(BIN)/python app.py

test: lint system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench processing_steps app.py config.py
	$(BIN)/ruff format --check src tests bench processing_steps app.py config.py
	$(BIN)/mypy

system-deps:
	@bash scripts/system-deps.sh

build-deps:
	@bash scripts/system-deps.sh build

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# system-deps first: pip compiles the native core, which needs gcc and expat.h.
$(VENV)/.installed: pyproject.toml $(NATIVE_SRC) | $(VENV)/bin/python build-deps
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(NATIVE_SRC) | $(VENV)/bin/python system-deps
	$(BIN)/pip install --quiet -e '.[test,redis]'
	touch $(VENV)/.installed $@

bench: $(VENV)/.installed-test
	$(BIN)/python bench/xml_throughput.py

# The native tests once under AddressSanitizer (+UBSan) on the shared corpus, then the
# normal build again. CPython itself is not instrumented: libasan is preloaded. The
# tests that go through job processes are left out: a job's address-space limit
# leaves no room for ASan's shadow memory (the same C code runs in-process here).
test-native-asan: $(VENV)/.installed-test
	XMLFLOW_NATIVE_ASAN=1 XMLFLOW_NATIVE_REQUIRED=1 $(BIN)/pip install --quiet --no-deps -e .
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 XMLFLOW_NATIVE_ASAN=1 \
		$(BIN)/pytest -q -s -p no:cacheprovider -k "not xmlflow_run and not server and not http" \
		tests/test_native.py tests/test_native_corpus.py tests/test_native_fast_paths.py; \
		status=$$?; $(BIN)/pip install --quiet --no-deps -e .; exit $$status

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache build src/xmlflow/xml/*.so
