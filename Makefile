PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
HOST ?= 127.0.0.1
BACKEND ?= sqlite:///mlflow.db
ARTIFACTS ?= ./mlartifacts

.PHONY: install test ui server serve-model demo bench clean

install:  ## create .venv and install ssgan with its dev, postgres and ray extras at the tested versions
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,postgres,ray]'

test:  ## the import layers (import-linter, pyproject.toml), then the test suite (CPU)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

server:  ## a shared MLflow tracking server: runs in BACKEND, artifacts uploaded through the server into ARTIFACTS
	$(BIN)/mlflow server --backend-store-uri $(BACKEND) --artifacts-destination $(ARTIFACTS) --host $(HOST) --port $(PORT)

serve-model:  ## serve MODEL (models:/NAME@ALIAS, runs:/ID/model or a folder) over HTTP on PORT, from the local store
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/mlflow models serve -m $(MODEL) --env-manager local --host $(HOST) --port $(PORT)

demo:  ## the main job: ssgan and the supervised baseline on digits with 20 labels, the same split; prints the gain
	$(BIN)/ssgan train -c configs/digits-20.yaml --out runs/digits-20-ssgan
	$(BIN)/ssgan train -c configs/digits-20.yaml --mode supervised --out runs/digits-20-supervised
	$(BIN)/python -m ssgan.experiments.gain runs/digits-20-ssgan/summary.json runs/digits-20-supervised/summary.json

ui:  ## open the MLflow UI on the local store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port $(PORT)

bench:  ## the issue-2 benchmark (digits-20 x 5 seeds, MNIST-100 x 3 epochs, both modes)
	$(BIN)/python bench/modes.py --out bench/results

clean:
	rm -rf runs mlruns mlartifacts mlflow.db .pytest_cache
