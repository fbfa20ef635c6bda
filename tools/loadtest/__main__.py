"""Load-test a stack's endpoints in steps of concurrency, over REST and gRPC.

    python -m tools.loadtest --stack dev [--protocol rest|grpc|both] [--model resnet ...]
        [--concurrency 1,2,4,8,16,32] [--step-seconds 30] [--step-requests 5000]
        [--p99-target-ms N] [--inputs '{"x": [[1.0], [2.0]]}' | --inputs @request.json]
        [--outputs FILE] [--rest-url URL] [--grpc-url HOST:PORT [--grpc-plaintext]] [--out DIR]

Each step runs N closed-loop users (each sends a Predict and waits for its answer) until the
step has --step-requests finished requests or --step-seconds have passed, and reports the
throughput, latency p50/p90/p99/p99.9 of successful requests and the error rate; the knee is
the first step whose p99 is above the target (--p99-target-ms, default the stack's
monitoring.thresholds.latency_p99_ms). Endpoints come from the stack's outputs as the smoke
test reads them (--outputs FILE, else the Pulumi CLI), the API key from $TF_SERVING_API_KEY
or the stack's ingress_api_key secret. Writes report.json,
steps.csv, requests.csv and latency.png under build/loadtest/<stack>/.
Exit status: 0 done, 1 no request succeeded, 2 usage or configuration error.

This module is the command line only: arguments, messages, exit statuses; it must not hold
the load (runner.py), the figures (stats.py) or the report's layout (report.py).
"""

# locust runs on gevent, whose patches must come before anything imports ssl or socket.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from components.config import StackConfigError  # noqa: E402
from tools.lib.stackfile import ROOT, STACK_NAME, load_stack_file  # noqa: E402
from tools.loadtest.predict import InputsError, parse_inputs  # noqa: E402
from tools.loadtest.target import Endpoints, SmokeInputError, resolve  # noqa: E402

DEFAULT_CONCURRENCY = "1,2,4,8,16,32"
# half_plus_two's input (TF Serving's test model): pass your model's own with --inputs.
DEFAULT_INPUTS = '{"x": [[1.0], [2.0], [5.0]]}'
MAX_USERS = 10_000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.loadtest", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml and its outputs")
    parser.add_argument("--protocol", choices=("rest", "grpc", "both"), default="both", help="default both, REST first")
    parser.add_argument("--model", action="append", metavar="NAME",
                        help="model to call (repeatable, taken in turn; default: every model of serving.models)")
    parser.add_argument("--concurrency", default=DEFAULT_CONCURRENCY, metavar="N,N,...",
                        help=f"users per step, rising (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--step-seconds", type=float, default=30.0, metavar="S", help="longest a step runs (default 30)")
    parser.add_argument("--step-requests", type=int, default=5000, metavar="N",
                        help="most requests a step counts (default 5000)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="one request's timeout (default 10)")
    parser.add_argument("--p99-target-ms", type=float, metavar="MS",
                        help="p99 latency target for the knee (default: monitoring.thresholds.latency_p99_ms)")
    parser.add_argument("--inputs", default=DEFAULT_INPUTS, metavar="JSON|@FILE",
                        help="the model's inputs, {name: nested list} (default half_plus_two's)")
    parser.add_argument("--signature", default="serving_default", help="signature name (default serving_default)")
    parser.add_argument("--outputs", type=Path, metavar="FILE",
                        help="the stack's outputs as `pulumi stack output --json` prints them (default: ask the CLI)")
    parser.add_argument("--rest-url", help="REST endpoint (default: the stack output rest_url)")
    parser.add_argument("--grpc-url", metavar="HOST:PORT", help="gRPC endpoint (default: the stack output grpc_url)")
    parser.add_argument("--grpc-plaintext", action="store_true", help="gRPC without TLS (a port-forward, a test)")
    parser.add_argument("--out", type=Path, help="report folder (default build/loadtest/<stack>)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    return parser


class UsageError(Exception):
    pass


def _concurrency(stack: str, text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        steps = ()
    if not steps or any(not 1 <= s <= MAX_USERS for s in steps) or list(steps) != sorted(set(steps)):
        raise UsageError(
            f"stack '{stack}': --concurrency {text!r}: must be rising whole numbers from 1 to {MAX_USERS}, "
            "separated by commas, e.g. 1,2,4,8"
        )
    return steps


def _check(args: argparse.Namespace) -> None:
    if not STACK_NAME.fullmatch(args.stack):
        raise UsageError(f"stack name {args.stack!r} is not allowed: letters, digits, '_', '.' and '-'")
    for flag, value, low in (("--step-seconds", args.step_seconds, 0.1), ("--timeout", args.timeout, 0.01),
                             ("--step-requests", args.step_requests, 1)):
        if not value >= low:
            raise UsageError(f"stack '{args.stack}': {flag} {value}: must be at least {low}")
    if args.p99_target_ms is not None and not args.p99_target_ms > 0:
        raise UsageError(f"stack '{args.stack}': --p99-target-ms {args.p99_target_ms}: must be above 0")


def _inputs_text(stack: str, value: str) -> str:
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text()
    except OSError as exc:
        raise UsageError(f"stack '{stack}': --inputs {value}: cannot read: {exc.strerror}") from None


def _rate_limit_note(stack: str, cfg: object, plan_requests: int) -> str | None:
    """The WAF blocks one client IP past `rate_limit` requests per window (components/ingress.py,
    rate-based rule): a larger test from one machine measures the block, not the servers."""
    ingress = getattr(cfg, "ingress", None)
    access = getattr(ingress, "access", None)
    if access is None or plan_requests <= access.rate_limit:
        return None
    return (f"note: stack '{stack}': ingress.access.rate_limit is {access.rate_limit} requests per "
            f"{access.rate_limit_window_seconds} s per client IP; this plan may send up to {plan_requests}: "
            "past the limit the WAF answers 403 (counted as errors)")


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        _check(args)
        cfg = load_stack_file(args.stack, args.root)
        steps = _concurrency(args.stack, args.concurrency)
        try:
            inputs = parse_inputs(_inputs_text(args.stack, args.inputs), args.signature)
        except InputsError as exc:
            raise UsageError(f"stack '{args.stack}': --inputs: {exc}") from None
        served = sorted(cfg.serving.models)
        models = tuple(args.model or served)
        unknown = [m for m in models if m not in served]
        if unknown:
            raise UsageError(f"stack '{args.stack}': --model {', '.join(unknown)}: not in serving.models "
                             f"({', '.join(served)})")
        endpoints = resolve(args.stack, cfg, outputs_file=args.outputs, rest_url=args.rest_url,
                            grpc_url=args.grpc_url, grpc_tls=not args.grpc_plaintext)
        protocols = ("rest", "grpc") if args.protocol == "both" else (args.protocol,)
    except (UsageError, SmokeInputError, StackConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = args.p99_target_ms
    target_from = "--p99-target-ms"
    if target is None:
        target = float(cfg.monitoring.thresholds.latency_p99_ms)
        target_from = "monitoring.thresholds.latency_p99_ms"
    note = _rate_limit_note(args.stack, cfg, len(protocols) * len(steps) * args.step_requests)
    if note and not args.rest_url:
        print(note, file=sys.stderr)
    return _run(args, endpoints, inputs, protocols, steps, models, target, target_from)


def _run(args: argparse.Namespace, endpoints: Endpoints, inputs: object, protocols: tuple[str, ...],
         steps: tuple[int, ...], models: tuple[str, ...], target: float, target_from: str) -> int:
    from tools.loadtest import runner
    from tools.loadtest.predict import PredictInputs
    from tools.loadtest.report import RequestLog, table, write_report

    assert isinstance(inputs, PredictInputs)
    out = args.out or args.root / "build" / "loadtest" / args.stack
    plan = runner.Plan(protocols, steps, args.step_seconds, args.step_requests, args.timeout, models)
    print(f"stack {args.stack}: {', '.join(protocols)} to {', '.join(models)}; steps of {args.concurrency} users, "
          f"each up to {args.step_seconds:g} s or {args.step_requests} requests; p99 target {target:g} ms ({target_from})")
    log = RequestLog(out / "requests.csv")
    try:
        results = runner.run(endpoints, inputs, plan, on_step=lambda r: print(
            f"  {r.protocol} step {r.step}: {r.concurrency} users, {r.requests} requests, {r.throughput:.1f}/s, "
            f"p99 {r.latency_ms['p99']} ms, {r.errors} errors", flush=True), on_sample=log)
    finally:
        log.close()
    run = {"stack": args.stack, "protocols": list(protocols), "models": list(models),
           "rest_url": endpoints.rest_url, "grpc_url": endpoints.grpc_target,
           "concurrency": list(steps), "step_seconds": args.step_seconds, "step_requests": args.step_requests,
           "p99_target_from": target_from}
    report = write_report(out, run, results, target)
    print(table(results))
    for protocol, knee in report["knee"].items():
        print(f"knee {protocol}: " + ("none: every step's p99 within the target" if knee is None else
              f"step {knee['step']} ({knee['concurrency']} users, {knee['throughput_rps']} req/s): "
              f"p99 {knee['p99_ms']} ms > {target:g} ms"))
    print(f"wrote {out}/report.json, steps.csv, requests.csv, latency.png")
    return 0 if any(r.requests > r.errors for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
