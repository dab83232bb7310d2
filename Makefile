# convene: automation lives here, not in anyone's memory.
#   make run    the server (release build), SQLite under ./data, a development key printed at first start
#   make bench-media  the media forwarding benchmark (docs/benchmarks.md): 1 publisher to N subscribers and
#                     M rooms of 4, convene (1 and 2 media threads) beside Janus (Debian's janus installed);
#                     then 5 publishers to 200 subscribers without and with recording (ffmpeg installed)
#   make bench-web    the web app's join time: click on Join to the first decoded remote frame
#   make bench-join   seed 002 join storms: convene, the seed's Node.js function, a bare axum POST and two durable floors
#   make bench-nodes  events across three nodes on PostgreSQL: the delay per node
#   make test   every test: Rust (unit, integration, SQLite + PostgreSQL conformance) and the
#               interop suites that drive the real binary with clients nobody here wrote

VENV   ?= .venv
PYTHON ?= python3
CARGO  ?= cargo
# Where cargo puts binaries (honours CARGO_TARGET_DIR).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: run test test-rust test-interop venv build-debug clippy fmt web web-check bench-events bench-media bench-web bench-join bench-nodes

run:
	$(CARGO) run --release -p convene

test: web-check test-rust test-interop

# The venv first: a storage test runs moto's S3 server from it.
test-rust: venv
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

$(VENV)/.installed: tests/interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r tests/interop/requirements.txt
	touch $@

venv: $(VENV)/.installed

build-debug:
	$(CARGO) build -p convene
	$(CARGO) build -p convene-sfu --example sfu_dev

test-interop: venv build-debug
	CONVENE_BIN=$(TARGET_DIR)/debug/convene \
	CONVENE_SFU_DEV_BIN=$(TARGET_DIR)/debug/examples/sfu_dev \
	$(VENV)/bin/python -m pytest tests/interop -q

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# The web app (meeting page, stage, admin console): web/src type-checked and bundled with React and
# LiveKit's components into crates/convene/assets/app/ (committed, so building the binary needs no Node).
web:
	cd web && npm ci --no-audit --no-fund && npm run build

# The committed bundle is exactly what its source builds to (no changed, missing or extra file).
web-check: web
	git diff --exit-code -- crates/convene/assets/app
	@test -z "$$(git status --porcelain -- crates/convene/assets/app)" || { git status --porcelain -- crates/convene/assets/app; echo "crates/convene/assets/app is stale: run make web and commit it"; exit 1; }

# The realtime fan-out benchmark (docs/benchmarks.md): convene, a minimal Node.js `ws` server and
# two Rust floors (rust-floor; store-floor, which also commits the admission durably and sends
# convene's frames), 1,000 and 10,000 waiting clients notified when the host starts the meeting.
bench-events:
	$(CARGO) build --release -p convene -p convene-bench
	cd bench/node-ws && npm ci --no-audit --no-fund
	ulimit -n "$$(ulimit -Hn)" && $(TARGET_DIR)/release/convene-bench --clients 1000,10000 --runs 3 --convene-bin $(TARGET_DIR)/release/convene

# Events across nodes (docs/benchmarks.md, "Across nodes"): three convene nodes on one fresh
# PostgreSQL database, 1,000 waiting guests streaming from them, the host joining on the first.
BENCH_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
BENCH_NODES_ARGS ?= --nodes 3 --clients 1000
bench-nodes:
	$(CARGO) build --release -p convene -p convene-bench
	ulimit -n "$$(ulimit -Hn)" && $(TARGET_DIR)/release/convene-bench $(BENCH_NODES_ARGS) --postgres-url $(BENCH_POSTGRES_URL) --convene-bin $(TARGET_DIR)/release/convene

# The web app's join time (docs/web-app.md): ten joins through /meet in headless Chromium, from the
# click on Join to the first decoded remote frame (p50), and the meeting page's download size.
BENCH_WEB_BIN ?= $(TARGET_DIR)/release/convene
bench-web:
	$(CARGO) build --release -p convene
	cd tests/interop/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund && node bench_join.mjs $(BENCH_WEB_BIN) 10

# Media forwarding through the embedded SFU (docs/benchmarks.md, "Media forwarding" and "Media
# capacity"): one publisher to 10/50/100/200 str0m subscribers over loopback, then meetings of 4
# (10/25/50 rooms and the capacity search) with 1 and 2 media threads, each beside Janus's VideoRoom
# (UDP) with the same clients; prints server CPU per packet, loss and delay, the ratios, and after
# each count the str0m floor (the same packets through str0m and the kernel, no convene code).
# Then recording (docs/benchmarks.md, "Recording (issue 24)"): 5 publishers (10 tracks) to 200
# subscribers, convene over UDP, without then with a recording of the meeting started through the
# API before the window and stopped after it (awaited until ready); prints CPU per packet on / off
# (target at most 1.10) and the delay p99 of both. Needs ffmpeg for the recording's composite.
BENCH_MEDIA_ARGS ?= --servers convene,janus --subscribers 10,50,100,200 --rooms 10,25,50 --capacity --rtc-threads 1,2 --seconds 10 --floor
BENCH_MEDIA_RECORD_ARGS ?= --subscribers 200 --publishers 5 --record off,on --transport udp --seconds 10
bench-media:
	$(CARGO) build --release -p convene -p convene-media-bench
	$(TARGET_DIR)/release/convene-media-bench --convene-bin $(TARGET_DIR)/release/convene $(BENCH_MEDIA_ARGS)
	$(TARGET_DIR)/release/convene-media-bench --convene-bin $(TARGET_DIR)/release/convene $(BENCH_MEDIA_RECORD_ARGS)

# Seed 002 join storms (docs/benchmarks.md, "Join storms"): admin joins with a fresh uid each, to
# convene (SQLite), seed 002's own function on Node.js (bench/node-join), a bare axum POST, and two
# durable floors in Rust (one row per join; convene's rows per join); 32 connections into one room
# and into 200 rooms, and a burst of 10,000 joins into one room.
# BENCH_JOIN_ARGS=--postgres-url=postgres://postgres@127.0.0.1:5432/test adds convene on PostgreSQL.
BENCH_JOIN_ARGS ?=
bench-join:
	$(CARGO) build --release -p convene -p convene-bench
	cd bench/node-join && npm ci --no-audit --no-fund
	ulimit -n "$$(ulimit -Hn)" && $(TARGET_DIR)/release/convene-join-bench --convene-bin $(TARGET_DIR)/release/convene $(BENCH_JOIN_ARGS)
