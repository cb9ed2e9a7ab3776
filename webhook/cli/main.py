"""mlflow-webhook: SageMaker managed-MLflow tracking for opted-in Pods, no job spec edits."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import yaml

from webhook import __version__
from webhook.app.config import ServeConfig
from webhook.app.logs import configure
from webhook.app.server import serve
from webhook.cli.options import (
    Parser,
    add,
    add_mutation_flags,
    add_serve_flags,
    fail,
    settings_from,
)
from webhook.core.templates import inject_documents
from webhook.tls.certs import CA_FILE, LOCAL_IPS, LOCAL_NAMES, ensure_self_signed, service_names


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mlflow-webhook", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlflow-webhook {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = commands.add_parser("serve", help="serve the mutating admission webhook over HTTPS")
    add_mutation_flags(p)
    add_serve_flags(p)

    p = commands.add_parser(
        "inject", help="inject into manifests offline, like istioctl kube-inject"
    )
    add_mutation_flags(p)
    p.add_argument(
        "-f", "--filename", required=True, help="multi-document YAML file, or - for stdin"
    )
    add(
        p,
        "--all",
        action="store_true",
        default=False,
        help="inject every Pod template that does not opt out, not only those that opt in",
    )

    p = commands.add_parser("certs", help="write a CA and a serving certificate for the Service")
    p.add_argument("--service", default="mlflow-webhook", help="the webhook's Service name")
    p.add_argument("--namespace", default="mlflow-webhook", help="the webhook's namespace")
    p.add_argument(
        "--out", default="certs", help="folder to write ca.crt, ca.key, tls.crt and tls.key to"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "inject":
        return _inject(args)
    return _certs(args)


def _serve(args: argparse.Namespace) -> int:
    config = ServeConfig(
        settings=settings_from(args),
        host=args.host,
        port=args.port,
        cert_dir=Path(args.cert_dir),
        self_signed=args.self_signed,
        service=args.service,
        namespace=args.namespace,
        max_body_bytes=args.max_body_bytes,
        cert_reload_seconds=args.cert_reload_seconds,
    )
    configure(args.log_level)
    try:
        asyncio.run(serve(config))
    except FileNotFoundError as exc:
        fail(f"{exc} (give --cert-dir, or --self-signed to generate them)")
    except OSError as exc:
        fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    return 0


def _inject(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        text = sys.stdin.read() if args.filename == "-" else Path(args.filename).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except OSError as exc:
        fail(f"cannot read {args.filename}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        fail(f"{args.filename} is not valid YAML: {' '.join(str(exc).split())}")
    result = inject_documents(docs, settings, everything=args.all)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False, default_flow_style=False)
    for warning in result.warnings:
        print(f"mlflow-webhook: warning: {warning}", file=sys.stderr)
    print(
        f"mlflow-webhook: injected {result.injected} of {result.templates} Pod templates",
        file=sys.stderr,
    )
    return 0


def _certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    names = service_names(args.service, args.namespace) + list(LOCAL_NAMES)
    written = ensure_self_signed(out, names, list(LOCAL_IPS))
    state = (
        f"wrote {', '.join(written)}" if written else "kept the valid certificates already there"
    )
    print(f"{out}: {state}; serving names: {', '.join(names)}")
    print(f"caBundle for the MutatingWebhookConfiguration: base64 -w0 {out / CA_FILE}")
    return 0
