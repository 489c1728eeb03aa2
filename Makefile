# Cairn: `make run` builds the hello image and boots it; `make test` runs every test.
# Both install what is missing first (Debian packages via apt-get, Go modules via the proxy).

SHELL      := /bin/bash
GO         ?= go
OS_FILE    ?= os/examples/hello.yaml
OUT        ?= out
NAME       := $(basename $(notdir $(OS_FILE)))
# Debian packages: QEMU and OVMF to boot; apt to fetch the kernel; busybox-static
# for the runtime's test containers; the rest are the reference tools the tests
# check our pure-Go writers against.
DEB_PKGS   := qemu-system-x86 qemu-utils ovmf apt gdisk dosfstools mtools e2fsprogs \
              erofs-utils cryptsetup-bin cpio zstd kmod binutils git ca-certificates \
              busybox-static
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
GOFLAGS_BUILD := -trimpath -buildvcs=false
TEST_TIMEOUT ?= 40m

.PHONY: all deps build image run test unit qemu-test lint fmt bench clean

all: build

# deps installs only the Debian packages that are missing (idempotent) and
# downloads the Go modules.
deps:
	@missing=$$(for p in $(DEB_PKGS); do \
	    dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing $$missing"; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# apt-get download (the kernel) needs package lists; some images ship none.
	@[ -n "$$(ls /var/lib/apt/lists/ 2>/dev/null | grep _Packages)" ] || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get update -qq; }
	@$(GO) mod download

build: bin/cairn bin/cairn-init

bin/cairn: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/cairn

# The guest binary is static and reproducible: no cgo, no build id, no paths.
bin/cairn-init: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w -buildid=' -o $@ ./cmd/cairn-init

image: deps build
	bin/cairn build -o $(OUT) $(OS_FILE)

run: image
	bin/cairn run $(OUT)/$(NAME).img

# test = lint + unit tests + QEMU scenarios (qemu-tests/ builds its own images with bin/cairn).
test: deps build lint
	@# Warm the Debian package cache (fetch + extract once) so the test
	@# packages, which run in parallel, do not all race on a cold cache.
	bin/cairn build -o $(OUT) $(OS_FILE)
	CAIRN_BIN=$(CURDIR)/bin/cairn $(GO) test -timeout $(TEST_TIMEOUT) ./...

unit: build
	$(GO) test -short ./...

lint:
	@unformatted=$$(gofmt -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	    if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench: deps build
	$(GO) run ./bench/boot -n 5 -os $(OS_FILE) -out $(OUT)

clean:
	rm -rf bin $(OUT)

FORCE:
