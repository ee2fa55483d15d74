# govmilter: `make run` and `make test` set up everything they need on a fresh Debian machine.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEBS := $(VENV)/.debs

.PHONY: deps run test unit e2e lint bench bench-memory bench-content soak clean

deps: $(DEBS) $(STAMP)

$(DEBS): lab/install-deps.sh
	bash lab/install-deps.sh
	mkdir -p $(VENV) && touch $@

$(STAMP): pyproject.toml $(DEBS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: deps
	$(BIN)/python lab/stack.py up

test: deps lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

unit: deps
	$(BIN)/python -m pytest -q -m 'not e2e and not slow'

e2e: deps
	$(BIN)/python -m pytest -q -m 'e2e and not slow'

lint: deps
	$(BIN)/ruff check milter tests lab bench packaging
	$(BIN)/mypy

bench: deps
	$(BIN)/python bench/throughput.py

bench-memory: deps
	$(BIN)/python bench/memory.py

# the content check alone with the shipped rules, per message (no daemon; seconds)
bench-content: deps
	$(BIN)/python bench/content_rules.py

soak: deps
	$(BIN)/python -m pytest -q -m slow -p no:cacheprovider

# the property tests, random (not derandomized as in make test), 20x the examples each asks for;
# a failure prints the @reproduce_failure blob and is kept in .hypothesis/ (tests/conftest.py)
.PHONY: fuzz mutation
fuzz: deps
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider -m 'not e2e and not slow' \
		$$(grep -rl --include='test_*.py' -e '@given' tests)

# mutation testing of the safety-critical modules, in private copies of the tree (docs/mutation.md);
# MUTATION_MODULES="adapter size" runs only those, MUTATION_JOBS=N runs N copies side by side
mutation: deps
	bash tests/mutation/run.sh $(MUTATION_MODULES)

clean:
	rm -rf .stack .pytest_cache .mypy_cache .ruff_cache

# the Debian package (packaging/build-deb.sh; docs/install-package.md). DEB_VERSION_SUFFIX=+site2
# makes a rebuild that sorts after the last one. deb-test builds, installs, runs, upgrades, purges.
.PHONY: deb deb-test

deb: $(DEBS)
	bash packaging/build-deb.sh

deb-test: deps
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e/test_package_e2e.py
