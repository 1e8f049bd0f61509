# Thin wrapper over meson/ninja. `make test` and `make demo` each install what they need
# (Debian 12 packages) and build first, so either works alone on a fresh machine.
BUILD ?= build
PATH := /usr/local/cuda/bin:$(PATH)
export PATH
DEBIAN_PACKAGES := meson ninja-build pkg-config g++ cmake doctest-dev libhdf5-dev libopenblas-dev libopenblas-openmp-dev \
  liblapacke-dev libdnnl-dev libcli11-dev nlohmann-json3-dev libtomlplusplus-dev libpng-dev libjpeg-dev \
  zlib1g-dev libfmt-dev dataset-fashion-mnist python3-h5py openmpi-bin libopenmpi-dev
MESON_FLAGS ?=

.PHONY: deps build test demo bench compare install clean

deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_FLAGS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

test: build
	$(BUILD)/cpoison-tests

demo: build
	$(BUILD)/cpoison demo

# The library for programs outside the tree (docs/extending.md): headers under
# $(PREFIX)/include/cpoison, libcpoison.a, cpoison.pc (and the cpoison executable).
PREFIX ?= /usr/local
install: build
	meson configure $(BUILD) --prefix=$(abspath $(PREFIX))
	meson install -C $(BUILD)

bench: build
	$(BUILD)/cpoison bench conv
	$(BUILD)/cpoison bench step --model resnet18 --batch 128 --device cpu

# Same-run comparison with PyTorch (Debian's python3-torch, importable by /usr/bin/python3 only):
# the three training-step shapes interleaved, and the CP-S noise step's peak memory
# (tools/compare/torch_step.py; COMPARE_FLAGS e.g. --rounds 7 --what speed).
COMPARE_FLAGS ?=
compare: build
	@$(MAKE) --no-print-directory deps DEBIAN_PACKAGES=python3-torch
	/usr/bin/python3 tools/compare/torch_step.py --cpoison $(BUILD)/cpoison $(COMPARE_FLAGS)

clean:
	rm -rf $(BUILD)
