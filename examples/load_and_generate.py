"""Load the embedded default model, describe it, and continue a prompt.

Usage: python examples/load_and_generate.py ["your prompt"]
"""

import sys

import blockgen


def main() -> None:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "Give three tips for writing a clear report."
    lm = blockgen.load("default")
    cfg = lm.config
    print(f"{lm.name}: {cfg.architecture}, {cfg.num_layers} layers, on {lm.device} ({lm.load_seconds:.1f}s to load)")
    print(f"family: {lm.family}")
    print(lm.generate(prompt, chat=True, max_new_tokens=80))


if __name__ == "__main__":
    main()
