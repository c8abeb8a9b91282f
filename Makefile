# make demo  - install into .venv and run the full pipeline on sample_data/
# make test  - install into .venv with the dev extra and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed explicitly first: these versions are on the build machines'
# disk, and naming them avoids pulling a multi-GB CUDA build of a newer release.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out

.PHONY: install install-dev demo test bench train-demo clean sample-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(VENV)/bin/videobert run sample_data -o $(DEMO_OUT)
	$(VENV)/bin/videobert inspect $(DEMO_OUT)/kitchen.h5

test: install-dev
	HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(PY) -m pytest -q

bench: install-dev
	HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(PY) -m bench.run

sample-data: install-dev
	$(PY) scripts/make_sample_data.py sample_data

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
