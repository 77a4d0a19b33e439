PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 5000
HOST ?= 127.0.0.1
BACKEND ?= sqlite:///mlflow.db
ARTIFACTS ?= ./mlartifacts
AUTH ?=
MODEL_HOST ?= 127.0.0.1
ALLOWED_HOSTS ?=

.PHONY: install test ui server serve-model demo bench clean

install:  ## create .venv and install ssgan with its dev, postgres and ray extras at the tested versions
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,postgres,ray]'

test:  ## the import layers (import-linter, pyproject.toml), then the test suite (CPU)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -q

server:  ## a team's MLflow tracking server on HOST:PORT: runs in BACKEND, artifacts in ARTIFACTS; logins on unless HOST is loopback (AUTH=1 / AUTH=0 to choose; needs SSGAN_SERVER_ADMIN_PASSWORD)
	$(BIN)/ssgan server --backend $(BACKEND) --artifacts $(ARTIFACTS) --host $(HOST) --port $(PORT) \
	  $(if $(filter 1 yes true on,$(AUTH)),--auth,$(if $(filter 0 no false off,$(AUTH)),--no-auth,)) \
	  $(if $(ALLOWED_HOSTS),--allowed-hosts $(ALLOWED_HOSTS),)

serve-model:  ## serve MODEL (models:/NAME@ALIAS, runs:/ID/model or a folder) over HTTP on MODEL_HOST:PORT (loopback; no logins), from the local store
	PATH=$(abspath $(BIN)):$$PATH MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} \
	  $(BIN)/mlflow models serve -m $(MODEL) --env-manager local --host $(MODEL_HOST) --port $(PORT)

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
