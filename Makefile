# Cairn: `make run` builds the web example and boots it (its page on
# http://127.0.0.1:8080/); `make test` runs every test.
# Both install what is missing first (Debian packages via apt-get, Go modules via the proxy).

SHELL      := /bin/bash
GO         ?= go
OS_FILE    ?= os/examples/web.yaml
# Host port forwarded to the guest's 8080 by `make run`.
RUN_PORT   ?= 8080
OUT        ?= out
NAME       := $(basename $(notdir $(OS_FILE)))
# Debian packages: QEMU and OVMF to boot; apt to fetch the kernel; busybox-static
# for the runtime's test containers; etcd-server for the update server's etcd
# store tests; dnsmasq-base as the DHCP server in the network tests; the rest are the reference tools the tests
# check our pure-Go writers against.
DEB_PKGS   := qemu-system-x86 qemu-utils ovmf apt gdisk dosfstools mtools e2fsprogs \
              erofs-utils cryptsetup-bin cpio zstd kmod binutils git ca-certificates \
              busybox-static etcd-server dnsmasq-base
# The benchmarks' peers: Debian's runc and crun, GNU time for peak RSS, and
# debootstrap for the systemd + podman peer image (bench/peer).
BENCH_PKGS := runc crun time debootstrap
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.7.0
GOFLAGS_BUILD := -trimpath -buildvcs=false
TEST_TIMEOUT ?= 40m

.PHONY: all deps bench-deps build image run test unit qemu-test lint fmt bench bench-boot bench-side bench-peer bench-runtime clean

all: build

# apt-install installs only the Debian packages of $(1) that are missing
# (idempotent).
define apt-install
	@missing=$$(for p in $(1); do \
	    dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "deps: installing $$missing"; \
	    SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

# deps installs the missing Debian packages and downloads the Go modules.
deps:
	$(call apt-install,$(DEB_PKGS))
	@# apt-get download (the kernel) needs package lists; some images ship none.
	@[ -n "$$(ls /var/lib/apt/lists/ 2>/dev/null | grep _Packages)" ] || { SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO apt-get update -qq; }
	@$(GO) mod download

# bench-deps adds the peers the benchmarks compare against.
bench-deps: deps
	$(call apt-install,$(BENCH_PKGS))

build: bin/cairn bin/cairn-init bin/cairn-init-pid1 bin/cairn-init-early

bin/cairn: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/cairn

# The guest binaries are static and reproducible: no cgo, no build id, no
# paths. cairn-init is the full build (both stages of PID 1 plus the
# container runtime and its tools); cairn-init-pid1 (/sbin/init) has only
# the two stages and cairn-init-early (/init in the initramfs) only the
# early stage, because size and package initialisation are boot time (see
# cmd/cairn-init/main.go).
bin/cairn-init: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags='-s -w -buildid=' -o $@ ./cmd/cairn-init

bin/cairn-init-pid1: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags cairn_pid1 -ldflags='-s -w -buildid=' -o $@ ./cmd/cairn-init

bin/cairn-init-early: FORCE
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -tags cairn_early -ldflags='-s -w -buildid=' -o $@ ./cmd/cairn-init

image: deps build
	bin/cairn build -o $(OUT) $(OS_FILE)

run: image
	bin/cairn run --port $(RUN_PORT):8080 $(OUT)/$(NAME).img

# test = lint + unit tests + QEMU scenarios (qemu-tests/ builds its own images with bin/cairn).
test: deps build lint
	@# Warm the Debian package cache (fetch + extract once) so the test
	@# packages, which run in parallel, do not all race on a cold cache.
	bin/cairn build -o $(OUT) $(OS_FILE)
	CAIRN_BIN=$(CURDIR)/bin/cairn $(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

unit: build
	$(GO) test -short ./...

lint:
	@unformatted=$$(gofmt -l $$($(GO) list -f '{{.Dir}}' ./...)); \
	    if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# bench = Cairn's own boot timings (bench/boot), then Cairn side by side with
# a Debian 12 + systemd + podman peer (bench/side; it builds the peer once,
# cached under ~/.cache/cairn/peer, and runs the runtime and update
# benchmarks too). Results go to bench/results/ and docs/performance.md.
BENCH_N ?= 5
BENCH_BOOT_OS ?= os/examples/hello.yaml
BENCH_WEB_OS ?= os/examples/web.yaml
bench: bench-boot bench-side

bench-boot: bench-deps build
	@mkdir -p bench/results
	$(GO) run ./bench/boot -n $(BENCH_N) -os $(BENCH_BOOT_OS) -out $(OUT) -json bench/results/boot-$$(date -u +%F).json

# The peer image alone (debootstrap, needs root; minutes the first time).
bench-peer: bench-deps build
	@mkdir -p $(OUT)
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/bench-side ./bench/side
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; $$SUDO $(OUT)/bench-side -peer-only

bench-side: bench-deps build
	@mkdir -p $(OUT)
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/bench-side ./bench/side
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/bench-runtime ./bench/runtime
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/bench-update ./bench/update
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO $(OUT)/bench-side -n $(BENCH_N) -os $(BENCH_WEB_OS) -out $(OUT)/bench-side.d \
	        -runtime-bin $(OUT)/bench-runtime -runtime-n $(BENCH_RUNTIME_N) -update $(OUT)/bench-update

# Container start→exit of Cairn's runtime against runc and crun (needs root:
# namespaces, mounts, cgroups). Run from the repository root so the bench
# finds bin/cairn-init for the cairn-runtime CLI variant.
BENCH_RUNTIME_N ?= 200
bench-runtime: bench-deps build
	@mkdir -p $(OUT)
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/bench-runtime ./bench/runtime
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO $(OUT)/bench-runtime -n $(BENCH_RUNTIME_N) -warmup 10 -json $(OUT)/bench-runtime.json

clean:
	rm -rf bin $(OUT)

FORCE:
