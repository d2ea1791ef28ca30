#!/usr/bin/env bash
# The test command: the README's second set-up command, and what CI runs.
# It installs what a fresh Debian machine lacks (as root), then runs vet,
# gofmt, every test (integration tests included: they need root), each fuzz
# target for a bounded time, and compiles every benchmark once.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

need=()
command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server) # TCP connections across dump/restore (issue 13)
command -v memcached >/dev/null 2>&1 || need+=(memcached)       # TCP connections across dump/restore (issue 13)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light) # nginx master + workers across dump/restore (issues 12, 13)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)       # file locks of an open transaction (issue 11)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql) # SysV + shared memory of a tree (issue 12)
command -v tmux >/dev/null 2>&1 || need+=(tmux) # a terminal emulator holding pty masters (tmux server)
if ((${#need[@]})); then
	if [[ $(id -u) -eq 0 ]]; then
		echo "installing: ${need[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
	else
		echo "missing ${need[*]} (run as root to install them)" >&2
	fi
fi

echo "== go vet"
go vet ./...
echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi

echo "== fuzz targets (${FUZZTIME:=5s} each)"
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for fz in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		log=$(mktemp)
		if ! go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
			# A finding is written under testdata/fuzz and fails for good; the
			# fuzzing engine's own hiccups on a loaded machine ("context
			# deadline exceeded" at the end of -fuzztime, a lost worker)
			# are retried once.
			if grep -q "Failing input written to" "$log" ||
				! go test -run '^$' -fuzz "^${fz}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log.2" 2>&1; then
				cat "$log" "$log.2" >&2 2>/dev/null
				echo "fuzz $pkg $fz failed" >&2
				exit 1
			fi
			echo "fuzz $pkg $fz: passed on retry ($(grep -m1 -E 'deadline|hung|terminated' "$log" || echo 'engine error'))"
		fi
		rm -f "$log.2"
		rm -f "$log"
	done
done

echo "== benchmarks compile and run once"
benchlog=$(mktemp)
if ! go test -run '^$' -bench . -benchtime=1x ./... >"$benchlog" 2>&1; then
	grep -v -E '^(Benchmark|goos|goarch|pkg|cpu|PASS|ok )' "$benchlog" >&2
	echo "a benchmark failed" >&2
	exit 1
fi
rm -f "$benchlog"

echo "== tests"
go test -count=1 -timeout 40m ./...
