#!/usr/bin/env bash
# e2e.sh: examples/forwarder between three network namespaces, on real
# traffic from tools nobody here wrote (tcpreplay, hping3). `make e2e`.
#
#   gen ── vgen ══ fin ── fwd (the Go forwarder) ── fout ══ vsink ── sink
#                         kernel forwarding off         counts frames, answers nothing
#
# (a) every capture in ../shared/data/pcap/ (beside the repository),
#     rewritten into the test hosts' own prefixes, replayed by tcpreplay
#     at $E2E_PPS through the forwarder on its rings (-io=ring, the
#     default) and again on plain sockets (-io=syscall): the flows the
#     forwarder inserted must be exactly the rewritten capture's keys
#     (flowcache.ParseFrame), and the sink must receive every frame the
#     forwarder was meant to forward (every IP frame), with no drops.
#     Then each capture once more per path at --topspeed (looped to
#     about $E2E_TOP_FRAMES frames), for the table at the end: the
#     forwarder's packets per second, ring vs syscall. What is checked
#     at top speed is written above replay() below.
# (b) a bounded hping3 SYN flood from random sources at the sink's
#     address, beside a steady UDP flow: the table stays at its limit,
#     counts rejections, keeps forwarding the steady flow, and gives its
#     memory back once the flood's flows expire.
#
# Containment: traffic stays between the namespaces made here. Captures
# are rewritten (tcprewrite --pnat) into 198.18.0.0/16 and
# fd66:6c6f:7763::/64, both assigned to the sink's veth; the flood targets
# the sink's own address. No namespace has a default route or a link to
# the host's network; the sink's nftables drop everything its stack would
# receive or send; every generator is bounded in packets and time.
#
# Needs root; skips (exit 0) without it or where namespaces cannot be made.
# Knobs: E2E_PPS (paced replay rate, default 50000), E2E_TOPSPEED (1; 0
# skips the --topspeed replays), E2E_TOP_FRAMES (100000), E2E_FLOOD_SECONDS
# (5), E2E_FLOOD_LIMIT (20000), E2E_PCAPS (capture folder), E2E_FWD_FLAGS
# (more forwarder flags for the replays, e.g. "-ring-blocks 2" to try the
# top-speed checks under drops), E2E_KEEP=1 (keep the work folder). It
# takes about two minutes on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PCAPS=${E2E_PCAPS:-$ROOT/../shared/data/pcap}
PPS=${E2E_PPS:-50000}
FLOOD_SECONDS=${E2E_FLOOD_SECONDS:-5}
FLOOD_LIMIT=${E2E_FLOOD_LIMIT:-20000}
TOPSPEED=${E2E_TOPSPEED:-1}
TOP_FRAMES=${E2E_TOP_FRAMES:-100000}
read -ra FWD_FLAGS <<<"${E2E_FWD_FLAGS:-}"
MAX_FRAME=9014 # MTU 9000 + a 14-byte Ethernet header

V4_NET=198.18.0.0/16 # the sink's prefixes: every replayed address lands here
V6_NET=fd66:6c6f:7763::/64
SINK_V4=198.18.0.1
SINK_V6=fd66:6c6f:7763::1
GEN_V4=198.19.0.1 # the generator's own address, for the steady flow
HOP_V4=198.19.0.2 # gen's next hop toward the sink prefixes: fwd's ingress (a static neighbour)
GEN_MAC=02:fc:00:00:00:01
FIN_MAC=02:fc:00:00:00:02
FOUT_MAC=02:fc:00:00:00:03
SINK_MAC=02:fc:00:00:00:04

say() { printf 'e2e: %s\n' "$*"; }
skip() {
	say "SKIP: $*"
	exit 0
}
die() {
	say "FAIL: $*"
	exit 1
}

[ "$(id -u)" = 0 ] || skip "not root: building network namespaces needs root"
command -v ip >/dev/null || skip "no ip command (iproute2)"

# The tools, from Debian's packages, installed once.
need=()
for t in tcpreplay:tcpreplay tcprewrite:tcpreplay hping3:hping3 nft:nftables ethtool:ethtool timeout:coreutils; do
	command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
if ((${#need[@]})); then
	say "installing ${need[*]}"
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

ID=$$
GEN=fcgen$ID FWD=fcfwd$ID SINK=fcsink$ID
WORK=$(mktemp -d /tmp/flowcache-e2e.XXXXXX)
PIDS=()
cleanup() {
	local rc=$?
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for ns in "$GEN" "$FWD" "$SINK"; do ip netns del "$ns" 2>/dev/null || true; done
	if [ "${E2E_KEEP:-}" = 1 ] || [ $rc != 0 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$GEN" 2>/dev/null || skip "cannot create network namespaces here"
ip netns add "$FWD"
ip netns add "$SINK"
in_ns() { ip netns exec "$@"; }

# --- the three hosts -------------------------------------------------------
# Links are made inside the namespaces (never in the host's), with IPv6
# off where no address is wanted, so no kernel sends router solicitations
# or MLD reports that would reach the forwarder.
ip -n "$GEN" link add vgen type veth peer name fin netns "$FWD"
ip -n "$FWD" link add fout type veth peer name vsink netns "$SINK"
setup_link() { # ns dev mac
	in_ns "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1" 2>/dev/null || true
	ip -n "$1" link set "$2" address "$3" mtu 9000
	# Frames stay as sent: no segmentation or coalescing offloads.
	in_ns "$1" ethtool -K "$2" rx off tx off sg off tso off gso off gro off lro off >/dev/null 2>&1 || true
}
setup_link "$GEN" vgen $GEN_MAC
setup_link "$FWD" fin $FIN_MAC
setup_link "$FWD" fout $FOUT_MAC
in_ns "$SINK" sysctl -qw net.ipv6.conf.vsink.accept_ra=0 net.ipv6.conf.vsink.router_solicitations=0 \
	net.ipv6.conf.vsink.accept_dad=0
ip -n "$SINK" link set vsink address $SINK_MAC mtu 9000
in_ns "$SINK" ethtool -K vsink rx off tx off sg off tso off gso off gro off lro off >/dev/null 2>&1 || true

# gen: its own address, and a static route to the sink prefix through fwd
# (a permanent neighbour entry: no ARP). No default route.
ip -n "$GEN" addr add $GEN_V4/24 dev vgen
ip -n "$GEN" link set lo up
ip -n "$GEN" link set vgen up
ip -n "$GEN" neigh replace $HOP_V4 lladdr $FIN_MAC dev vgen nud permanent
ip -n "$GEN" route add $V4_NET via $HOP_V4 dev vgen

# fwd: no addresses, kernel forwarding off, and a drop rule on the
# kernel's forward and input paths: only the Go forwarder moves frames.
in_ns "$FWD" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
in_ns "$FWD" nft -f - <<'EOF'
table inet e2e {
	chain forward { type filter hook forward priority 0; policy drop; }
	chain input   { type filter hook input priority 0; policy drop; }
}
EOF
ip -n "$FWD" link set fin up
ip -n "$FWD" link set fout up

# sink: owns both prefixes, and its stack neither receives nor sends
# anything (the counter reads frames before netfilter).
in_ns "$SINK" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
ip -n "$SINK" addr add $SINK_V4/16 dev vsink
ip -n "$SINK" addr add $SINK_V6/64 dev vsink nodad
in_ns "$SINK" nft -f - <<'EOF'
table inet e2e {
	chain pre { type filter hook prerouting priority -300; policy drop; }
	chain out { type filter hook output priority 0; policy drop; }
}
table arp e2e {
	chain in  { type filter hook input priority 0; policy drop; }
	chain out { type filter hook output priority 0; policy drop; }
}
EOF
ip -n "$SINK" link set vsink up

for ns in "$GEN" "$FWD" "$SINK"; do
	if ip -n "$ns" route show default | grep -q .; then die "$ns has a default route"; fi
done

# --- the programs ----------------------------------------------------------
BIN=$WORK/forwarder
(cd "$ROOT" && go build -o "$BIN" ./examples/forwarder)

# jget FILE KEY: a number from the programs' JSON.
jget() { grep -o "\"$2\": *[0-9.e+]*" "$1" | tail -1 | sed 's/.*: *//'; }

FWD_PID= SINK_PID=
start_sink() { # watch-spec or ""
	local w=()
	[ -n "$1" ] && w=(-watch "$1")
	ip netns exec "$SINK" "$BIN" -sink vsink "${w[@]}" >"$WORK/sink.json" 2>"$WORK/sink.log" &
	SINK_PID=$!
	PIDS+=("$SINK_PID")
}
start_fwd() { # extra flags...
	rm -f "$WORK/status.json" "$WORK/summary.json"
	ip netns exec "$FWD" "$BIN" -in fin -out fout -next-hop $SINK_MAC \
		-status "$WORK/status.json" -summary "$WORK/summary.json" "$@" 2>"$WORK/fwd.log" &
	FWD_PID=$!
	PIDS+=("$FWD_PID")
	for _ in $(seq 50); do
		[ -s "$WORK/status.json" ] && return 0
		kill -0 "$FWD_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/fwd.log"
	die "the forwarder did not start"
}
stop() { # pid
	kill -TERM "$1"
	wait "$1" || die "process $1 exited with status $?"
}
# wait_in N: until the forwarder has read (or its socket dropped) N frames
# and a second more has passed with nothing new (the status file is
# rewritten once a second); or, short of N, until nothing has moved for
# two seconds (frames lost before the socket: the checks then say so).
wait_in() {
	local n=$1 last=-1 still=0 cur
	for _ in $(seq 30); do
		sleep 1
		cur=$(($(jget "$WORK/status.json" packets_in) + $(jget "$WORK/status.json" socket_drops)))
		if [ "$cur" = "$last" ]; then still=$((still + 1)); else still=0; fi
		{ [ "$cur" -ge "$n" ] && ((still >= 1)); } || ((still >= 2)) && return 0
		last=$cur
	done
}

# --- (a) the captures ------------------------------------------------------
# Each capture is replayed four times: at $PPS through the ring path (the
# default) and the syscall path, with every check; then at --topspeed
# through both, to compare their rates (the table at the end). At top
# speed the forwarder may fall behind and its ring or socket drop frames,
# so there drops are reported, not failed, and what is checked is what
# drops cannot break:
#   * tcpreplay sent every frame; the forwarder read at most that many,
#     and read + dropped by its ring/socket = sent (nothing lost unseen);
#   * every frame read is accounted for: forwarded, send error, not IP or
#     malformed, oversize; and nothing was rejected for a full table;
#   * the flows inserted are a subset of the capture's keys (no key made
#     up), and the SIGUSR1 dump holds exactly the flows inserted;
#   * the sink counted every frame forwarded, less what its own socket
#     dropped;
#   * with no drops at all, everything the paced replay checks.
FAILS=0
RESULTS=()
TOP=() # per capture: "name frames ring-pps sys-pps ring-drops sys-drops ring-tcpreplay-pps sys-tcpreplay-pps"

# replay IO RATE: one replay of $replay through the forwarder with -io=IO,
# at RATE pkt/s or "max" (--topspeed); then the checks that rate allows.
# Sets SENT_OUT, PPS_OUT, DROPS_OUT and TRATE_OUT (tcpreplay's rate) for
# the table.
replay() {
	local io=$1 rate=$2
	local tag="$name -io=$io @ $rate"
	start_sink ""
	rm -f "$WORK/dump.txt" "$WORK/flows.txt"
	start_fwd -io "$io" -limit 1000000 -ttl 60s -flows-file "$WORK/flows.txt" -dump-file "$WORK/dump.txt" ${FWD_FLAGS[@]+"${FWD_FLAGS[@]}"}
	local rate_flag=(--pps="$rate") loops=1
	if [ "$rate" = max ]; then
		# From memory (faster than from the file), and looped up to
		# $TOP_FRAMES frames, so that the rate is over a span long
		# enough to measure. The loops repeat the same flows.
		loops=$(((TOP_FRAMES + kept - 1) / kept))
		rate_flag=(--topspeed --preload-pcap --loop="$loops")
	fi
	local want_in=$((kept * loops))
	in_ns "$GEN" timeout 300 tcpreplay -i vgen "${rate_flag[@]}" --limit="$want_in" "$replay" >"$WORK/tcpreplay.log" 2>&1 ||
		{ cat "$WORK/tcpreplay.log"; die "tcpreplay failed"; }
	local sent failed trate
	sent=$(grep -o 'Successful packets: *[0-9]*' "$WORK/tcpreplay.log" | grep -o '[0-9]*$')
	failed=$(grep -o 'Failed packets: *[0-9]*' "$WORK/tcpreplay.log" | grep -o '[0-9]*$')
	trate=$(grep -o 'Rated: .*' "$WORK/tcpreplay.log" | head -1 | grep -o '[0-9.]* pps' | cut -d' ' -f1)
	wait_in "$sent"
	# SIGUSR1: the table's Dump, sorted; every flow is still live (TTL 60 s).
	local live
	live=$(jget "$WORK/status.json" live)
	kill -USR1 "$FWD_PID"
	for _ in $(seq 50); do
		[ -s "$WORK/dump.txt" ] && [ "$(wc -l <"$WORK/dump.txt")" -gt "$live" ] && break
		sleep 0.1
	done
	sleep 0.2
	stop "$FWD_PID"
	sleep 0.3
	stop "$SINK_PID"

	local S=$WORK/summary.json
	local in out dropped drops sink sink_drops got_flows accounted
	in=$(jget "$S" packets_in) out=$(jget "$S" packets_out)
	dropped=$(($(jget "$S" not_ip) + $(jget "$S" malformed)))
	drops=$(jget "$S" socket_drops)
	accounted=$((out + dropped + $(jget "$S" send_errors) + $(jget "$S" oversize)))
	got_flows=$(wc -l <"$WORK/flows.txt")
	sink=$(jget "$WORK/sink.json" frames)
	sink_drops=$(jget "$WORK/sink.json" socket_drops)
	PPS_OUT=$(jget "$S" active_pps) DROPS_OUT=$drops TRATE_OUT=$trate SENT_OUT=$sent
	local res="$tag: replayed $sent (failed $failed; $loops× the capture) at $trate pkt/s, forwarder in $in out $out dropped $dropped, socket drops $drops, flows expected $want_flows seen $got_flows, sink $sink (drops $sink_drops); $PPS_OUT pkt/s over $(jget "$S" active_seconds) s; table $(jget "$S" table_bytes_peak) B peak; heap before $(jget "$S" heap_before) peak $(jget "$S" heap_peak) after $(jget "$S" heap_after)"
	say "$res"
	RESULTS+=("$res")

	local bad=() strict=1
	[ "$failed" = 0 ] || bad+=("tcpreplay failed to send $failed frames")
	[ "$sent" = "$want_in" ] || bad+=("tcpreplay sent $sent of $want_in")
	[ "$(jget "$S" full_rejections)" = 0 ] || bad+=("full rejections")
	[ "$accounted" = "$in" ] || bad+=("read $in, but forwarded + send errors + dropped + oversize = $accounted")
	if [ "$rate" = max ] && { [ "$drops" != 0 ] || [ "$in" != "$sent" ]; }; then
		strict=0
		local what=socket
		[ "$io" = ring ] && what=ring
		say "$tag: the forwarder fell behind: $drops dropped by its $what, $((sent - in - drops)) lost before it; checking what drops allow"
		[ "$((in + drops))" = "$sent" ] || bad+=("read $in + dropped $drops != sent $sent")
		local extra
		extra=$(comm -13 <(sort "$WORK/expected.txt") <(sort "$WORK/flows.txt") | wc -l)
		[ "$extra" = 0 ] || bad+=("$extra flows inserted that the capture does not have")
		grep -v '^#' "$WORK/dump.txt" | sed 's/  forward  hits=.*//' | cmp -s - "$WORK/flows.txt" ||
			bad+=("the SIGUSR1 dump is not the flows inserted, in order")
		[ "$((sink + sink_drops))" = "$out" ] || bad+=("sink counted $sink (+ $sink_drops dropped), forwarder sent $out")
	fi
	if ((strict)); then
		[ "$drops" = 0 ] || bad+=("forwarder $io dropped $drops")
		[ "$in" = "$sent" ] || bad+=("forwarder read $in, tcpreplay sent $sent")
		[ "$out" = $((want_fwd * loops)) ] || bad+=("forwarder sent $out, expected $((want_fwd * loops))")
		[ "$dropped" = $((want_drop * loops)) ] || bad+=("forwarder dropped $dropped non-IP/malformed, expected $((want_drop * loops))")
		cmp -s "$WORK/flows.txt" "$WORK/expected.txt" ||
			bad+=("flows differ: $(diff "$WORK/expected.txt" "$WORK/flows.txt" | grep -c '^[<>]' || true) lines (diff $WORK/expected.txt $WORK/flows.txt)")
		grep -v '^#' "$WORK/dump.txt" | sed 's/  forward  hits=.*//' | cmp -s - "$WORK/expected.txt" ||
			bad+=("the SIGUSR1 dump is not the expected keys in order")
		[ "$sink" = "$out" ] || bad+=("sink counted $sink, forwarder sent $out")
		[ "$sink_drops" = 0 ] || bad+=("sink socket dropped frames")
	fi
	if ((${#bad[@]})); then
		for b in "${bad[@]}"; do say "FAIL $tag: $b"; done
		FAILS=$((FAILS + 1))
		E2E_KEEP=1
	else
		say "ok $tag"
	fi
}

shopt -s nullglob
caps=("$PCAPS"/*.pcap "$PCAPS"/*.pcapng)
if ((${#caps[@]} == 0)); then
	say "SKIP (a): no captures in $PCAPS"
fi
for cap in "${caps[@]}"; do
	name=$(basename "$cap")
	say "--- $name"
	rw=$WORK/rewritten.pcap
	replay=$WORK/replay.pcap
	# tcprewrite reads pcapng too (libpcap) and writes pcap. --pnat maps
	# every IPv4 address into the /16 (keeping its low 16 bits) and every
	# IPv6 address into the /64 (keeping its low 64).
	tcprewrite --pnat="0.0.0.0/0:$V4_NET,[::/0]:[$V6_NET]" \
		--enet-smac=$GEN_MAC --enet-dmac=$FIN_MAC --fixcsum \
		-i "$cap" -o "$rw" 2>"$WORK/tcprewrite.log" || { tail "$WORK/tcprewrite.log"; die "tcprewrite failed"; }
	warn=$(grep -c '^Warning' "$WORK/tcprewrite.log" || true)
	((warn == 0)) || say "tcprewrite: $warn warnings (checksums it cannot recompute: unknown protocols, short packets)"
	# What the forwarder must do, from the rewritten file as tcpreplay
	# can send it: frames longer than the MTU allows (captured with
	# TSO/GRO), and runts under the 14 bytes of an Ethernet header, which
	# no AF_PACKET send accepts, are left out here.
	"$BIN" -keys-from "$cap" >"$WORK/original.json"
	"$BIN" -keys-from "$rw" -max-frame $MAX_FRAME -write-filtered "$replay" \
		-flows-file "$WORK/expected.txt" >"$WORK/expected.json"
	kept=$(jget "$WORK/expected.json" kept)
	oversize=$(jget "$WORK/expected.json" oversize)
	runts=$(jget "$WORK/expected.json" runts)
	want_fwd=$(jget "$WORK/expected.json" ip_frames)
	want_drop=$(($(jget "$WORK/expected.json" not_ip) + $(jget "$WORK/expected.json" malformed)))
	want_flows=$(jget "$WORK/expected.json" flows)
	say "frames $(jget "$WORK/expected.json" frames), $oversize over $MAX_FRAME bytes and $runts under 14 left out, $kept to replay:" \
		"$want_fwd IP to forward, $want_drop not IP or malformed to drop;" \
		"flows $want_flows ($(jget "$WORK/original.json" flows) before rewriting)"

	replay ring "$PPS"
	replay syscall "$PPS"
	if [ "$TOPSPEED" = 1 ]; then
		replay ring max
		ring=("$PPS_OUT" "$DROPS_OUT" "$TRATE_OUT")
		replay syscall max
		TOP+=("$name $SENT_OUT ${ring[0]} $PPS_OUT ${ring[1]} $DROPS_OUT ${ring[2]} $TRATE_OUT")
	fi
	rm -f "$rw" "$replay"
done

# --- (b) the flood ---------------------------------------------------------
say "--- flood: hping3 --flood --rand-source -S -p 80 $SINK_V4 for ${FLOOD_SECONDS}s, limit $FLOOD_LIMIT, ttl 2s"
STEADY_PPS=100
STEADY_COUNT=$(((FLOOD_SECONDS + 4) * STEADY_PPS))
start_sink "17,$GEN_V4,5000,$SINK_V4,5001"
start_fwd -limit "$FLOOD_LIMIT" -ttl 2s -full-policy drop -stats
# The established flow: UDP 198.19.0.1:5000 -> 198.18.0.1:5001, 100 pkt/s,
# from 2 s before the flood to 2 s after.
ip netns exec "$GEN" timeout $((FLOOD_SECONDS + 30)) hping3 -q -2 -s 5000 -k -p 5001 -i u10000 -c $STEADY_COUNT $SINK_V4 \
	>"$WORK/steady.log" 2>&1 &
STEADY_PID=$!
PIDS+=("$STEADY_PID")
sleep 2
kill -USR1 "$SINK_PID"
sleep 0.2
w0=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
t0=$(date +%s.%N)
# hping3 ignores -c in flood mode: the timeout is the bound (alone on this
# machine it sends about 150,000 packets a second).
in_ns "$GEN" timeout -s INT "$FLOOD_SECONDS" hping3 -q --flood --rand-source -S -p 80 $SINK_V4 >"$WORK/flood.log" 2>&1 || true
t1=$(date +%s.%N)
kill -USR1 "$SINK_PID"
sleep 0.2
w1=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
cp "$WORK/status.json" "$WORK/status-flood.json"
wait "$STEADY_PID" || true
# Drain: the flood's flows expire after the 2 s TTL, on the next pass.
for _ in $(seq 20); do
	sleep 1
	[ "$(jget "$WORK/status.json" live)" = 0 ] && break
done
sleep 1.5
stop "$FWD_PID"
sleep 0.3
stop "$SINK_PID"

S=$WORK/summary.json
flood_s=$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")
during=$((w1 - w0))
flood_sent=$(grep -o '[0-9]* packets transmitted' "$WORK/flood.log" | grep -o '^[0-9]*' || echo "?")
steady_sent=$(grep -o '[0-9]* packets transmitted' "$WORK/steady.log" | grep -o '^[0-9]*' || echo "?")
watched=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
peak_live=$(jget "$S" peak_live)
rej=$(jget "$S" full_rejections)
res="flood: ${flood_s}s, hping3 sent $flood_sent; forwarder in $(jget "$S" packets_in) out $(jget "$S" packets_out), peak $(jget "$S" peak_pps) pkt/s, socket drops $(jget "$S" socket_drops); limit $FLOOD_LIMIT, peak live $peak_live, rejections $rej, dropped (full) $(jget "$S" dropped_full), flows inserted $(jget "$S" flows_inserted), expired $(jget "$S" expired), shrinks $(jget "$S" shrinks); steady flow: sent $steady_sent, at sink $watched, during the flood $during (at $STEADY_PPS pkt/s, ~$(awk "BEGIN{printf \"%d\", $flood_s * $STEADY_PPS}")); table bytes before $(jget "$S" table_bytes_before) peak $(jget "$S" table_bytes_peak) after $(jget "$S" table_bytes_after); heap before $(jget "$S" heap_before) peak $(jget "$S" heap_peak) after $(jget "$S" heap_after)"
say "$res"
RESULTS+=("$res")
bad=()
[ "$peak_live" = "$FLOOD_LIMIT" ] || bad+=("peak live $peak_live, want the limit $FLOOD_LIMIT")
[ "$rej" -gt 0 ] || bad+=("no full rejections")
[ "$during" -gt 0 ] || bad+=("the steady flow got nothing through during the flood")
[ "$steady_sent" != "?" ] && [ $((watched * 100)) -ge $((steady_sent * 95)) ] ||
	bad+=("the steady flow lost packets: $watched of $steady_sent arrived")
[ "$(jget "$S" table_bytes_after)" -lt "$(jget "$S" table_bytes_peak)" ] || bad+=("table memory not given back")
[ "$(jget "$S" heap_after)" -lt "$(jget "$S" heap_peak)" ] || bad+=("heap not given back")
[ "$(jget "$S" live)" = 0 ] || bad+=("$(jget "$S" live) flows still live after the drain")
if ((${#bad[@]})); then
	for b in "${bad[@]}"; do say "FAIL flood: $b"; done
	FAILS=$((FAILS + 1))
	E2E_KEEP=1
else
	say "ok flood"
fi

say "=== summary"
for r in "${RESULTS[@]}"; do say "$r"; done
if ((${#TOP[@]})); then
	say "=== --topspeed, forwarder packets/s from its first frame read to its last batch (-io=ring vs -io=syscall)"
	{
		echo "capture frames ring_pkt/s syscall_pkt/s ring/syscall ring_drops syscall_drops tcpreplay_pkt/s_(ring) tcpreplay_pkt/s_(syscall)"
		for t in "${TOP[@]}"; do
			set -- $t
			echo "$1 $2 $3 $4 $(awk "BEGIN{printf \"%.2f\", $3 / ($4 > 0 ? $4 : 1)}") $5 $6 $7 $8"
		done
	} | column -t | sed 's/^/e2e: /'
fi
((FAILS == 0)) || die "$FAILS check(s) failed"
say "PASS"
