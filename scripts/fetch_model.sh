#!/usr/bin/env bash
# Downloads stories260K (karpathy's tinyllamas, MIT) into ./models/stories260K,
# for machines without ../shared/models. Needs network access.
set -euo pipefail
cd "$(dirname "$0")/.."
base=https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K
mkdir -p models/stories260K
for f in stories260K.bin tok512.bin; do
  curl -fL --retry 3 -o "models/stories260K/$f" "$base/$f"
done
echo "fetched models/stories260K; now run: bash scripts/run.sh"
