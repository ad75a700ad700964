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
# With CACHE=1 cachegrind also simulates the caches, with its last level
# set to LL (default 1048576,16,64: 1 MiB, the size of one core's L2 on
# the machines here, whose 32 MiB L3 holds a 10k-flow table whole), and
# the script prints, per operation, data reads (Dr), first-level data
# misses (D1mr + D1mw) and last-level ones (DLmr + DLmw), in all and for
# the functions that account for them:
#
#   CACHE=1 bench/instructions.sh 'GetValue/^flows=10000$/impl=flowcache/call=direct'
#
# Env: N1, N2 (default 100000, 1100000); BIN, a test binary of ./bench/
# built already (default: built here with go test -c); CACHE, LL.
set -euo pipefail
pattern=${1:?usage: $0 BENCH-REGEXP}
n1=${N1:-100000}
n2=${N2:-1100000}
cache=${CACHE:-0}
ll=${LL:-1048576,16,64}
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
sim=(--cache-sim=no)
if [[ $cache == 1 ]]; then
	sim=(--cache-sim=yes "--LL=$ll")
fi
for n in "$n1" "$n2"; do
	valgrind --tool=cachegrind "${sim[@]}" --cachegrind-out-file="$dir/cg.$n" \
		"$bin" -test.run '^$' -test.bench "$pattern" -test.benchtime "${n}x" -test.short \
		>"$dir/out.$n" 2>&1
	grep -q "^Benchmark.*	 *${n}	" "$dir/out.$n" || { cat "$dir/out.$n"; exit 1; }
done
if [[ $cache == 1 ]]; then
	# Every event, per operation, by difference; per function, the data
	# misses (the scheduler's and the allocator's included: with GOGC=off
	# they are few and are listed, not hidden).
	cg_annotate --threshold=0 --show=Ir,Dr,D1mr,D1mw,DLmr,DLmw "$dir/cg.$n2" 2>/dev/null >"$dir/a2"
	cg_annotate --threshold=0 --show=Ir,Dr,D1mr,D1mw,DLmr,DLmw "$dir/cg.$n1" 2>/dev/null >"$dir/a1"
	awk -v ops=$((n2 - n1)) '
		function nums(line, out,   s, a, i) {
			s = line; gsub(/\([ 0-9.]+%\)/, "", s); sub(/^ */, "", s)
			for (i = 1; i <= 6; i++) {
				match(s, /^[0-9,.]+ +/)
				a = substr(s, 1, RLENGTH); gsub(/[ ,]/, "", a); out[i] = a
				s = substr(s, RLENGTH + 1)
			}
			return s
		}
		FNR == 1 { file++ }
		/PROGRAM TOTALS/ { nums($0, v); for (i = 1; i <= 6; i++) tot[file, i] = v[i]; next }
		/^ *[0-9,]+ .*[^ ]:[^ ]/ {
			f = nums($0, v); sub(/^[^:]*:/, "", f)
			for (i = 1; i <= 6; i++) cnt[file, f, i] += v[i]
			fns[f] = 1
		}
		END {
			for (f in fns) {
				d1 = (cnt[2, f, 3] + cnt[2, f, 4] - cnt[1, f, 3] - cnt[1, f, 4]) / ops
				dl = (cnt[2, f, 5] + cnt[2, f, 6] - cnt[1, f, 5] - cnt[1, f, 6]) / ops
				ir = (cnt[2, f, 1] - cnt[1, f, 1]) / ops
				if (d1 >= 0.01 || dl >= 0.01 || d1 <= -0.01 || dl <= -0.01 || ir >= 0.5)
					printf "  %8.1f Ir %6.2f D1 miss %6.2f LL miss  %s\n", ir, d1, dl, f
			}
			for (i = 1; i <= 6; i++) d[i] = (tot[2, i] - tot[1, i]) / ops
			printf "per op (%d ops): %.1f Ir, %.1f Dr, %.2f D1 misses, %.2f LL misses\n", ops, d[1], d[2], d[3] + d[4], d[5] + d[6]
		}' "$dir/a1" "$dir/a2" | sort -k7 -rn
	exit 0
fi
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
