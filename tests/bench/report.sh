#!/usr/bin/env bash
# Regenerates the README's benchmark table and latency plot from one cqrs_bench run:
#
#   bash tests/bench/report.sh            # builds Release, runs --workload all (~5 min)
#   bash tests/bench/report.sh FILE       # uses a saved cqrs_bench output instead
#
# Writes tests/bench/results/bench.txt (the raw W lines), tests/bench/results/latency.png
# (gnuplot: p50/p99 next to the floor measured in the same run) and rewrites the table between
# the `bench:begin` / `bench:end` markers of README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Checked first: the plot needs it, and the benchmark run before the plot takes minutes.
command -v gnuplot >/dev/null || { echo "report.sh: install gnuplot-nox (apt-get install gnuplot-nox)" >&2; exit 1; }
out=tests/bench/results
mkdir -p "$out"
if [ $# -ge 1 ]; then
  grep '^W[1-5] ' "$1" >"$out/bench.txt"
else
  cmake --preset release >/dev/null
  cmake --build --preset release --target cqrs_bench
  build/release/tests/bench/cqrs_bench --workload all | tee /dev/stderr | grep '^W[1-5] ' \
    >"$out/bench.txt"
fi

python3 - "$out/bench.txt" "$out/latency.dat" README.md <<'EOF'
import re, sys
lines, dat, readme = sys.argv[1], sys.argv[2], sys.argv[3]
runs = []
for line in open(lines):
    name, *pairs = line.split()
    kv = dict(p.split("=", 1) for p in pairs if "=" in p)
    runs.append((name, kv))

def num(kv, key, fmt="{:,.0f}"):
    return fmt.format(float(kv[key])) if key in kv else "–"

rows, plot = [], []
for name, kv in runs:
    if name == "W1":
        label = "W1 pin=" + kv.get("pin", "?")
        rows.append((label, f"p50 {num(kv,'rtt_p50_us','{:.1f}')} µs, p99 {num(kv,'rtt_p99_us','{:.1f}')} µs",
                     f"p50 {num(kv,'floor_p50_us','{:.1f}')} µs, p99 {num(kv,'floor_p99_us','{:.1f}')} µs; "
                     f"Asio on both ends p50 {num(kv,'asio_floor_p50_us','{:.1f}')} µs "
                     f"({num(kv,'asio_floor_vs_floor','{:.2f}')}×)",
                     f"p50 {num(kv,'p50_vs_floor','{:.2f}')}×, p99 {num(kv,'p99_vs_floor','{:.2f}')}×; "
                     f"p50 {num(kv,'p50_vs_asio_floor','{:.2f}')}× the Asio floor",
                     "p50 ≤ 1.1×, p99 ≤ 1.2×" if kv.get("pin") == "split" else "(software cost; no target)"))
        plot.append((label.replace(" ", "\\n"), kv.get("rtt_p50_us"), kv.get("rtt_p99_us"),
                     kv.get("floor_p50_us"), kv.get("floor_p99_us")))
    elif name == "W2":
        rows.append(("W2", f"{num(kv,'rps')} commands/s, p50 {num(kv,'rtt_p50_us','{:.0f}')} µs",
                     f"{num(kv,'floor_rps')} /s", f"{num(kv,'rps_vs_floor','{:.3f}')}×", "≥ 700,000 /s"))
    elif name == "W3":
        mode = kv.get("mode", "?")
        rows.append((f"W3 {mode}", f"{num(kv,'deliveries_per_s')} deliveries/s, e2e p50 "
                     f"{num(kv,'e2e_p50_us','{:.0f}')} µs, p99 {num(kv,'e2e_p99_us','{:.0f}')} µs, "
                     f"lost {kv.get('lost','?')}, duplicated {kv.get('duplicated','?')}", "", "",
                     "p50 ≤ 200 µs, p99 ≤ 1 ms, 0 lost" if mode == "paced" else "≥ 2,000,000 /s, 0 lost"))
        if mode == "paced":
            plot.append(("W3\\npaced e2e", kv.get("e2e_p50_us"), kv.get("e2e_p99_us"), None, None))
    elif name == "W4":
        rows.append(("W4", f"{num(kv,'kib_per_subscriber','{:.2f}')} KiB per idle subscriber, "
                     f"connected in {num(kv,'connect_s','{:.2f}')} s", "", "", "≤ 8 KiB"))
    elif name == "W5":
        rows.append(("W5", f"{num(kv,'rps')} commands/s with 10 stalled subscribers, peak RSS "
                     f"{num(kv,'peak_rss_mib','{:.0f}')} MiB", "", f"{num(kv,'rps_vs_w2','{:.2f}')}× W2",
                     "≥ 0.9× W2"))

with open(dat, "w") as f:
    for label, p50, p99, fp50, fp99 in plot:
        f.write(f'"{label}" {p50 or "NaN"} {p99 or "NaN"} {fp50 or "NaN"} {fp99 or "NaN"}\n')

table = ["| workload | result | floor (same run) | ratio | target |", "|---|---|---|---|---|"]
table += ["| " + " | ".join(r) + " |" for r in rows]
text = open(readme).read()
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + begin + "\n" + "\n".join(table) + "\n" + end + tail
    open(readme, "w").write(text)
print("\n".join(table))
EOF

gnuplot <<EOF
set terminal pngcairo size 900,500 font "DejaVu Sans,10" noenhanced
set bmargin 5
set output "$out/latency.png"
set title "cqrs_bench latency (µs, log scale): cqrs-cpp next to the floor measured in the same run"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set yrange [1:*]
set grid ytics
set key top left
set ylabel "microseconds"
plot "$out/latency.dat" using 2:xtic(1) title "p50" lc rgb "#2a6fdb", \
     "" using 3 title "p99" lc rgb "#8fb3f0", \
     "" using 4 title "floor p50" lc rgb "#555555", \
     "" using 5 title "floor p99" lc rgb "#aaaaaa"
EOF
echo "report.sh: wrote $out/bench.txt, $out/latency.png and the README table"
