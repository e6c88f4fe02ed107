# The two commands: `make demo` and `make test`. Everything they need is installed here.
.PHONY: demo demo-check test test-deps check unit integration venv postgres clean kube kube-or-skip ui ui-test

VENV := .venv/bin
export EDGEFLEET_TEST_POSTGRES ?= postgresql://postgres@127.0.0.1:55432/edgefleet_test

venv:
	@tools/venv.sh

# The hub's web UI (ui/), built with esbuild from npm packages into src/edgefleet/hub/ui_assets.
ui:
	@tools/ui-build.sh

# The UI's pure modules under node's test runner (the browser tests are in tests/e2e/test_ui.py).
ui-test: ui
	node --test ui/test/

demo: venv ui
	$(VENV)/edgefleet demo --workdir .cache/demo $(DEMO_ARGS)

demo-check: venv ui
	$(VENV)/edgefleet demo --workdir .cache/demo --check

postgres:
	@tools/postgres.sh start >/dev/null

check: venv
	$(VENV)/ruff check src tests bench
	$(VENV)/ruff format --check src tests bench
	$(VENV)/mypy
	$(VENV)/lint-imports

test-deps:
	@tools/test-deps.sh
	@tools/browser.sh

# The Kubernetes control plane that tests/integration/kube runs on loopback (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok), built from the pins in tools/kube/go.mod: minutes
# the first time, then cached in .cache/kube. `make test` goes on without it; those tests skip.
kube:
	@tools/kube-build.sh

kube-or-skip:
	-@tools/kube-build.sh || echo "kube: no test control plane; the tests that need it will be skipped"

test: venv ui postgres test-deps kube-or-skip check ui-test
	$(VENV)/pytest -q --durations=25 $(PYTEST_ARGS)

unit: venv
	$(VENV)/pytest -q tests/unit

clean:
	-tools/postgres.sh stop
	rm -rf .venv .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis ui/node_modules src/edgefleet/hub/ui_assets
