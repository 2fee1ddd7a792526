# Two entry points for newcomers: `make demo` and `make test`. Both create .venv and install first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	# facenet-pytorch pins an ancient torch/numpy: install it without its dependencies (pip then
	# reports a version conflict for it, which is expected and harmless).
	$(PY) -m pip install --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/faceguard demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
