# d2lcnn: `make book` builds the site, `make test` runs every test. Both set up what they need first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA ?= ../shared/data
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: setup system-deps data book test lint notebooks classroom bench bench-quick clean

setup: $(VENV)/.installed

# The environment takes about 7 GB (PyTorch with its CUDA libraries): say so before pip runs out of disk.
NEEDED_KB := 8000000
$(VENV)/.installed: requirements.txt bench/requirements.txt bench/requirements-d2l.txt pyproject.toml
	@free=$$(df -Pk . | awk 'NR == 2 {print $$4}'); if [ "$$free" -lt $(NEEDED_KB) ]; then \
		echo "setup: $$((free / 1000000)) GB free on this disk; $(VENV) needs about 8 GB (PyTorch). Free some space and run make again." >&2; \
		exit 2; fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r bench/requirements.txt
	$(PY) -m pip install --quiet --no-deps -r bench/requirements-d2l.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

# Debian packages: the official Fashion-MNIST files and Chromium for the browser test (root only).
system-deps:
	@bash scripts/system-deps.sh

# Offline data: link the shared .npz files and unpack Fashion-MNIST into the d2lcnn data root.
data: setup system-deps
	$(PY) -m d2lcnn data import --if-exists $(SHARED_DATA) $(FASHION_MNIST)
	$(PY) -m d2lcnn data list

book: setup
	$(VENV)/bin/jupyter-book build . -W --keep-going

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Unit tests, the committed chapters, nbval (every chapter re-run in the smoke profile, deterministic
# outputs compared with the stored ones) and the site in headless Chromium.
test: setup data lint
	D2LCNN_PROFILE=smoke D2LCNN_PROGRESS=0 MPLBACKEND=Agg $(PY) -m pytest tests \
		--nbval notebooks --nbval-sanitize-with notebooks/nbval_sanitize.cfg

# Re-execute every chapter in place in the cpu profile (what the site shows); needs `make data`.
notebooks: setup
	$(PY) scripts/execute_notebooks.py

# The classroom edition (otter-grader): for each chapter, the student notebook (solutions removed, answer
# cells blank) and the autograder zip that grades it, in _build/classroom/<chapter>/.
classroom: setup
	$(PY) -m d2lcnn classroom notebooks/[0-9][0-9]_*.ipynb --out _build/classroom --overwrite

# Speed: the d2l package's train_ch6 against d2lcnn.fit, side by side, and the fast CIFAR-10 recipes
# (full mode: about 35 minutes on a quiet machine).
bench: setup
	$(PY) bench/speed.py

bench-quick: setup
	$(PY) bench/speed.py --quick --out _build/speed-quick.md

clean:
	rm -rf _build .pytest_cache
