# sshward — make targets. `make demo` runs the whole system locally; `make test` runs every test.
GO        ?= go
BIN       := bin
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 12m
PKGS      := ./...

.PHONY: all build test test-short demo bench lint deps clean fuzz

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	@bash .ci/deps

test: deps
	$(GO) vet $(PKGS)
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

test-short:
	$(GO) test -short $(PKGS)

demo: build
	@$(BIN)/sshward-demo $(DEMO_ARGS)

bench: deps build
	@bash .ci/bench

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

clean:
	rm -rf $(BIN)
