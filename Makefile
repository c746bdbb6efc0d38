# noether-mirror. `make demo` runs the main job; `make test` runs every test.
GO        ?= go
PKGS      := ./...
FUZZTIME  ?= 10s
# Go minimizes every new interesting input for up to 60 s by default; with
# this module's large instrumented binary and inputs of several KB (bundles)
# that left the fuzzer minimizing instead of fuzzing (17 executions in 30 s
# for FuzzReadBundle; 11,000 with 2 s).
FUZZMINIMIZE ?= 2s
BENCHTIME ?= 1x
BIN       := bin/mirror

.PHONY: all build cross test test-deps bench bench-read fuzz lint fmt-check vet staticcheck check demo clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/mirror

# Other platforms the module must build on, each built and vetted (vet
# type-checks the tests too, so their test binaries compile); their tests
# run only on such a machine. On Windows a mirror is read, not written
# (no flock: mirror/lock_other.go); darwin stands for the other Unixes.
CROSS_GOOS ?= windows darwin

cross:
	@set -e; for os in $(CROSS_GOOS); do \
	  echo "GOOS=$$os $(GO) build $(PKGS) && GOOS=$$os $(GO) vet $(PKGS)"; \
	  GOOS=$$os $(GO) build $(PKGS); \
	  GOOS=$$os $(GO) vet $(PKGS); \
	done

# The cross-builds, then every test, with the race detector. The change
# feed's test through docs/nginx.conf needs nginx: installed here from
# Debian's packages when missing (as root, or with sudo), and required.
test: cross test-deps
	MIRROR_REQUIRE_NGINX=1 $(GO) test -race -count=1 $(PKGS)

test-deps:
	@if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  echo "installing nginx-light for TestFeedThroughNginx"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get install -y --no-install-recommends nginx-light >/dev/null 2>&1 || \
	  { $$SUDO apt-get update >/dev/null && $$SUDO apt-get install -y --no-install-recommends nginx-light >/dev/null; } || \
	  { echo "could not install nginx: install it (apt-get install nginx-light), then run make test again"; exit 1; }; \
	fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) $(PKGS)

# Issue 3's point reads at 1k/10k/100k stages, COUNT runs each, summarised
# by benchstat (medians with confidence intervals; the first run builds the
# benchmark mirrors, a few minutes). Compare FindRawByName and
# GetRawBySignature against GetRaw/n=N/mirror (memory: MemoryStore).
COUNT ?= 10
bench-read:
	$(GO) test ./mirror -run '^$$' -bench 'BenchmarkGetRaw$$|BenchmarkFindRawByName|BenchmarkGetRawBySignature' \
	  -benchmem -count $(COUNT) -timeout 60m | tee bench-read.txt
	$(GO) tool benchstat bench-read.txt

# A short run of every fuzz target (go test -fuzz takes one target at a time).
# Go 1.26's fuzz coordinator can end a duration-bounded run with a bare
# "context deadline exceeded" and no failing input (golang/go#75804, fixed
# in Go 1.27): such a run counts as a pass only when no new failing input
# was written to testdata/fuzz/<target>/. Any real finding still fails.
fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; \
	    before=$$(ls "$$dir/testdata/fuzz/$$f" 2>/dev/null | sort); \
	    out=$$(mktemp); \
	    if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg >"$$out" 2>&1; then cat "$$out"; rm -f "$$out"; continue; fi; \
	    cat "$$out"; \
	    after=$$(ls "$$dir/testdata/fuzz/$$f" 2>/dev/null | sort); \
	    if [ "$$before" = "$$after" ] && grep -q 'context deadline exceeded' "$$out"; then \
	      echo "fuzz $$f: Go's fuzz-coordinator deadline race (golang/go#75804), no failing input: not a finding"; rm -f "$$out"; continue; \
	    fi; \
	    rm -f "$$out"; exit 1; \
	  done; \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) tool staticcheck $(PKGS)

lint: fmt-check vet staticcheck

check: lint build test fuzz

# The main job, end to end and offline: a fake registry on loopback, a sync
# into a temporary mirror, then the read commands with the registry gone.
DEMO_STAGES := testdata/noether-stdlib-stages.json

demo:
	$(GO) build -o $(BIN) ./cmd/mirror
	$(GO) build -o bin/fakeregistry ./cmd/fakeregistry
	@set -eu; \
	tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/mirror-demo.XXXXXX"); reg=; srv=; \
	cleanup() { for p in $$reg $$srv; do kill "$$p" 2>/dev/null || true; wait "$$p" 2>/dev/null || true; done; rm -rf "$$tmp"; }; \
	trap cleanup EXIT; trap 'exit 130' INT TERM; \
	db=$$tmp/mirror.db; \
	echo; echo "=== 1. Start a fake noether registry: the 85 stdlib stages + 200 generated ones, on 127.0.0.1"; \
	bin/fakeregistry --addr 127.0.0.1:0 --addr-file "$$tmp/addr" --stages $(DEMO_STAGES) --generate 200 >"$$tmp/registry.log" 2>&1 & reg=$$!; \
	n=0; until [ -s "$$tmp/addr" ]; do \
	  n=$$((n+1)); \
	  if [ $$n -gt 600 ] || ! kill -0 "$$reg" 2>/dev/null; then echo "the fake registry did not start:"; cat "$$tmp/registry.log"; exit 1; fi; \
	  sleep 0.1; \
	done; \
	url=$$(cat "$$tmp/addr"); echo "registry listening on $$url"; \
	echo; echo "=== 2. mirror sync: pull every stage, verify ids, signatures and code hashes, publish a snapshot"; \
	echo "\$$ mirror sync --registry $$url --db $$db"; \
	$(BIN) sync --registry "$$url" --db "$$db"; \
	echo; echo "=== 3. Stop the registry: everything below is offline"; \
	kill "$$reg"; wait "$$reg" 2>/dev/null || true; reg=; echo "registry stopped"; \
	echo; echo "=== 4. mirror status: upstream, last sync, generation, stages by lifecycle, quarantine"; \
	$(BIN) status --db "$$db"; \
	echo; echo "=== 5. mirror get list_length: the stage's JSON exactly as the registry served it"; \
	$(BIN) get list_length --db "$$db"; \
	echo; echo "=== 6. mirror list: a table of every stage (first 10 lines)"; \
	$(BIN) list --db "$$db" | head -n 10; \
	echo; echo "=== 7. mirror list --lifecycle deprecated --json: one JSON per line (first 3, cut at 100 chars)"; \
	$(BIN) list --db "$$db" --lifecycle deprecated --json | head -n 3 | cut -c 1-100; \
	echo; echo "=== 8. mirror find list_length: every stage with that name, any lifecycle, one JSON per line (cut at 100 chars)"; \
	$(BIN) find list_length --db "$$db" | cut -c 1-100; \
	echo; echo "=== 9. mirror verify: re-check every stage and index offline (exit 3 on any failure)"; \
	$(BIN) verify --db "$$db"; \
	echo; echo "=== 10. mirror log: the generations kept (each publish writes only what changed; --at G reads an older one)"; \
	$(BIN) log --db "$$db"; \
	echo; echo "=== 11. mirror status --max-age 1ns: a cron job's freshness check (exit 4 when stale)"; \
	code=0; $(BIN) status --db "$$db" -q --max-age 1ns 2>&1 || code=$$?; echo "exit code $$code"; \
	[ "$$code" -eq 4 ]; \
	echo; echo "=== 12. mirror serve, and a second mirror synced from it: its change feed moves only what changed"; \
	$(BIN) serve --db "$$db" --addr 127.0.0.1:0 >"$$tmp/serve.log" 2>&1 & srv=$$!; \
	n=0; until grep -q ' on http://' "$$tmp/serve.log" 2>/dev/null; do \
	  n=$$((n+1)); \
	  if [ $$n -gt 300 ] || ! kill -0 "$$srv" 2>/dev/null; then echo "mirror serve did not start:"; cat "$$tmp/serve.log"; exit 1; fi; \
	  sleep 0.1; \
	done; \
	site=$$(sed -n 's/.* on \(http:[^ ]*\).*/\1/p' "$$tmp/serve.log" | head -n 1); \
	echo "\$$ mirror sync --registry $$site --db site.db   # the whole content, in one stream"; \
	$(BIN) sync --registry "$$site" --db "$$tmp/site.db"; \
	echo "\$$ mirror sync --registry $$site --db site.db   # again: nothing changed, one small request"; \
	$(BIN) sync --registry "$$site" --db "$$tmp/site.db"; \
	kill "$$srv"; wait "$$srv" 2>/dev/null || true; srv=; \
	echo; echo "demo OK: the mirror served every read with the registry offline, and fed a second mirror"

clean:
	rm -rf bin
