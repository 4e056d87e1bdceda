# sshward — make targets. `make demo` runs the whole system locally; `make test` runs every test.
GO        ?= go
BIN       := bin
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 18m
PKGS      := ./...

.PHONY: all build build-pkcs11 package test test-short test-future demo demo-ha bench soak lint deps clean fuzz web plugins

all: build

build: web plugins
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

# package: .deb packages (sshward, sshward-ca, sshward-playback, sshward-agent) with
# hardened systemd units, into bin/packages/ (.ci/package; nfpm as a pinned tool).
package: build
	@bash .ci/package/build

# plugins: the plugin binaries that ship; pin each by sha256sum in config.yaml.
plugins:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./plugins/webhook/cmd/sshward-plugin-webhook ./plugins/oncall/cmd/sshward-plugin-oncall

deps:
	@bash .ci/deps

# test also fails when an sshward process it started outlives it (.ci/leftovers).
test: deps web
	$(GO) vet $(PKGS)
	@mkdir -p $(BIN) && bash .ci/leftovers snapshot $(BIN)/.test-procs
	@export SSHWARD_TEST_RUN=$$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n'); \
	  echo "$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)"; status=0; $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS) || status=$$?; \
	  if [ "$$($(GO) env CGO_ENABLED)" = 1 ] && command -v "$$($(GO) env CC)" >/dev/null; then \
	    echo "$(GO) test -race -count=1 -tags pkcs11 $(PKCS11_PKGS)"; $(GO) test -race -count=1 -tags pkcs11 $(PKCS11_PKGS) || status=$$?; \
	    echo "$(GO) test -race -count=1 -tags pkcs11 -run '$(PKCS11_RUN)' $(PKCS11_E2E)"; $(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -tags pkcs11 -run '$(PKCS11_RUN)' $(PKCS11_E2E) || status=$$?; \
	  else echo "make test: no cgo or C compiler: the PKCS#11 tests ($(PKCS11_PKGS) $(PKCS11_E2E), -tags pkcs11) did not run"; status=1; fi; \
	  bash .ci/leftovers check $(BIN)/.test-procs || status=1; exit $$status

# build-pkcs11: sshward-ca with the PKCS#11 driver (cgo) for CA keys in a
# hardware module (pkcs11: key URIs); the default build has softkms only.
PKCS11_PKGS := ./ca/keys/...
# The real sshward-ca built with -tags pkcs11 against SoftHSM2: only the
# TestPKCS11* tests of cmd/sshward-ca (the rest of it runs once, untagged).
PKCS11_E2E  := ./cmd/sshward-ca
PKCS11_RUN  := ^TestPKCS11
build-pkcs11:
	@mkdir -p $(BIN)
	CGO_ENABLED=1 $(GO) build -tags pkcs11 -o $(BIN)/ ./cmd/sshward-ca

# web: asciinema-player from npm (pinned by playback/web/package-lock.json),
# copied where go:embed picks it up (playback/web/static/vendor, git-ignored).
WEB        := playback/web
PLAYER     := $(WEB)/node_modules/asciinema-player/dist/bundle
web: $(WEB)/static/vendor/asciinema-player.min.js $(WEB)/static/vendor/asciinema-player.css

$(WEB)/node_modules/.package-lock.json: $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --ignore-scripts --no-audit --no-fund

$(WEB)/static/vendor/asciinema-player.%: $(WEB)/node_modules/.package-lock.json
	cp $(PLAYER)/asciinema-player.$* $@

# test-future: the in-process tests with the clock shifted 1, 5 and 10 years ahead.
test-future: web
	@bash .ci/future-clock

test-short:
	$(GO) test -short $(PKGS)

demo: build
	@$(BIN)/sshward-demo $(DEMO_ARGS)

# demo-ha: 3 etcd members + 2 sshward-ca replicas on loopback sharing them (.ci/demo-ha/run).
demo-ha: build
	@BIN=$(BIN) bash .ci/demo-ha/run

bench: deps build
	@bash .ci/bench

# soak: the whole system on loopback under bounded load for DURATION while
# faults are injected at random (cmd/sshward-soak; the seed is printed,
# SOAK_ARGS="--seed N" repeats a run); exits 1 if anything was lost.
DURATION ?= 10m
soak: build
	@$(BIN)/sshward-soak --duration $(DURATION) --bin $(BIN) $(SOAK_ARGS)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

clean:
	rm -rf $(BIN)
