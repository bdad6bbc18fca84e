# The two commands of the README. Both build the environment first (idempotent, seconds when
# nothing changed; the first run builds Horovod, about 4 minutes on 2 cores, then reuses the cached wheel).
SHELL := /bin/bash
PY := .venv/bin/python
SUBMIT := ./spark-submit.sh
CONF ?= conf/demo.yaml

.PHONY: setup package-env demo test bench clean

setup:
	bash scripts/setup_env.sh

# The environment as an archive for executors on other hosts (spark-submit.sh ships it to any
# non-local master); see scripts/package_env.sh.
package-env: setup
	bash scripts/package_env.sh

# Generated sample data -> prepare -> train -> evaluate -> score, Spark local mode, lake in ./lake.
demo: setup
	$(SUBMIT) jobs/generate_data.py --conf $(CONF)
	$(SUBMIT) jobs/pipeline.py --conf $(CONF)

test: setup
	$(PY) -m pytest

clean:
	rm -rf lake build .pytest_cache
