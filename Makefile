# The README's commands. CMake does the building; this file names the steps and their order.
RELEASE_DIR := build/release
TEST_DIR    := build/test
FUZZ_DIR    := build/fuzz
FUZZ_SECONDS ?= 60
PACKAGE_DIR := build/package
PREFIX      ?= /usr/local

.PHONY: all deps build run demo bench test test-deps fuzz format check-format clean install \
	package

all: build

# Debian packages (apt-get as root, or the exact command to run otherwise).
deps:
	@scripts/install-deps.sh

build: deps
	cmake -S . -B $(RELEASE_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCALLHOOK_TESTS=OFF
	cmake --build $(RELEASE_DIR)

# The release build installed under PREFIX (default /usr/local), into DESTDIR when given:
# configured with the prefix, as the systemd units and callhook.pc name paths under it.
install: build
	cmake -S . -B $(RELEASE_DIR) -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	cmake --build $(RELEASE_DIR)
	DESTDIR="$(DESTDIR)" cmake --install $(RELEASE_DIR)

# The Debian packages (debian/, debhelper) in build/package: callhook, libcallhook0,
# libcallhook-dev. Their build dependencies: sudo apt-get build-dep ./ (docs/INSTALL.md).
package:
	scripts/package.sh $(PACKAGE_DIR)

# The main job: the sender on the embedded SQLite default (var/callhook.db), in the foreground.
run: build
	@echo "callhook serve on http://127.0.0.1:8080 (Ctrl-C stops it); the API is in docs/API.md"
	$(RELEASE_DIR)/callhook serve

# serve, a local receiver and simulate together: calls flowing, on 127.0.0.1 only.
demo: build
	scripts/demo.sh $(RELEASE_DIR)/callhook

# The speed goals, measured against this machine's own limits (docs/BENCHMARKS.md).
bench: deps
	bench/run

# The npm packages the interop tests compare against, and puppeteer-core for the browser test
# (it drives Debian's chromium: nothing downloaded), pinned by the committed lockfiles.
test-deps: deps
	npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
	PUPPETEER_SKIP_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

# The whole suite on a sanitizer build, warnings as errors.
test: test-deps
	cmake -S . -B $(TEST_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCALLHOOK_SANITIZE=ON \
	    -DCALLHOOK_WERROR=ON
	cmake --build $(TEST_DIR)
	ctest --test-dir $(TEST_DIR) --output-on-failure -j2

# libFuzzer, with clang: FUZZ_SECONDS per target, on a copy of the corpus in git.
fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCALLHOOK_FUZZ=ON \
	    -DCALLHOOK_TESTS=ON
	cmake --build $(FUZZ_DIR)
	scripts/fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check-format:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
