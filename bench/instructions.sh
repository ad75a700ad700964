#!/usr/bin/env bash
# Instructions per operation of one sub-benchmark, counted by valgrind's
# cachegrind (for machines without hardware counters), by difference: the
# benchmark runs twice, for N1 and N2 operations (-benchtime Nx; the
# benchmarks use b.Loop, so the function runs once and the setup is the
# same both times), and the difference in instructions, over N2 - N1, is
# what one operation costs, the loop's own few instructions included.
# Prints the instructions on the lookup path (see below), the total, and
# the functions that account for them.
#
#   bench/instructions.sh 'GetValue/^flows=10000$/impl=flowcache/call=direct'
#   bench/instructions.sh 'GetValue/^flows=10000$/impl=xsync3.MapOf/call=direct'
#
# Env: N1, N2 (default 100000, 1100000); BIN, a test binary of ./bench/
# built already (default: built here with go test -c).
set -euo pipefail
pattern=${1:?usage: $0 BENCH-REGEXP}
n1=${N1:-100000}
n2=${N2:-1100000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bin=${BIN:-}
if [[ -z $bin ]]; then
	bin=$dir/bench.test
	go test -c -o "$bin" "$(dirname "$0")"
fi
# No collection runs on its own (GOGC=off), so none lands in one run and
# not the other: the explicit runtime.GC calls of the setup are alike.
export GOGC=off
# No preemption signals either: under valgrind a run lasts long enough for
# thousands, and their cost would land on the longer run.
export GODEBUG=asyncpreemptoff=1
for n in "$n1" "$n2"; do
	valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$dir/cg.$n" \
		"$bin" -test.run '^$' -test.bench "$pattern" -test.benchtime "${n}x" -test.short \
		>"$dir/out.$n" 2>&1
	grep -q "^Benchmark.*	 *${n}	" "$dir/out.$n" || { cat "$dir/out.$n"; exit 1; }
done
# Per function: Ir in the second run minus the first, per operation. The
# path is the functions a lookup runs: everything but the runtime's
# scheduler, allocator and timers, whose work follows the wall time of a
# run (under valgrind the second run lasts longer) rather than the
# operations; what is left of those is listed, not summed.
cg_annotate --threshold=0 --show=Ir "$dir/cg.$n2" 2>/dev/null >"$dir/a2"
cg_annotate --threshold=0 --show=Ir "$dir/cg.$n1" 2>/dev/null >"$dir/a1"
awk -v ops=$((n2 - n1)) '
	function parse(line,   a, n, f) {
		if (line ~ /^ *[0-9,]+ +(\([ 0-9.]+%\) +)?[^ ]+:[^ ]/) {
			n = line; sub(/^ */, "", n); split(n, a, " "); gsub(",", "", a[1])
			f = line; sub(/^ *[0-9,]+ +(\([ 0-9.]+%\) +)?/, "", f); sub(/^[^:]*:/, "", f)
			fn = f; ir = a[1]; return 1
		}
		return 0
	}
	function onPath(f) {
		if (f ~ /^runtime\.(rand|cheaprand|memhash|typehash|memequal|mapaccess|strhash|interhash|nilinterhash|efaceeq|ifaceeq)/) return 1
		if (f ~ /^(aeshash|memeqbody|internal\/runtime\/maps\.|internal\/abi\.|type:)/) return 1
		if (f ~ /^(runtime\.|internal\/runtime\/|gcWriteBarrier|indexbytebody)/) return 0
		return 1
	}
	FNR == 1 { file++ }
	/PROGRAM TOTALS/ { n = $1; gsub(",", "", n); total[file] = n; next }
	parse($0) { if (file == 1) base[fn] += ir; else run[fn] += ir }
	END {
		for (f in run) {
			d = (run[f] - base[f]) / ops
			if (onPath(f)) path += d
			if (d >= 0.5 || d <= -0.5) printf "%8.1f  %s%s\n", d, (onPath(f) ? "" : "(not summed) "), f
		}
		printf "%8.1f  instructions per op on the path (%d ops; %.1f in all)\n", path, ops, (total[2] - total[1]) / ops
	}' "$dir/a1" "$dir/a2" | sort -rn
