#!/usr/bin/env bash
# `wfrun embed` end to end (decode + network, on a folder of JPEG photographs)
# beside PyTorch doing the same (torchvision ImageFolder + DataLoader with 2
# workers, scripts/embed_folder_torch.py), alternating round by round. Prints
# one JSON line per run (with peak memory, kB, children included), then
# medians and ratios.
#
#   PY=$HOME/.peer-venv/bin/python scripts/bench_embed_files.sh [OUT.jsonl]
#
# ROUNDS (3), COUNT (512 images), MODELS, SIZES and THREADS narrow or widen it.
# Keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
OUT=${1:-bench-embed-files.jsonl}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-512}
MODELS=${MODELS:-resnet101 resnext50 bninception}
SIZES=${SIZES:-64}
THREADS=${THREADS:-2 1}
WORK=target/bench-embed
cargo build --release --quiet
WFRUN=$PWD/target/release/wfrun
mkdir -p "$WORK"
[ -d "$WORK/photos" ] || "$PY" scripts/make_photo_folder.py "$WORK/photos" "$COUNT"
: > "$OUT"

template() {
    case $1 in
        resnet101) echo Clarifai_ResNet_AngularMargin ;;
        resnext50) echo Clarifai_ResNext ;;
        bninception) echo Clarifai_InceptionBatchNorm ;;
    esac
}

# A run of each template at each size to embed with: one short epoch on
# eight of the photographs (the weights do not change the speed).
mkdir -p "$WORK/train/a" "$WORK/train/b"
for i in 0 1 2 3; do
    cp "$WORK/photos/photo0/$(printf %05d $((i * 2))).jpg" "$WORK/train/a/"
    cp "$WORK/photos/photo1/$(printf %05d $((i * 2 + 1))).jpg" "$WORK/train/b/"
done
for m in $MODELS; do
    for s in $SIZES; do
        run="$WORK/runs/$m-$s"
        [ -f "$run/model.safetensors" ] && continue
        cat > "$WORK/$m-$s.wf" <<WF
workflow ${m}_$s
use $(template "$m") { image_size = $s  batch_size = 4  num_epochs = 1  init_epochs = 1  step_epochs = 1 }
data { train = "train"  eval = 0.25 }
output = "runs/$m-$s"
WF
        "$WFRUN" --fresh "$WORK/$m-$s.wf" > /dev/null 2>&1
    done
done

peak() { /usr/bin/time -f "%M" "$@" 2> /tmp/bench-embed-time; tail -1 /tmp/bench-embed-time; }

for r in $(seq "$ROUNDS"); do
    for m in $MODELS; do
        peer=$m
        [ "$m" = resnext50 ] && peer=resnext50_32x4d
        for s in $SIZES; do
            for t in $THREADS; do
                start=$(date +%s.%N)
                kb=$(RAYON_NUM_THREADS=$t peak "$WFRUN" embed "$WORK/runs/$m-$s" "$WORK/photos" -o "$WORK/out.safetensors" --format json | tail -1)
                end=$(date +%s.%N)
                echo "{\"framework\":\"wfrun\",\"round\":$r,\"model\":\"$m\",\"image_size\":$s,\"threads\":$t,\"images\":$COUNT,\"seconds\":$(awk "BEGIN { printf \"%.3f\", $end - $start }"),\"peak_kb\":$kb}" | tee -a "$OUT"
                line=$(OMP_WAIT_POLICY=PASSIVE /usr/bin/time -f "%M" "$PY" scripts/embed_folder_torch.py "$WORK/photos" --model "$peer" --image-size "$s" --threads "$t" 2> /tmp/bench-embed-time)
                kb=$(tail -1 /tmp/bench-embed-time)
                echo "$line" | "$PY" -c "import json,sys; d=json.load(sys.stdin); d.update(round=$r, model='$m', peak_kb=$kb); print(json.dumps(d))" | tee -a "$OUT"
            done
        done
    done
done

"$PY" - "$OUT" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cases = sorted({(r["model"], r["image_size"], r["threads"]) for r in rows})
print(f"\n{'model':12} {'size':>4} {'thr':>3} {'wfrun img/s':>11} {'torch img/s':>11} {'ratio':>6} {'wfrun MB':>8} {'torch MB':>8}")
for m, s, t in cases:
    def med(fw, key):
        vals = [r[key] for r in rows if (r["model"], r["image_size"], r["threads"], r["framework"]) == (m, s, t, fw)]
        return statistics.median(vals) if vals else float("nan")
    w = med("wfrun", "images") / med("wfrun", "seconds")
    p = med("pytorch", "images_per_s")
    print(f"{m:12} {s:>4} {t:>3} {w:>11.1f} {p:>11.1f} {w / p:>6.2f} {med('wfrun', 'peak_kb') / 1024:>8.0f} {med('pytorch', 'peak_kb') / 1024:>8.0f}")
PYEOF
