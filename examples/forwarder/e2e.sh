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
#     forwarder inserted must be exactly the rewritten capture's flows
#     (flowcache.ParseFrame's keys, a key and its reverse one flow, as the
#     forwarder stores a connection's two directions as one pair; each
#     compared as both its keys, since the fanout may give the two
#     directions to two workers, and either may come first), and the
#     sink must receive every frame the
#     forwarder was meant to forward (every IP frame), with no drops.
#     Then each capture once more per path at --topspeed (looped to
#     about $E2E_TOP_FRAMES frames), for the table at the end: the
#     forwarder's packets per second, ring vs syscall. What is checked
#     at top speed is written above replay() below.
# (b) a bounded hping3 SYN flood from random sources at the sink's
#     address, beside a steady UDP flow, once per full policy in
#     $E2E_FLOOD_POLICIES (default "evict drop"). The steady flow is
#     assured (more than 3 packets) before the flood starts; every flood
#     flow is one SYN. With -full-policy=evict the table sits at its limit
#     and keeps admitting flood flows in place of older unassured ones
#     (evictions, no assured flow evicted); with drop it refuses them
#     (rejections). Either way the steady flow keeps every packet and its
#     place in the table (the SIGUSR1 JSON dump shows its packet count
#     running on from before the flood, and its assured bit), /metrics
#     scraped during and after the flood agrees with the forwarder's
#     summary, and the memory comes back once the flood's flows expire.
#
# (c) takeover: a NATS JetStream server (cmd/jetstream, built from the
#     nats-server module go.mod pins) on fwd's loopback, a primary
#     forwarder (-replicate) and a standby (-standby) in fwd. The first
#     half of $E2E_REPL_PCAP goes through the primary; its JSON dump is
#     taken, two more flushes are waited for, and it is killed (SIGKILL)
#     before the second half. The standby is promoted, once by SIGUSR1 and
#     once by the primary's lease lapsing ($E2E_TAKEOVERS), and the second
#     half goes through it. Checked: every assured flow the primary had
#     before its last flush is on the standby with its state and value
#     (and no flow the primary did not have); the standby inserts exactly
#     the second half's flows it did not hold; and every flow's packets at
#     the end are what the standby held plus the second half's frames of
#     that flow: the later packets counted on the flows it took over.
# (d) hitless restart: the same halves through one forwarder with
#     -snapshot, stopped (SIGTERM) after the first and started again: the
#     restored table is the dump before the stop, flow for flow (keys,
#     state, packets, bytes), and the second half counts on it as in (c).
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
# (5), E2E_FLOOD_LIMIT (20000), E2E_FLOOD_POLICIES ("evict drop"; the
# floods to run, in order), E2E_FLOOD_RING_BLOCKS (512: rings that hold a
# whole flood; 128, the default, to see the forwarder fall behind),
# E2E_FLOOD_HEAP_BOUND (2.5: the most the evicting flood's peak heap in
# use may be, in multiples of the same flood's against a table that
# refuses at its limit),
# E2E_PCAPS (capture folder), E2E_FWD_FLAGS
# (more forwarder flags for the replays, e.g. "-ring-blocks 2" to try the
# top-speed checks under drops), E2E_KEEP=1 (keep the work folder),
# E2E_PARTS (the sections to run, default "captures flood takeover
# restart"), E2E_REPL_PCAP (the capture of (c) and (d), default
# cerber-lab.pcapng), E2E_TAKEOVERS ("signal lease": how (c) promotes,
# once each). It takes about three minutes on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PCAPS=${E2E_PCAPS:-$ROOT/../shared/data/pcap}
PPS=${E2E_PPS:-50000}
FLOOD_SECONDS=${E2E_FLOOD_SECONDS:-5}
FLOOD_LIMIT=${E2E_FLOOD_LIMIT:-20000}
read -ra FLOOD_POLICIES <<<"${E2E_FLOOD_POLICIES:-evict drop}"
FLOOD_RING_BLOCKS=${E2E_FLOOD_RING_BLOCKS:-512}
FLOOD_HEAP_BOUND=${E2E_FLOOD_HEAP_BOUND:-2.5}
TOPSPEED=${E2E_TOPSPEED:-1}
TOP_FRAMES=${E2E_TOP_FRAMES:-100000}
read -ra FWD_FLAGS <<<"${E2E_FWD_FLAGS:-}"
read -ra PARTS <<<"${E2E_PARTS:-captures flood takeover restart}"
REPL_PCAP=${E2E_REPL_PCAP:-$PCAPS/cerber-lab.pcapng}
read -ra TAKEOVERS <<<"${E2E_TAKEOVERS:-signal lease}"
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
for t in tcpreplay:tcpreplay tcprewrite:tcpreplay hping3:hping3 nft:nftables ethtool:ethtool timeout:coreutils curl:curl jq:jq; do
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
# Loopback is let in, for the forwarder's -metrics (curl scrapes it from
# inside the namespace).
in_ns "$FWD" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
in_ns "$FWD" nft -f - <<'EOF'
table inet e2e {
	chain forward { type filter hook forward priority 0; policy drop; }
	chain input   { type filter hook input priority 0; policy drop; iif lo accept; }
}
EOF
ip -n "$FWD" link set lo up
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
JSBIN=$WORK/jetstream
(cd "$ROOT" && go build -o "$BIN" ./examples/forwarder && go build -o "$JSBIN" ./examples/forwarder/cmd/jetstream)

# part NAME: whether section NAME is in $E2E_PARTS.
part() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

# jget FILE KEY: a number from the programs' JSON.
jget() { grep -o "\"$2\": *[0-9.e+]*" "$1" | tail -1 | sed 's/.*: *//'; }

FWD_PID='' SINK_PID=''
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
#   * the flows inserted are a subset of the capture's (no key made up;
#     flows are compared as both their keys, since which direction came
#     first depends on drops and on which worker got it), and the SIGUSR1
#     dump holds exactly the flows inserted;
#   * the sink counted every frame forwarded, less what its own socket
#     dropped;
#   * with no drops at all, everything the paced replay checks.
FAILS=0
RESULTS=()
TOP=() # per capture: "name frames ring-pps sys-pps ring-drops sys-drops ring-tcpreplay-pps sys-tcpreplay-pps"

# dump_keys: both keys of every flow in the forwarder's JSON dump, sorted
# bytewise: what -flows-file lists, whichever direction of a flow came
# first.
dump_keys() { jq -r '.Key, (select(.Paired) | .Reply)' "$WORK/dump.json" | LC_ALL=C sort; }

# replay IO RATE: one replay of $replay through the forwarder with -io=IO,
# at RATE pkt/s or "max" (--topspeed); then the checks that rate allows.
# Sets SENT_OUT, PPS_OUT, DROPS_OUT and TRATE_OUT (tcpreplay's rate) for
# the table.
replay() {
	local io=$1 rate=$2
	local tag="$name -io=$io @ $rate"
	start_sink ""
	rm -f "$WORK/dump.json" "$WORK/flows.txt"
	start_fwd -io "$io" -limit 1000000 -ttl 60s -flows-file "$WORK/flows.txt" -dump-file "$WORK/dump.json" -dump-format json ${FWD_FLAGS[@]+"${FWD_FLAGS[@]}"}
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
		[ -s "$WORK/dump.json" ] && [ "$(wc -l <"$WORK/dump.json")" -ge "$live" ] && break
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
	got_flows=$(jget "$S" flows_inserted)
	sink=$(jget "$WORK/sink.json" frames)
	sink_drops=$(jget "$WORK/sink.json" socket_drops)
	PPS_OUT=$(jget "$S" active_pps) DROPS_OUT=$drops TRATE_OUT=$trate SENT_OUT=$sent
	# Every frame that found its flow was counted on it (Entry.Count),
	# before it was sent: the dump's packets add up to what was sent.
	local counted
	counted=$(jq -s 'map(.Packets) | add // 0' "$WORK/dump.json")
	local res
	res="$tag: replayed $sent (failed $failed; $loops× the capture) at $trate pkt/s, forwarder in $in out $out dropped $dropped, socket drops $drops, flows expected $want_flows seen $got_flows, packets counted on flows $counted, sink $sink (drops $sink_drops); $PPS_OUT pkt/s over $(jget "$S" active_seconds) s; table $(jget "$S" table_bytes_peak) B peak; heap before $(jget "$S" heap_before) peak $(jget "$S" heap_peak) after $(jget "$S" heap_after)"
	say "$res"
	RESULTS+=("$res")

	local bad=() strict=1
	[ "$failed" = 0 ] || bad+=("tcpreplay failed to send $failed frames")
	[ "$sent" = "$want_in" ] || bad+=("tcpreplay sent $sent of $want_in")
	[ "$(jget "$S" full_rejections)" = 0 ] || bad+=("full rejections")
	[ "$accounted" = "$in" ] || bad+=("read $in, but forwarded + send errors + dropped + oversize = $accounted")
	[ "$counted" = $((out + $(jget "$S" send_errors))) ] || bad+=("the dump's flows counted $counted packets, the forwarder sent $out")
	if [ "$rate" = max ] && { [ "$drops" != 0 ] || [ "$in" != "$sent" ]; }; then
		strict=0
		local what=socket
		[ "$io" = ring ] && what=ring
		say "$tag: the forwarder fell behind: $drops dropped by its $what, $((sent - in - drops)) lost before it; checking what drops allow"
		[ "$((in + drops))" = "$sent" ] || bad+=("read $in + dropped $drops != sent $sent")
		local extra
		extra=$(comm -13 <(LC_ALL=C sort "$WORK/expected.txt") <(LC_ALL=C sort "$WORK/flows.txt") | wc -l)
		[ "$extra" = 0 ] || bad+=("$extra flow keys inserted that the capture does not have")
		dump_keys | cmp -s - <(LC_ALL=C sort "$WORK/flows.txt") ||
			bad+=("the SIGUSR1 dump is not the flows inserted")
		[ "$((sink + sink_drops))" = "$out" ] || bad+=("sink counted $sink (+ $sink_drops dropped), forwarder sent $out")
	fi
	if ((strict)); then
		[ "$drops" = 0 ] || bad+=("forwarder $io dropped $drops")
		[ "$in" = "$sent" ] || bad+=("forwarder read $in, tcpreplay sent $sent")
		[ "$out" = $((want_fwd * loops)) ] || bad+=("forwarder sent $out, expected $((want_fwd * loops))")
		[ "$dropped" = $((want_drop * loops)) ] || bad+=("forwarder dropped $dropped non-IP/malformed, expected $((want_drop * loops))")
		cmp -s "$WORK/flows.txt" "$WORK/expected.txt" ||
			bad+=("flows differ: $(diff "$WORK/expected.txt" "$WORK/flows.txt" | grep -c '^[<>]' || true) lines (diff $WORK/expected.txt $WORK/flows.txt)")
		dump_keys | cmp -s - <(LC_ALL=C sort "$WORK/expected.txt") ||
			bad+=("the SIGUSR1 dump is not the expected flows")
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
caps=()
part captures && caps=("$PCAPS"/*.pcap "$PCAPS"/*.pcapng)
if part captures && ((${#caps[@]} == 0)); then
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
METRICS=127.0.0.1:9464 # the forwarder's -metrics, on fwd's own loopback
STEADY_KEY="udp $GEN_V4:5000 -> $SINK_V4:5001"
T='table="fin"' # the table label: the table is named after -in

# scrape FILE: /metrics, from inside fwd's namespace.
scrape() {
	in_ns "$FWD" curl -sf --max-time 5 "http://$METRICS/metrics" >"$1" || die "scrape of http://$METRICS/metrics failed"
}
# mget FILE SERIES: one series' value in a scrape, as an integer (the text
# format writes large counts as 1.234567e+06); "?" when it is absent.
mget() { awk -v s="$2" '$1 == s { printf "%.0f\n", $2; found = 1 } END { if (!found) print "?" }' "$1"; }
# mib BYTES: in MiB, one decimal.
mib() { awk -v b="$1" 'BEGIN { if (b !~ /^[0-9]+$/) print "?"; else printf "%.1f MiB\n", b / 1048576 }'; }

# flood POLICY: the steady flow, then the SYN flood beside it, through a
# forwarder with -full-policy=POLICY; then the checks.
flood() {
	local policy=$1
	local tag="flood -full-policy=$policy"
	local steady_pps=100
	local steady_count=$(((FLOOD_SECONDS + 6) * steady_pps))
	local M=$WORK/metrics-$policy
	say "--- $tag: hping3 --flood --rand-source -S -p 80 $SINK_V4 for ${FLOOD_SECONDS}s, limit $FLOOD_LIMIT, ttl 2s"
	rm -f "$WORK/flood-dump.json"
	start_sink "17,$GEN_V4,5000,$SINK_V4,5001"
	# Rings deep enough to hold the whole flood (512 blocks of 256 KiB per
	# worker): on 2 cores shared with hping3 the forwarder may fall
	# behind the flood for a while (at 128 blocks, the default, its rings
	# dropped 10 % of an evict flood, steady packets among them), and
	# what is checked here is what the table does, not how much CPU the
	# forwarder got. The rings' drops are still counted, and must be 0.
	start_fwd -limit "$FLOOD_LIMIT" -ttl 2s -full-policy "$policy" -stats -metrics $METRICS \
		-dump-file "$WORK/flood-dump.json" -dump-format json -ring-blocks "$FLOOD_RING_BLOCKS"
	# The established flow: UDP 198.19.0.1:5000 -> 198.18.0.1:5001, 100
	# pkt/s, from 2 s before the flood to 4 s after; assured by its 4th
	# packet, long before the flood.
	ip netns exec "$GEN" timeout $((FLOOD_SECONDS + 30)) hping3 -q -2 -s 5000 -k -p 5001 -i u10000 -c $steady_count $SINK_V4 \
		>"$WORK/steady.log" 2>&1 &
	local steady_pid=$!
	PIDS+=("$steady_pid")
	sleep 2
	kill -USR1 "$SINK_PID"
	sleep 0.2
	local w0 w1 t0 t1
	w0=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
	scrape "$M-0-before.txt"
	t0=$(date +%s.%N)
	# hping3 ignores -c in flood mode: the timeout is the bound (alone on
	# this machine it sends about 150,000 packets a second).
	in_ns "$GEN" timeout -s INT "$FLOOD_SECONDS" hping3 -q --flood --rand-source -S -p 80 $SINK_V4 >"$WORK/flood.log" 2>&1 &
	local flood_pid=$!
	PIDS+=("$flood_pid")
	# Two scrapes while it runs, 2 s apart, once the table has filled.
	sleep "$(awk -v s="$FLOOD_SECONDS" 'BEGIN { print (s - 2) / 2 }')"
	scrape "$M-1-during.txt"
	sleep 2
	scrape "$M-2-during.txt"
	wait "$flood_pid" || true
	t1=$(date +%s.%N)
	scrape "$M-3-flood-end.txt"
	kill -USR1 "$SINK_PID"
	sleep 0.2
	w1=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
	# Let the forwarder work off what its rings hold (it reads at the
	# steady flow's 100 pkt/s again), before the steady flow stops.
	local pps
	for _ in $(seq 10); do
		sleep 1
		pps=$(jget "$WORK/status.json" pps)
		[ "${pps%.*}" -lt 1000 ] && break
	done
	# The table's dump as soon as the steady flow's last packet has
	# reached the sink (or hping3 has given up): its row says how many
	# packets it carried since it was inserted, and its state. Not after
	# hping3 exits: it waits a second for replies, and a flow's last seen
	# is exact to one pass (1 s here), so with the 2 s TTL the flow may
	# leave as soon as a second after its last packet.
	local seen_now
	for _ in $(seq 400); do
		kill -USR1 "$SINK_PID"
		sleep 0.05
		seen_now=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
		[ "${seen_now:-0}" -ge "$steady_count" ] && break
		kill -0 "$steady_pid" 2>/dev/null || break
	done
	kill -USR1 "$FWD_PID"
	wait "$steady_pid" || true
	for _ in $(seq 50); do
		[ -s "$WORK/flood-dump.json" ] && break
		sleep 0.1
	done
	# Drain: the flood's flows expire after the 2 s TTL, on the next pass.
	for _ in $(seq 20); do
		sleep 1
		[ "$(jget "$WORK/status.json" live)" = 0 ] && break
	done
	# Idle now, the workers still report quiescent states, so the grace
	# periods end and what the passes retired is run and freed: no
	# deferred work stays pending for long (a Reclaimer tick or two).
	sleep 1.5
	for _ in 1 2 3 4; do
		scrape "$M-4-after.txt"
		[ "$(mget "$M-4-after.txt" flowcache_domain_deferred_pending)" = 0 ] && break
		sleep 1
	done
	stop "$FWD_PID"
	sleep 0.3
	stop "$SINK_PID"

	local S=$WORK/summary-flood-$policy.json
	cp "$WORK/summary.json" "$S"
	cp "$WORK/fwd.log" "$WORK/fwd-flood-$policy.log"
	local flood_s during flood_sent steady_sent watched peak_live rej evict
	flood_s=$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")
	during=$((w1 - w0))
	flood_sent=$(grep -o '[0-9]* packets transmitted' "$WORK/flood.log" | grep -o '^[0-9]*' || echo "?")
	steady_sent=$(grep -o '[0-9]* packets transmitted' "$WORK/steady.log" | grep -o '^[0-9]*' || echo "?")
	watched=$(tail -1 "$WORK/sink.json" | grep -o '"watched":[0-9]*' | grep -o '[0-9]*$')
	peak_live=$(jq .peak_live "$S") rej=$(jq .full_rejections "$S") evict=$(jq .evictions "$S")

	# What the flood did, from the scrapes just before and just after it:
	# flows admitted (inserts), evictions (each one an insert into the full
	# table) and refusals; and between the two scrapes during it.
	local m0=$M-0-before.txt m1=$M-1-during.txt m2=$M-2-during.txt m3=$M-3-flood-end.txt m4=$M-4-after.txt
	delta() { echo $(($(mget "$2" "$3{$T}") - $(mget "$1" "$3{$T}"))); } # from to series
	local admitted ev_flood rej_flood at_limit ev_limit live1 live2
	admitted=$(delta "$m0" "$m3" flowcache_inserts_total)
	ev_flood=$(delta "$m0" "$m3" flowcache_evictions_total)
	rej_flood=$(delta "$m0" "$m3" flowcache_full_rejections_total)
	at_limit=$(delta "$m1" "$m2" flowcache_inserts_total)
	ev_limit=$(delta "$m1" "$m2" flowcache_evictions_total)
	live1=$(mget "$m1" "flowcache_flows{$T}") live2=$(mget "$m2" "flowcache_flows{$T}")

	# The steady flow's row in the dump taken after it stopped.
	local row steady_pkts steady_state dumped assured_rows
	row=$(jq -c --arg k "$STEADY_KEY" 'select(.Key == $k)' "$WORK/flood-dump.json" 2>/dev/null || true)
	steady_pkts=$(jq -r '.Packets // "?"' <<<"${row:-null}")
	steady_state=$(jq -r '.State // "?"' <<<"${row:-null}")
	dumped=$(wc -l <"$WORK/flood-dump.json" 2>/dev/null || echo 0)
	assured_rows=$(jq -s '[.[] | select(.State % 2 == 1)] | length' "$WORK/flood-dump.json" 2>/dev/null || echo "?")

	local res
	res="$tag: ${flood_s}s, hping3 sent $flood_sent SYNs; forwarder in $(jq .packets_in "$S") out $(jq .packets_out "$S"), peak $(jq .peak_pps "$S") pkt/s, ring drops $(jq .socket_drops "$S");"
	res+=" limit $FLOOD_LIMIT, peak live $peak_live; during the flood: $admitted flows admitted, $ev_flood evictions, $rej_flood refusals;"
	res+=" between the scrapes during it (flows $live1, then $live2): $at_limit admitted, $ev_limit evictions;"
	res+=" in all: inserted $(jq .flows_inserted "$S"), evicted $evict, refused $rej, dropped (full) $(jq .dropped_full "$S"), forwarded (full) $(jq .forwarded_full "$S"), expired $(jq .removals.expired "$S"), shrinks $(jq .shrinks "$S"), compactions $(jq .compactions "$S") (moved $(jq .moved "$S"));"
	res+=" steady flow: sent $steady_sent, at sink $watched, during the flood $during (~$(awk "BEGIN{printf \"%d\", $flood_s * $steady_pps}") at $steady_pps pkt/s), its row in the dump after: packets $steady_pkts state $steady_state ($assured_rows assured of $dumped flows);"
	res+=" table bytes before $(jq .table_bytes_before "$S") peak $(jq .table_bytes_peak "$S") after $(jq .table_bytes_after "$S");"
	res+=" heap in use added by the flood $(mib $(($(jq .heap_inuse_peak "$S") - $(jq .heap_inuse_before "$S")))), $(awk -v g="$(($(jq .heap_inuse_peak "$S") - $(jq .heap_inuse_before "$S")))" -v t="$(jq .table_bytes_peak "$S")" 'BEGIN { printf "%.2f", g / t }')× the table's peak bytes;"
	res+=" heap in use before $(mib "$(jq .heap_inuse_before "$S")") peak $(mib "$(jq .heap_inuse_peak "$S")") after $(mib "$(jq .heap_inuse_after "$S")")"
	res+=" (objects $(mib "$(jq .heap_before "$S")") / $(mib "$(jq .heap_peak "$S")") / $(mib "$(jq .heap_after "$S")"));"
	res+=" go_memstats_heap_inuse_bytes on /metrics just before the flood $(mib "$(mget "$m0" go_memstats_heap_inuse_bytes)"), at its end $(mib "$(mget "$m3" go_memstats_heap_inuse_bytes)"), after the drain $(mib "$(mget "$m4" go_memstats_heap_inuse_bytes)")"
	say "$res"
	RESULTS+=("$res")

	# /metrics after the drain against the summary written at exit: with
	# no traffic and no flow left to expire, nothing moves in between.
	local pair series field mv sv agree=() mismatch=()
	for pair in "flows:flowcache_flows{$T}:.live" \
		"inserts:flowcache_inserts_total{$T}:.flows_inserted" \
		"evictions:flowcache_evictions_total{$T}:.evictions" \
		"rejections:flowcache_full_rejections_total{$T}:.full_rejections" \
		"expired:flowcache_removals_total{cause=\"expired\",$T}:.removals.expired" \
		"removed:flowcache_removals_total{cause=\"removed\",$T}:.removals.removed" \
		"replaced:flowcache_removals_total{cause=\"replaced\",$T}:.removals.replaced" \
		"evicted:flowcache_removals_total{cause=\"evicted\",$T}:.removals.evicted" \
		"cleared:flowcache_removals_total{cause=\"cleared\",$T}:.removals.cleared"; do
		IFS=: read -r name series field <<<"$pair"
		mv=$(mget "$m4" "$series") sv=$(jq -r "$field" "$S")
		agree+=("$name $mv/$sv")
		[ "$mv" = "$sv" ] || mismatch+=("$series = $mv, summary $field = $sv")
	done
	local mres
	mres="$tag: /metrics after the drain / summary: $(
		IFS=,
		echo "${agree[*]}"
	)"
	say "${mres//,/, }"
	RESULTS+=("${mres//,/, }")

	local bad=()
	for m in "${mismatch[@]}"; do bad+=("/metrics and the summary differ: $m"); done
	[ "$peak_live" = "$FLOOD_LIMIT" ] || bad+=("peak live $peak_live, want the limit $FLOOD_LIMIT")
	[ "$live1" = "$FLOOD_LIMIT" ] && [ "$live2" = "$FLOOD_LIMIT" ] ||
		bad+=("the scrapes during the flood show $live1 and $live2 flows, want the limit $FLOOD_LIMIT")
	[ "$during" -gt 0 ] || bad+=("the steady flow got nothing through during the flood")
	[ "$(jq .socket_drops "$S")" = 0 ] ||
		bad+=("the forwarder's rings dropped $(jq .socket_drops "$S") frames (E2E_FLOOD_RING_BLOCKS=$FLOOD_RING_BLOCKS too few to hold the flood)")
	# Every steady packet arrived, and every one was counted on one flow
	# that stayed in the table throughout: evicted (or refused) and
	# inserted again, it would have counted from 0 again.
	[ "$steady_sent" != "?" ] && [ "$watched" = "$steady_sent" ] ||
		bad+=("the steady flow lost packets: $watched of $steady_sent arrived")
	[ "$steady_pkts" = "$steady_sent" ] ||
		bad+=("the steady flow's row in the dump counts $steady_pkts packets of $steady_sent sent: it left the table")
	[ "$steady_state" = 1 ] || bad+=("the steady flow's state is $steady_state, want 1 (assured)")
	case $policy in
	evict)
		[ "$evict" -gt 0 ] && [ "$ev_flood" -gt 0 ] || bad+=("no evictions ($evict in all, $ev_flood during the flood)")
		# New flows kept getting in while the table sat at its limit.
		[ "$at_limit" -gt 0 ] && [ "$ev_limit" -gt 0 ] ||
			bad+=("no flow admitted at the limit between the scrapes ($at_limit inserts, $ev_limit evictions)")
		;;
	drop)
		[ "$rej" -gt 0 ] || bad+=("no full rejections")
		[ "$evict" = 0 ] || bad+=("$evict evictions without -full-policy=evict")
		;;
	esac
	HEAP_PEAK[$policy]=$(jq .heap_inuse_peak "$S")
	[ "$(jq .table_bytes_after "$S")" -lt "$(jq .table_bytes_peak "$S")" ] || bad+=("table memory not given back")
	[ "$(jq .heap_after "$S")" -lt "$(jq .heap_peak "$S")" ] || bad+=("heap objects not given back")
	[ "$(jq .heap_inuse_after "$S")" -lt "$(jq .heap_inuse_peak "$S")" ] || bad+=("heap in use not given back")
	[ "$(jq .live "$S")" = 0 ] || bad+=("$(jq .live "$S") flows still live after the drain")
	[ "$(mget "$m4" flowcache_domain_deferred_pending)" = 0 ] ||
		bad+=("$(mget "$m4" flowcache_domain_deferred_pending) deferred functions still pending after the drain (lag $(mget "$m4" flowcache_domain_lag_epochs) epochs): a worker holds grace periods back")
	if ((${#bad[@]})); then
		for b in "${bad[@]}"; do say "FAIL $tag: $b"; done
		FAILS=$((FAILS + 1))
		E2E_KEEP=1
	else
		say "ok $tag"
	fi
}

declare -A HEAP_PEAK
if part flood; then
	for policy in "${FLOOD_POLICIES[@]}"; do
		flood "$policy"
	done
fi

# --- (c) takeover, (d) hitless restart --------------------------------------
JS_URL=nats://127.0.0.1:4222 # cmd/jetstream, on fwd's own loopback
JS_PID=''

# start_js: the JetStream server, its store in the work folder.
start_js() {
	rm -rf "$WORK/js"
	mkdir -p "$WORK/js"
	# ip netns exec, not in_ns: a function in the background is a subshell,
	# and the pid that signals must reach is the program's.
	ip netns exec "$FWD" "$JSBIN" -addr 127.0.0.1:4222 -store "$WORK/js" >"$WORK/js.out" 2>"$WORK/js.log" &
	JS_PID=$!
	PIDS+=("$JS_PID")
	for _ in $(seq 100); do
		grep -q '^ready' "$WORK/js.out" 2>/dev/null && return 0
		kill -0 "$JS_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/js.log"
	die "the JetStream server did not start"
}

# start_role NAME FLAGS...: a forwarder whose files are $WORK/NAME-*: its
# status, summary, JSON dump (SIGUSR2, in every role) and the keys its
# workers inserted. Its pid goes to ROLE_PID.
ROLE_PID=''
start_role() {
	local n=$1
	shift
	rm -f "$WORK/$n-status.json" "$WORK/$n-summary.json" "$WORK/$n-dump.json" "$WORK/$n-flows.txt"
	ip netns exec "$FWD" "$BIN" -in fin -out fout -next-hop $SINK_MAC -limit 1000000 -ttl 60s \
		-status "$WORK/$n-status.json" -summary "$WORK/$n-summary.json" \
		-dump-format json -dump-file "$WORK/$n-dump.json" -flows-file "$WORK/$n-flows.txt" "$@" 2>"$WORK/$n.log" &
	ROLE_PID=$!
	PIDS+=("$ROLE_PID")
	for _ in $(seq 100); do
		[ -s "$WORK/$n-status.json" ] && return 0
		kill -0 "$ROLE_PID" 2>/dev/null || break
		sleep 0.1
	done
	cat "$WORK/$n.log"
	die "forwarder $n did not start"
}

# rget NAME EXPR: a field of forwarder NAME's status, with jq.
rget() { jq -r "$2" "$WORK/$1-status.json"; }

# until_status NAME JQ-CONDITION WHAT: until the status file says so (it
# is rewritten once a second), for at most a minute.
until_status() {
	for _ in $(seq 600); do
		[ "$(jq -r "$2" "$WORK/$1-status.json" 2>/dev/null)" = true ] && return 0
		sleep 0.1
	done
	die "forwarder $1: $3 (status: $(cat "$WORK/$1-status.json"))"
}

# dump_to NAME PID OUT: forwarder NAME's JSON dump (SIGUSR2) into OUT.
dump_to() {
	rm -f "$WORK/$1-dump.json"
	kill -USR2 "$2"
	for _ in $(seq 100); do
		# Written to a temporary file and renamed: there means whole.
		[ -e "$WORK/$1-dump.json" ] && { mv "$WORK/$1-dump.json" "$3"; return 0; }
		sleep 0.1
	done
	die "forwarder $1 wrote no dump"
}

# play PCAP NAME: replay PCAP at $PPS and wait until forwarder NAME has
# read every frame. Sets PLAYED.
play() {
	in_ns "$GEN" timeout 300 tcpreplay -i vgen --pps="$PPS" "$1" >"$WORK/tcpreplay.log" 2>&1 ||
		{ cat "$WORK/tcpreplay.log"; die "tcpreplay failed"; }
	PLAYED=$(grep -o 'Successful packets: *[0-9]*' "$WORK/tcpreplay.log" | grep -o '[0-9]*$')
	local cur
	for _ in $(seq 300); do
		cur=$(($(rget "$2" .packets_in) + $(rget "$2" .socket_drops)))
		[ "$cur" -ge "$PLAYED" ] && return 0
		sleep 0.1
	done
	die "forwarder $2 read $cur of $PLAYED frames"
}

# halves: the rewritten capture split into two halves (by frames kept),
# each with its IP frames' keys and counts per key.
halves() {
	local rw=$WORK/repl-rewritten.pcap
	tcprewrite --pnat="0.0.0.0/0:$V4_NET,[::/0]:[$V6_NET]" \
		--enet-smac=$GEN_MAC --enet-dmac=$FIN_MAC --fixcsum \
		-i "$REPL_PCAP" -o "$rw" 2>"$WORK/tcprewrite.log" || { tail "$WORK/tcprewrite.log"; die "tcprewrite failed"; }
	"$BIN" -keys-from "$rw" -max-frame $MAX_FRAME >"$WORK/repl-all.json"
	local kept half
	kept=$(jget "$WORK/repl-all.json" kept)
	half=$((kept / 2))
	"$BIN" -keys-from "$rw" -max-frame $MAX_FRAME -frames "0:$half" -write-filtered "$WORK/half1.pcap" \
		-counts-file "$WORK/half1-counts.txt" >"$WORK/half1.json"
	"$BIN" -keys-from "$rw" -max-frame $MAX_FRAME -frames "$half:" -write-filtered "$WORK/half2.pcap" \
		-counts-file "$WORK/half2-counts.txt" >"$WORK/half2.json"
	say "$(basename "$REPL_PCAP"): $kept frames in two halves: $(jget "$WORK/half1.json" ip_frames) IP frames and $(jget "$WORK/half1.json" flows) flows, then $(jget "$WORK/half2.json" ip_frames) and $(jget "$WORK/half2.json" flows)"
}

# continues TAG HELD END INSERTED COUNTS: the checks that the second half
# counted on the flows held (HELD, the dump before it) instead of making
# new ones: the forwarder inserted exactly the flows of the second half it
# did not hold, both keys of each (INSERTED, its -flows-file), and at the
# end (END, its dump) every flow has the packets it held plus the second
# half's frames of either of its keys. COUNTS has a line per key of the
# second half: the key, its frames, its reverse (the flow's other key: the
# forwarder stores a connection's two directions as one pair). Appends to
# bad.
continues() {
	local tag=$1 held=$2 end=$3 inserted=$4 counts=$5
	local want_new got_new
	want_new=$(jq -rn --slurpfile h "$held" --rawfile c "$counts" '
		($h | map(. as $r | ([.Key] + (if .Paired then [.Reply] else [] end))[] | {key: ., value: true}) | from_entries) as $held
		| $c | split("\n")[] | select(length > 0) | split("\t")
		| select($held[.[0]] == null and $held[.[2]] == null) | .[0], .[2]' | LC_ALL=C sort -u)
	got_new=$(LC_ALL=C sort -u "$inserted")
	[ "$want_new" = "$got_new" ] ||
		bad+=("$tag: inserted $(grep -c . <<<"$got_new") keys, want the $(grep -c . <<<"$want_new") keys of the second half's flows not held; differing: $(diff <(echo "$want_new") <(echo "$got_new") | grep -c '^[<>]' || true)")
	local wrong
	wrong=$(jq -rn --slurpfile h "$held" --slurpfile e "$end" --rawfile c "$counts" '
		def keys2: [.Key] + (if .Paired then [.Reply] else [] end);
		($h | map(. as $r | keys2[] | {key: ., value: $r.Packets}) | from_entries) as $p
		| ($c | split("\n") | map(select(length > 0) | split("\t") | {key: .[0], value: (.[1] | tonumber)}) | from_entries) as $n
		| ($e | map(. as $r | keys2[] | {key: ., value: true}) | from_entries) as $q
		| (($p + $n) | keys[] | select($q[.] == null) | "\(.): gone at the end"),
		  ($e[] | keys2 as $ks
		   | ([$ks[] | $p[.] // empty] | first // 0) as $was
		   | ([$ks[] | $n[.] // 0] | add) as $more
		   | select(.Packets != $was + $more)
		   | "\(.Key): \(.Packets) packets, want \($was) held + \($more) in the second half")')
	[ -z "$wrong" ] || bad+=("$tag: $(grep -c . <<<"$wrong") flows do not add up, e.g. $(head -3 <<<"$wrong" | tr '\n' ';')")
}

# verdict TAG: ok or FAIL with what is in bad.
verdict() {
	if ((${#bad[@]})); then
		for b in "${bad[@]}"; do say "FAIL $1: $b"; done
		FAILS=$((FAILS + 1))
		E2E_KEEP=1
	else
		say "ok $1"
	fi
}

# takeover HOW: (c), the standby promoted by HOW (signal or lease).
takeover() {
	local how=$1
	local tag="takeover by $how"
	say "--- $tag: $(basename "$REPL_PCAP"), half through the primary, the primary killed, half through the standby"
	start_js
	start_sink ""
	start_role primary -replicate "$JS_URL" -lease-ttl 2s
	local primary=$ROLE_PID
	start_role standby -standby "$JS_URL" -lease-ttl 2s
	local standby=$ROLE_PID
	until_status standby '.replication.caught_up' "did not catch up"
	play "$WORK/half1.pcap" primary
	local sent1=$PLAYED
	# The flows the primary has now; then two more flushes, so that its
	# last flush came after them, and the primary dies (mid-replay: the
	# second half is still to come).
	dump_to primary "$primary" "$WORK/$how-primary.json"
	local f0
	f0=$(rget primary .replication.flushes)
	until_status primary ".replication.flushes >= $f0 + 2" "no flush after the dump"
	cp "$WORK/primary-status.json" "$WORK/$how-primary-status.json"
	kill -KILL "$primary"
	wait "$primary" 2>/dev/null || true
	local t0 t1
	t0=$(date +%s.%N)
	[ "$how" = signal ] && kill -USR1 "$standby"
	until_status standby '.replication.role == "primary"' "not promoted"
	t1=$(date +%s.%N)
	dump_to standby "$standby" "$WORK/$how-held.json"
	play "$WORK/half2.pcap" standby
	local sent2=$PLAYED
	sleep 1.2 # one more status: the counters after the last frame
	dump_to standby "$standby" "$WORK/$how-end.json"
	stop "$standby"
	sleep 0.3
	stop "$SINK_PID"
	kill -TERM "$JS_PID"
	wait "$JS_PID" || true

	local S=$WORK/standby-summary.json P=$WORK/$how-primary-status.json
	local assured held epoch0 epoch1 sink out1 out2
	assured=$(jq -s '[.[] | select(.State % 2 == 1)] | length' "$WORK/$how-primary.json")
	held=$(wc -l <"$WORK/$how-held.json")
	epoch0=$(jq .replication.epoch "$P") epoch1=$(jq .replication.epoch "$S")
	out1=$(jq .packets_out "$P") out2=$(jq .packets_out "$S")
	sink=$(jget "$WORK/sink.json" frames)
	local res
	res="$tag: primary forwarded $out1 of $sent1 frames, had $(wc -l <"$WORK/$how-primary.json") flows ($assured assured) at its dump, published $(jq .replication.published "$P") records ($(jq .replication.wire_bytes "$P") bytes, $(jq .replication.filtered "$P") filtered) in $(jq .replication.flushes "$P") flushes;"
	res+=" standby: $(jq -r .replication.applied "$S") records applied, promoted by $(jq -r .replication.promoted_by "$S") at epoch $epoch1 (primary's $epoch0) in $(jq .replication.promote_ms "$S") ms, forwarding $(jq .replication.forwarding_ms "$S") ms after the decision ($(awk "BEGIN{printf \"%.2f\", $t1 - $t0}") s from the kill to the status saying so, status written once a second), holding $held flows;"
	res+=" then forwarded $out2 of $sent2 frames, inserted $(wc -l <"$WORK/standby-flows.txt") flows; sink $sink"
	say "$res"
	RESULTS+=("$res")

	bad=()
	[ "$out1" = "$(jq .packets_in "$P")" ] && [ "$(jq .socket_drops "$P")" = 0 ] || bad+=("the primary did not forward every frame it read")
	[ "$epoch1" = $((epoch0 + 1)) ] || bad+=("promoted at epoch $epoch1, want $((epoch0 + 1))")
	[ "$(jq -r .replication.promoted_by "$S")" = "$how" ] || bad+=("promoted by $(jq -r .replication.promoted_by "$S"), want $how")
	[ "$assured" -gt 0 ] || bad+=("no assured flow in the first half: nothing to check")
	local missing
	missing=$(jq -rn --slurpfile p "$WORK/$how-primary.json" --slurpfile s "$WORK/$how-held.json" '
		($s | map({key: .Key, value: .}) | from_entries) as $sb
		| ($p | map({key: .Key, value: .}) | from_entries) as $pr
		| ($p[] | select(.State % 2 == 1)
		   | select($sb[.Key] == null or $sb[.Key].State != .State or $sb[.Key].Value != .Value or $sb[.Key].Packets > .Packets)
		   | "\(.Key) state \(.State) packets \(.Packets): standby has \($sb[.Key] | tostring)"),
		  ($s[] | select($pr[.Key] == null) | "\(.Key): on the standby, never on the primary")')
	[ -z "$missing" ] || bad+=("$(grep -c . <<<"$missing") flows differ between the primary before its last flush and the standby, e.g. $(head -3 <<<"$missing" | tr '\n' ';')")
	continues "$tag" "$WORK/$how-held.json" "$WORK/$how-end.json" "$WORK/standby-flows.txt" "$WORK/half2-counts.txt"
	[ "$out2" = "$sent2" ] || bad+=("the standby forwarded $out2 of the second half's $sent2 frames")
	[ "$sink" = $((out1 + out2)) ] || bad+=("sink counted $sink, the forwarders sent $out1 + $out2")
	verdict "$tag"
}

# restart: (d), one forwarder stopped and started again with -snapshot.
restart() {
	local tag="restart with -snapshot"
	local snap=$WORK/flows.snap
	say "--- $tag: $(basename "$REPL_PCAP"), half, SIGTERM, start again, half"
	rm -f "$snap"
	start_sink ""
	start_role before -snapshot "$snap"
	local pid=$ROLE_PID
	play "$WORK/half1.pcap" before
	local sent1=$PLAYED
	dump_to before "$pid" "$WORK/restart-before.json"
	stop "$pid"
	start_role after -snapshot "$snap"
	pid=$ROLE_PID
	dump_to after "$pid" "$WORK/restart-held.json"
	play "$WORK/half2.pcap" after
	local sent2=$PLAYED
	sleep 1.2
	dump_to after "$pid" "$WORK/restart-end.json"
	stop "$pid"
	sleep 0.3
	stop "$SINK_PID"

	local B=$WORK/before-summary.json A=$WORK/after-summary.json
	local res
	res="$tag: forwarded $(jq .packets_out "$B") of $sent1 frames, $(wc -l <"$WORK/restart-before.json") flows; snapshot $(jq .snapshot.written "$B") flows, $(jq .snapshot.bytes "$B") bytes, written in $(jq .snapshot.write_ms "$B") ms;"
	res+=" restored $(jq .snapshot.restored "$A") flows in $(jq .snapshot.restore_ms "$A") ms; then forwarded $(jq .packets_out "$A") of $sent2 frames, inserted $(wc -l <"$WORK/after-flows.txt") flows"
	say "$res"
	RESULTS+=("$res")

	bad=()
	[ "$(jq .snapshot.written "$B")" = "$(wc -l <"$WORK/restart-before.json")" ] || bad+=("the snapshot holds $(jq .snapshot.written "$B") flows, the dump before the stop $(wc -l <"$WORK/restart-before.json")")
	[ "$(jq .snapshot.restored "$A")" = "$(jq .snapshot.written "$B")" ] || bad+=("restored $(jq .snapshot.restored "$A") of $(jq .snapshot.written "$B") flows ($(jq -r .snapshot.restore_error "$A"))")
	[ ! -e "$snap" ] || [ "$(jq .snapshot.written "$A")" -gt 0 ] || bad+=("the snapshot was not removed once restored")
	# Flow for flow, what the table held before the stop: every field
	# but the last-seen time (restored as the same idle time, from the
	# restart on) and the hit estimate.
	local diffs
	diffs=$(diff <(jq -c 'del(.LastSeen, .Hits)' "$WORK/restart-before.json") <(jq -c 'del(.LastSeen, .Hits)' "$WORK/restart-held.json") | grep -c '^[<>]' || true)
	[ "$diffs" = 0 ] || bad+=("the restored table differs from the one before the stop: $diffs lines (diff the two dumps in $WORK)")
	continues "$tag" "$WORK/restart-held.json" "$WORK/restart-end.json" "$WORK/after-flows.txt" "$WORK/half2-counts.txt"
	verdict "$tag"
}

if part takeover || part restart; then
	if [ -f "$REPL_PCAP" ]; then
		halves
		if part takeover; then
			for how in "${TAKEOVERS[@]}"; do takeover "$how"; done
		fi
		part restart && restart
	else
		say "SKIP (c), (d): no capture $REPL_PCAP"
	fi
fi

# The evicting flood's garbage is bounded whatever the Reclaimer's period
# (issue 16: it added 201 MiB to a 3.7 MiB table). Against the same flood
# with -full-policy=drop — a full table that refuses instead of evicting,
# so the flood's packets cost the process what they cost, but the table
# turns nothing over — its peak heap in use stays within
# E2E_FLOOD_HEAP_BOUND times.
if [ -n "${HEAP_PEAK[evict]:-}" ] && [ -n "${HEAP_PEAK[drop]:-}" ]; then
	ratio=$(awk -v e="${HEAP_PEAK[evict]}" -v d="${HEAP_PEAK[drop]}" 'BEGIN { printf "%.2f", e / d }')
	res="flood heap: peak heap in use $(mib "${HEAP_PEAK[evict]}") evicting against $(mib "${HEAP_PEAK[drop]}") with the full table refusing: ${ratio}× (bound ${FLOOD_HEAP_BOUND}×)"
	say "$res"
	RESULTS+=("$res")
	if awk -v r="$ratio" -v b="$FLOOD_HEAP_BOUND" 'BEGIN { exit !(r > b) }'; then
		say "FAIL flood heap: ${ratio}× over the bound ${FLOOD_HEAP_BOUND}×"
		FAILS=$((FAILS + 1))
	fi
else
	say "flood heap: not checked (needs both policies in E2E_FLOOD_POLICIES)"
fi

say "=== summary"
for r in "${RESULTS[@]}"; do say "$r"; done
if ((${#TOP[@]})); then
	say "=== --topspeed, forwarder packets/s from its first frame read to its last batch (-io=ring vs -io=syscall)"
	{
		echo "capture frames ring_pkt/s syscall_pkt/s ring/syscall ring_drops syscall_drops tcpreplay_pkt/s_(ring) tcpreplay_pkt/s_(syscall)"
		for t in "${TOP[@]}"; do
			# shellcheck disable=SC2086 # the fields, split on purpose
			set -- $t
			echo "$1 $2 $3 $4 $(awk "BEGIN{printf \"%.2f\", $3 / ($4 > 0 ? $4 : 1)}") $5 $6 $7 $8"
		done
	} | column -t | sed 's/^/e2e: /'
fi
((FAILS == 0)) || die "$FAILS check(s) failed"
say "PASS"
