# make demo  - install into .venv and run the full pipeline on sample_data/
# make test  - install into .venv with the dev extra and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision are installed explicitly first: these versions are on the build machines'
# disk, and naming them avoids pulling a multi-GB CUDA build of a newer release.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= demo_out
SHAPES ?= build/shapes

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

# coloured-shapes corpus -> features -> train the fusion Transformer -> eval, on CPU
# (docs/training.md has the numbers; ~25 min on 2 busy cores, mostly feature extraction)
train-demo: install-dev
	$(PY) scripts/make_shapes_corpus.py $(SHAPES)/videos --count 160 --seed 0
	HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(VENV)/bin/videobert run $(SHAPES)/videos -o $(SHAPES)/features --fps 5 --device cpu
	$(VENV)/bin/videobert train $(SHAPES)/features -o $(SHAPES)/fusion.safetensors --epochs 40 --batch-size 32 --d-model 128 --lr 5e-4 --device cpu
	$(VENV)/bin/videobert eval $(SHAPES)/features --fusion-weights $(SHAPES)/fusion.safetensors --json $(SHAPES)/eval.json
	$(PY) scripts/make_shapes_corpus.py $(SHAPES)/test_videos --count 64 --seed 1
	HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(VENV)/bin/videobert run $(SHAPES)/test_videos -o $(SHAPES)/test_features --fps 5 --device cpu
	$(VENV)/bin/videobert eval $(SHAPES)/test_features --all --cca-fit $(SHAPES)/features --fusion-weights $(SHAPES)/fusion.safetensors --json $(SHAPES)/test_eval.json

sample-data: install-dev
	$(PY) scripts/make_sample_data.py sample_data

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
