# flowcache — the two commands a new user needs are `make run` and `make test`.
GO           ?= go
GOBIN        ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK  := honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHSTAT    := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da
FUZZTIME     ?= 10s

.PHONY: run test vet race bench lint fuzz benchstat

# The main job: a simulated multicore forwarder on the built-in workload.
run:
	$(GO) run ./bench/cmd/flowbench

# vet + tests + the same tests under the race detector.
test: vet
	$(GO) test ./...
	$(GO) test -race ./...

vet:
	$(GO) vet ./...

race:
	$(GO) test -race ./...

# A short run of every benchmark; docs/PERFORMANCE.md has full runs and benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -short -benchtime 100ms ./...

lint: vet
	$(GO) install $(STATICCHECK)
	$(GOBIN)/staticcheck ./...

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseFlowKey$$' -fuzztime $(FUZZTIME) ./flowcache/
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./flowcache/
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeaders$$' -fuzztime $(FUZZTIME) ./flowcache/
	$(GO) test -run '^$$' -fuzz '^FuzzKeyText$$' -fuzztime $(FUZZTIME) ./flowcache/
	$(GO) test -run '^$$' -fuzz '^FuzzOps$$' -fuzztime $(FUZZTIME) ./race_test/

benchstat:
	$(GO) install $(BENCHSTAT)

# The forwarder example between three network namespaces, on real traffic
# (tcpreplay, hping3), and a primary, its standby and a JetStream server
# built from the nats-server module go.mod pins: needs root, skips
# without. Not part of `make test`.
.PHONY: e2e
e2e:
	bash examples/forwarder/e2e.sh
