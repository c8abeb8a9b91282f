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
TIME_DIR ?= build/time
TIME_SEEDS ?= 0 1 2
TIME_COUNT ?= 432
# the time corpus' training recipe (docs/training.md, "A corpus that needs time"): contrastive
# and time-contrastive objectives, neighbour-difference input, a finer time embedding
TIME_TRAIN ?= --epochs 40 --batch-size 32 --d-model 128 --lr 5e-4 --loss nce=1,tnce=1 --video-delta --time-scale 0.25
VB = HF_HUB_OFFLINE=1 VIDEOBERT_OFFLINE=1 $(VENV)/bin/videobert

.PHONY: install install-dev demo test bench train-demo train-demo-time train-time-seeds clean sample-data

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

# time corpus (motion, speed, order minimal pairs) -> features -> 3 training seeds -> eval on a
# fresh test corpus, mean and spread, training curves; 22 min on 2 busy cores (docs/training.md)
train-demo-time: install-dev
	$(PY) scripts/make_time_corpus.py $(TIME_DIR)/videos --count $(TIME_COUNT) --seed 0
	$(VB) run $(TIME_DIR)/videos -o $(TIME_DIR)/features --fps 4 --device cpu
	$(PY) scripts/make_time_corpus.py $(TIME_DIR)/test_videos --count 72 --seed 1
	$(VB) run $(TIME_DIR)/test_videos -o $(TIME_DIR)/test_features --fps 4 --device cpu
	$(MAKE) train-time-seeds

# the seeds on features already extracted; --threads 1: a model this small runs many times
# faster on one thread than on a pool competing for 2 busy cores
train-time-seeds:
	set -e; for seed in $(TIME_SEEDS); do \
	  $(VB) --threads 1 train $(TIME_DIR)/features -o $(TIME_DIR)/seed$$seed/fusion.safetensors $(TIME_TRAIN) --seed $$seed --device cpu; \
	  $(VB) --threads 1 eval $(TIME_DIR)/features --fusion-weights $(TIME_DIR)/seed$$seed/fusion.safetensors \
	    --contrasts $(TIME_DIR)/videos/contrasts.json --json $(TIME_DIR)/seed$$seed/eval.json; \
	  $(VB) --threads 1 eval $(TIME_DIR)/test_features --all --cca-fit $(TIME_DIR)/features \
	    --fusion-weights $(TIME_DIR)/seed$$seed/fusion.safetensors \
	    --contrasts $(TIME_DIR)/test_videos/contrasts.json --json $(TIME_DIR)/seed$$seed/test_eval.json; \
	done
	$(PY) scripts/aggregate_evals.py $(foreach s,$(TIME_SEEDS),$(TIME_DIR)/seed$(s)/eval.json) -o $(TIME_DIR)/val_summary.json
	$(PY) scripts/aggregate_evals.py $(foreach s,$(TIME_SEEDS),$(TIME_DIR)/seed$(s)/test_eval.json) -o $(TIME_DIR)/test_summary.json
	$(PY) scripts/plot_training.py $(foreach s,$(TIME_SEEDS),$(TIME_DIR)/seed$(s)/fusion.safetensors) -o $(TIME_DIR)/training_curves.png

sample-data: install-dev
	$(PY) scripts/make_sample_data.py sample_data

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
