"""mlflow-webhook: SageMaker managed-MLflow tracking for opted-in Pods, no job spec edits."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from webhook import __version__
from webhook.app.config import Bootstrap, ServeConfig
from webhook.app.lifecycle import StartupFailed, serve
from webhook.app.logs import configure
from webhook.aws import adapters, bootstrap
from webhook.aws.clients import AWS_ERRORS, BootstrapError, Clients, explain, preflight
from webhook.aws.config import BootstrapConfig
from webhook.cli import audit, inject, teardown
from webhook.cli.commands import command
from webhook.cli.options import (
    Parser,
    add,
    add_artifact_flag,
    add_bootstrap_flags,
    add_cluster_flags,
    add_credentials_flag,
    add_existing_server_flag,
    add_kind_flag,
    add_mutation_flags,
    add_name_flags,
    add_pod_aws_flags,
    add_region_flag,
    add_run_context_flag,
    add_serve_flags,
    bootstrap_config_from,
    cluster_config_from,
    fail,
    settings_from,
)
from webhook.core import kinds, policies
from webhook.core.plans import Plan
from webhook.core.settings import Settings
from webhook.kube.connection import ClusterError
from webhook.tls.certs import (
    CA_FILE,
    LOCAL_IPS,
    LOCAL_NAMES,
    CertDirError,
    check_writable,
    ensure_self_signed,
    service_names,
)

try:
    from uvloop import run
except ImportError:  # no uvloop on this platform: asyncio's own loop serves as well, slower
    from asyncio import run  # type: ignore[assignment]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mlflow-webhook", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mlflow-webhook {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    _serve_parser(commands)
    _bootstrap_parser(commands)
    _iam_policy_parser(commands)
    _ui_url_parser(commands)
    _inject_parser(commands)
    audit.add_parser(commands)
    teardown.add_parser(commands)
    _certs_parser(commands)
    return parser


def _serve_parser(commands: Any) -> None:
    p = command(
        commands,
        "serve",
        help="serve the mutating admission webhook over HTTPS",
        description="Serve the mutating admission webhook over HTTPS: opted-in Pods get MLflow "
        "tracking when they are created. With a cluster (--kubeconfig, $KUBECONFIG, or in a Pod "
        "its own ServiceAccount) the leader keeps the Pods' ServiceAccounts there, and with "
        "--self-signed the certificate and the caBundle; --no-kube serves admission only. "
        "Without --tracking-uri it first runs the AWS bootstrap.",
        examples=[
            "mlflow-webhook serve --self-signed --no-kube --tracking-uri http://127.0.0.1:5000",
            "mlflow-webhook serve --self-signed --kubeconfig dev.kubeconfig \\\n"
            "      --tracking-uri arn:aws:sagemaker:us-west-2:444455556666:"
            "mlflow-tracking-server/mlflow-tracking \\\n"
            "      --role-arn arn:aws:iam::444455556666:role/SM_MLFLOW_ACCESS_ROLE",
        ],
    )
    pods = p.add_argument_group("what Pods get")
    add_mutation_flags(pods)
    add_run_context_flag(pods)
    add_serve_flags(p.add_argument_group("the HTTPS server"))
    add_cluster_flags(p.add_argument_group("the cluster it works with"))
    add_bootstrap_flags(
        p.add_argument_group("the AWS bootstrap, run at startup when --tracking-uri is not given"),
        standalone=False,
    )


def _bootstrap_parser(commands: Any) -> None:
    p = command(
        commands,
        "bootstrap",
        help="ensure the IAM pieces and the tracking server exist",
        description="Make sure the Pods' IAM role and policy, the tracking server's execution "
        "role and the tracking server (or MLflow App) exist, as one plan: it shows what it would "
        "change, then changes exactly that; --dry-run changes nothing. It prints the ARNs that "
        "settings.env (part A) or a namespace's annotations take.",
        examples=[
            "mlflow-webhook bootstrap --cluster-name prod --artifact-store-uri "
            "s3://ml-artifacts/mlflow --trust-namespaces team-a --dry-run",
        ],
    )
    add_bootstrap_flags(p, standalone=True)


def _iam_policy_parser(commands: Any) -> None:
    p = command(
        commands,
        "iam-policy",
        help="print the least-privilege policy the bootstrap needs",
        description="Print the least-privilege IAM policy that whoever runs the bootstrap needs "
        "(with --serve, the read-only one serve needs once the bootstrap has run). It reads the "
        "account from STS and the cluster's OIDC issuer from EKS, unless --account and "
        "--oidc-issuer give them: then it needs no AWS credentials at all.",
        examples=[
            "mlflow-webhook iam-policy --region us-west-2 --cluster-name prod "
            "--artifact-store-uri s3://ml-artifacts/mlflow --out webhook-policy.json",
        ],
    )
    # Only what names the resources the policy grants on: sizes, tags and plans change nothing.
    add_region_flag(p)
    add_name_flags(p, use="grant")
    add_artifact_flag(p, use="grant")
    add_existing_server_flag(p)
    add_credentials_flag(p, default="irsa")
    add(p, "--account", help="AWS account ID (default: the caller's, from STS)")
    add(
        p,
        "--oidc-issuer",
        help="the cluster's OIDC issuer URL, with irsa (default: from EKS DescribeCluster)",
    )
    add(
        p,
        "--serve",
        action="store_true",
        default=False,
        help="print instead what serve needs once bootstrap has run: reads only",
    )
    add_pod_aws_flags(p)
    add(
        p,
        "--central-role",
        action="store_true",
        default=False,
        help="print instead, for the tracking server's account, the role --assume-role-arn "
        "names (its trust and permissions) and what its artifact bucket must allow our Pods",
    )
    add(
        p,
        "--out",
        help="write the policy to this file, and only once it is whole (a shell's > leaves an "
        "empty file behind when the command fails)",
    )


def _ui_url_parser(commands: Any) -> None:
    p = command(
        commands,
        "ui-url",
        help="print a presigned URL for the tracking server's or MLflow App's UI",
        description="Print a presigned URL that opens the tracking server's (or MLflow App's) "
        "UI in a browser, signed with your AWS credentials.",
        examples=["mlflow-webhook ui-url --region us-west-2 --tracking-server-name team-a-mlflow"],
    )
    add_region_flag(p)
    add_kind_flag(p, use="open")
    add(
        p, "--tracking-server-name", default="mlflow-tracking", help="tracking server or MLflow App"
    )
    add(p, "--tracking-server-arn", help="tracking server or MLflow App ARN (overrides the name)")
    add(p, "--expires-seconds", type=int, default=300, help="how long the URL may be used (5-300)")


def _inject_parser(commands: Any) -> None:
    p = command(
        commands,
        "inject",
        help="inject into manifests offline, like istioctl kube-inject",
        description="Apply the webhook's mutation offline to the Pod templates in YAML "
        "manifests (Pods, Deployments, Jobs, CronJobs, Kubeflow training jobs), like istioctl "
        "kube-inject. Comments, key order and quoting come back as they were; what it left "
        "alone, and why, goes to stderr.",
        examples=[
            "mlflow-webhook inject -f train.yaml --tracking-uri http://mlflow.mlflow:5000 "
            "| kubectl apply -f -",
        ],
        usage="%(prog)s -f FILE [flags]",
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
    add(
        p,
        "--experiment",
        help="default MLflow experiment for templates without their own annotation, as a "
        "namespace's mlflow-webhook.io/experiment gives its Pods",
    )


def _certs_parser(commands: Any) -> None:
    p = command(
        commands,
        "certs",
        help="write a CA and a serving certificate for the Service",
        description="Write a CA and a serving certificate for the webhook's Service (and "
        "localhost) to a folder, keeping those still valid; serve --self-signed does this "
        "itself. It prints how to make the caBundle.",
        examples=["mlflow-webhook certs --namespace mlflow-webhook --out certs"],
    )
    add(p, "--service", default="mlflow-webhook", help="the webhook's Service name")
    add(p, "--namespace", default="mlflow-webhook", help="the webhook's namespace")
    add(p, "--out", default="certs", help="folder to write ca.crt, ca.key, tls.crt and tls.key to")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, so that a reader gone is met in this try and not at exit
    except BrokenPipeError:
        # The reader stopped reading (`| head`): end quietly, with the status a process that
        # SIGPIPE ended has in a shell, as cat's; Python ignores SIGPIPE for serve's sockets.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "inject":
        return inject.run(args)
    if args.command == "audit":
        return audit.run(args)
    if args.command == "teardown":
        return teardown.run(args)
    if args.command in ("bootstrap", "iam-policy", "ui-url"):
        try:
            return int(
                {"bootstrap": _bootstrap, "iam-policy": _iam_policy, "ui-url": _ui_url}[
                    args.command
                ](args)
            )
        except BootstrapError as exc:
            print(f"mlflow-webhook: error: {exc}", file=sys.stderr)
            return exc.exit_code
    return _certs(args)


def _serve(args: argparse.Namespace) -> int:
    config = _serve_config(args)
    configure(args.log_level)
    try:
        if config.self_signed:
            check_writable(config.cert_dir)
        run(serve(config))
    except StartupFailed as exc:
        # A setup problem exits 2 in one last line, like every other configuration error; the
        # batched log goes out first.
        logging.shutdown()
        fail(f"startup failed: {exc}")
    except (CertDirError, ClusterError) as exc:
        fail(str(exc))
    except FileNotFoundError as exc:
        fail(f"{exc} (give --cert-dir, or --self-signed to generate them)")
    except OSError as exc:
        fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    return 0


def _serve_config(args: argparse.Namespace) -> ServeConfig:
    """Everything serve reads, from its flags, checked before it starts."""
    return ServeConfig(
        settings=settings_from(args) if args.tracking_uri else None,
        bootstrap=None if args.tracking_uri else _serve_bootstrap(args),
        host=args.host,
        port=args.port,
        cert_dir=Path(args.cert_dir),
        self_signed=args.self_signed,
        service=args.service,
        namespace=args.namespace,
        max_body_bytes=args.max_body_bytes,
        cert_reload_seconds=args.cert_reload_seconds,
        keepalive_seconds=args.keepalive_seconds,
        read_timeout_seconds=args.read_timeout_seconds,
        max_connections=args.max_connections,
        cluster=cluster_config_from(args),
        namespace_settings=args.namespace_settings == "on",
    )


def _serve_bootstrap(args: argparse.Namespace) -> Bootstrap:
    """No tracking URI: serve ensures (or finds) the tracking server first, off the request
    path. What would fail every AWS call is found now."""
    config = bootstrap_config_from(args)
    try:
        preflight(config.region)
    except BootstrapError as exc:
        fail(str(exc))
    if config.trust_error:
        fail(config.trust_error)
    irsa = config.credentials == "irsa"

    def settings(plan: Plan) -> Settings:
        return settings_from(
            args,
            tracking_uri=plan.tracking_arn,
            credentials=config.credentials,
            role_arn=(args.role_arn or plan.pod_role_arn) if irsa else None,
        )

    return Bootstrap(config, settings)


def _bootstrap(args: argparse.Namespace) -> int:
    config = bootstrap_config_from(args)
    plan = bootstrap.run(config, progress=lambda line: print(line, file=sys.stderr))
    print(plan.as_json() if args.output == "json" else plan.as_table())
    return 0


def _iam_policy(args: argparse.Namespace) -> int:
    config = bootstrap_config_from(args, dry_run=True)
    if args.central_role:
        return _write(args.out, json.dumps(_central_role(args, config), indent=2) + "\n")
    if config.credentials != "none" and not config.cluster_name:
        raise BootstrapError(f"--credentials {config.credentials} needs --cluster-name", 2)
    clients = Clients(config.region, dry_run=True)
    issuer = args.oidc_issuer
    try:
        account = args.account or str(clients.sts.get_caller_identity()["Account"])
        if config.credentials == "irsa" and not issuer:
            cluster = clients.eks.describe_cluster(name=config.cluster_name)["cluster"]
            issuer = cluster["identity"]["oidc"]["issuer"]
    except AWS_ERRORS as error:
        raise explain(error, f"cluster {config.cluster_name} (or give --oidc-issuer)") from error
    scope = policies.Scope(
        part=policies.partition(clients.region),
        region=clients.region,
        account=account,
        pod_role=config.pod_role_name,
        server_role=config.server_role_name,
        pod_policy=config.pod_policy_name,
        tracking_server=config.tracking_server_name,
        credentials=config.credentials,
        cluster=config.cluster_name,
        issuer=issuer,
        bucket=config.bucket or None,
        tracking_arn=config.tracking_server_arn,
        kind=config.kind,
    )
    doc = policies.bootstrap_identity(scope)
    return _write(
        args.out, json.dumps(policies.read_only(doc) if args.serve else doc, indent=2) + "\n"
    )


def _central_role(args: argparse.Namespace, config: BootstrapConfig) -> policies.Document:
    tracking_arn, assume = config.tracking_server_arn, config.assume_role_arn
    if not (tracking_arn and assume and config.bucket):
        raise BootstrapError(
            "--central-role needs --tracking-server-arn, --assume-role-arn and "
            "--artifact-store-uri",
            2,
        )
    clients = Clients(config.region, dry_run=True)
    try:
        account = args.account or str(clients.sts.get_caller_identity()["Account"])
    except AWS_ERRORS as error:
        raise explain(error, "the caller identity (or give --account)") from error
    part = policies.partition(clients.region)
    pod_role = f"arn:{part}:iam::{account}:role/{config.pod_role_name}"
    return policies.central_role(
        part, pod_role, tracking_arn, config.bucket, config.prefix, config.artifact_uploads
    )


def _write(out_path: str | None, text: str) -> int:
    if not out_path:
        sys.stdout.write(text)
        return 0
    out = Path(out_path)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(text)
        partial.replace(out)
    except OSError as exc:
        raise BootstrapError(f"cannot write --out {out}: {exc.strerror or exc}", 2) from exc
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _ui_url(args: argparse.Namespace) -> int:
    clients = Clients(args.region, dry_run=False)
    if not 5 <= args.expires_seconds <= 300:
        raise BootstrapError("--expires-seconds must be between 5 and 300", 2)
    arn, name = args.tracking_server_arn, args.tracking_server_name
    kind = kinds.chosen(arn, args.kind)
    try:
        url = adapters.of(kind).ui_url(clients, name, arn, args.expires_seconds)
    except AWS_ERRORS as error:
        raise explain(error, kind.what(arn or name)) from error
    print(url)
    print(
        f"valid for {args.expires_seconds} seconds to open; the UI session then lasts 12 hours",
        file=sys.stderr,
    )
    return 0


def _certs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    names = service_names(args.service, args.namespace) + list(LOCAL_NAMES)
    try:
        check_writable(out)
    except CertDirError as exc:
        fail(str(exc))
    written = ensure_self_signed(out, names, list(LOCAL_IPS))
    state = (
        f"wrote {', '.join(written)}" if written else "kept the valid certificates already there"
    )
    print(f"{out}: {state}; serving names: {', '.join(names)}")
    print(f"caBundle for the MutatingWebhookConfiguration: base64 -w0 {out / CA_FILE}")
    return 0
