"""python -m jaxprune.convert --hf <hub-id|dir|file.gguf> --out <dir> [--dtype bfloat16]

Writes an orbax checkpoint that `jaxprune` loads without transformers or torch (GGUF input still needs them).
`--out` must be new, empty, or an earlier conversion of the same source: anything else is never overwritten.
"""

from __future__ import annotations

import argparse
import sys

DTYPES = ("bfloat16", "float32", "float16")


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line (exit 2), not the usage block and then the message
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  """Flags, checked before jax loads (a bad flag answers at once)."""
  parser = _Parser(prog="python -m jaxprune.convert", description=__doc__.splitlines()[0])
  parser.add_argument("--hf", required=True, help="hub id, preset name, HF safetensors directory or .gguf file")
  parser.add_argument("--out", required=True,
                      help="output directory for the orbax checkpoint: new, empty, or an earlier conversion of the "
                           "same source")
  parser.add_argument("--dtype", default="bfloat16", choices=DTYPES)
  args = parser.parse_args(argv)
  for flag in ("hf", "out"):
    if not getattr(args, flag).strip():  # Path("") is the working directory
      parser.error(f"argument --{flag}: empty")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  from jaxprune.convert.hf import CheckpointError, check_out_dir, load_model, resolve, save_orbax, source_id
  try:
    source = source_id(resolve(args.hf))
    try:
      check_out_dir(args.out, source)  # before the (possibly long) load
    except CheckpointError as e:
      raise CheckpointError(f"--out {e}") from None
    loaded = load_model(args.hf, dtype=args.dtype)
    out = save_orbax(loaded, args.out)
  except (CheckpointError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {loaded.family.name} checkpoint ({args.dtype}) to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
