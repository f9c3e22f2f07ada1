"""`pfrl bench sandbox`: program x test executions per second through the sandbox vs bare.

The same synthetic programs (reference solutions of the code task, so every test should pass) run
three ways on the same pool size:
  bare      one plain subprocess per program calling the function on every input: no isolation,
            no limits, no fork per test (the floor of what executing them costs)
  harness   pfrl's harness without isolation (backend none): adds a forked child per test + limits
  sandbox   the configured backend (auto: bwrap here)
Figures are printed, never asserted; the ratio is sandbox throughput / bare throughput.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from pfrl.bench.report import add_json_argument, write_json
from pfrl.commands import add_config_args

BARE_RUNNER = (
    "import json, sys\n"
    "job = json.load(sys.stdin)\n"
    "scope = {}\n"
    "exec(job['program'], scope)\n"
    "fn = scope[job['entry_point']]\n"
    "print(json.dumps([json.dumps(fn(*json.loads(a))) for a in job['inputs']]))\n"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--programs", type=int, default=40, help="Programs to run (default 40).")
    parser.add_argument("--tests", type=int, default=10, help="Tests per program (default 10).")
    parser.add_argument("--workers", type=int, help="Pool size (default: labeller.sandbox.workers).")
    parser.add_argument(
        "--backend", choices=["auto", "bwrap", "unshare", "none"], help="Sandbox backend to measure."
    )
    add_config_args(parser, "YAML config (its labeller.sandbox section applies).")
    add_json_argument(parser)


def _jobs(n_programs: int, n_tests: int):
    from pfrl.feedback.code import extract_program
    from pfrl.feedback.sandbox import SandboxJob
    from pfrl.tasks.synthetic_code import CodeDifficulty, generate

    pairs = generate(n_programs, seed=0, difficulty=CodeDifficulty(num_tests=n_tests))
    return [
        SandboxJob(extract_program(sol), p.test_inputs, p.entry_point, p.test_outputs) for p, sol in pairs
    ]


def _run_bare(python: str, jobs, workers: int) -> int:
    """Executions whose output matched, running every job in a plain subprocess."""
    from pfrl.feedback.code import outputs_match

    def one(job) -> int:
        payload = json.dumps(
            {"program": job.program, "entry_point": job.entry_point, "inputs": job.test_inputs}
        )
        done = subprocess.run(
            [python, "-c", BARE_RUNNER], input=payload, capture_output=True, text=True, check=True
        )
        outs = json.loads(done.stdout)
        return sum(outputs_match(o, e, True) for o, e in zip(outs, job.expected, strict=True))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(one, jobs))


def _run_sandbox(cfg, jobs) -> tuple[int, str]:
    from pfrl.feedback.sandbox import Sandbox, TestStatus

    with Sandbox(cfg) as sandbox:
        results = sandbox.run_many(jobs)
        return sum(r.status is TestStatus.PASSED for rs in results for r in rs), sandbox.backend


def _timed(fn, *args):
    start = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - start


def run(args: argparse.Namespace) -> int:
    from pfrl.config import load_config
    from pfrl.feedback.isolation import base_python
    from pfrl.feedback.sandbox import SandboxUnavailable

    overrides = list(args.overrides)
    if args.workers is not None:
        overrides.append(f"labeller.sandbox.workers={args.workers}")
    if args.backend is not None:
        overrides.append(f"labeller.sandbox.backend={args.backend}")
    cfg = load_config(args.config, overrides).labeller.sandbox
    jobs = _jobs(args.programs, args.tests)
    total = sum(len(j.test_inputs) for j in jobs)
    bare_ok, bare_s = _timed(_run_bare, base_python(cfg), jobs, cfg.workers)
    rows = [("bare", bare_ok, bare_s)]
    try:
        (harness_ok, _), harness_s = _timed(_run_sandbox, cfg.model_copy(update={"backend": "none"}), jobs)
        rows.append(("harness (none)", harness_ok, harness_s))
    except SandboxUnavailable as e:  # e.g. as root with an interpreter the dropped uid cannot read
        print(f"  harness (none) not measured: {e}")
    (sandbox_ok, backend), sandbox_s = _timed(_run_sandbox, cfg, jobs)
    rows.append((f"sandbox ({backend})", sandbox_ok, sandbox_s))
    print(
        f"sandbox bench: {args.programs} programs x {args.tests} tests = {total} executions, {cfg.workers} workers"
    )
    for name, ok, secs in rows:
        print(f"  {name:<18} {total / secs:8.1f} exec/s  {secs:7.2f}s  passed {ok}/{total}")
    print(f"  throughput ratio sandbox/bare: {bare_s / sandbox_s:.3f}")
    figures = {"programs": args.programs, "tests": args.tests, "workers": cfg.workers, "backend": backend,
               "executions": total, "sandbox_vs_bare": bare_s / sandbox_s}
    for name, ok, secs in rows:
        key = name.split(" ")[0]  # bare, harness, sandbox
        figures |= {f"{key}_exec_per_s": total / secs, f"{key}_passed": ok}
    write_json(args.json_out, "sandbox", figures)
    return 0
