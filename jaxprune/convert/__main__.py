"""python -m jaxprune.convert --hf <hub-id|dir|file.gguf> --out <dir> [--dtype bfloat16]

Writes an orbax checkpoint that `jaxprune` loads without transformers or torch (GGUF input still needs them).
"""

from __future__ import annotations

import argparse
import sys

from jaxprune.convert.hf import CheckpointError, load_model, save_orbax


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxprune.convert", description=__doc__.splitlines()[0])
  parser.add_argument("--hf", required=True, help="hub id, preset name, HF safetensors directory or .gguf file")
  parser.add_argument("--out", required=True, help="output directory for the orbax checkpoint")
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
  args = parser.parse_args(argv)
  try:
    loaded = load_model(args.hf, dtype=args.dtype)
    out = save_orbax(loaded, args.out)
  except (CheckpointError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {loaded.family.name} checkpoint ({args.dtype}) to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
