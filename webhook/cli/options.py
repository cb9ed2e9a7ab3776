"""Flags with defaults from MLFLOW_WEBHOOK_<FLAG>, and a parser that fails in one line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from webhook.app.config import (
    DEFAULT_KEEPALIVE_SECONDS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT_SECONDS,
    ClusterConfig,
)
from webhook.aws.config import KINDS, BootstrapConfig, parse_tags
from webhook.core.settings import (
    ARTIFACT_UPLOADS,
    CREDENTIALS,
    PLACEHOLDER,
    SERVICE_ACCOUNT_POLICIES,
    ConfigError,
    Settings,
    example_value,
)

ENV_PREFIX = "MLFLOW_WEBHOOK_"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# A parser, or one of its groups: each flag goes where --help should show it.
Flags = argparse._ActionsContainer
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Parser(argparse.ArgumentParser):
    """Fails in one line, and reads its flags' environment variables only when it is the one
    chosen: a bad MLFLOW_WEBHOOK_PORT stops `serve`, never `certs --help`."""

    def error(self, message: str) -> NoReturn:
        # The one prefix every error has, as fail()'s; the command is named for its --help.
        fail(f"{message} (see {self.prog} --help)")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A subcommand's parser is asked here once it is chosen, before its --help is shown.
        for action in self._actions:
            if action in _FROM_ENV:
                _read_environment(action, _FROM_ENV.pop(action))
        return super().parse_known_args(args, namespace)


@dataclass(frozen=True)
class _EnvFlag:
    """A flag as declared: its help before its default is known, and its keywords."""

    flag: str
    help: str
    kwargs: dict[str, Any]


# Each flag `add` declared, until its parser is chosen and reads the environment.
_FROM_ENV: weakref.WeakKeyDictionary[argparse.Action, _EnvFlag] = weakref.WeakKeyDictionary()


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def add(parser: Flags, flag: str, *, help: str, **kwargs: Any) -> None:
    """Add a flag whose default comes from its environment variable when that is set. The
    variable is read, and checked, only if this flag's command is the one run."""
    action = parser.add_argument(flag, help=help, **kwargs)
    _FROM_ENV[action] = _EnvFlag(flag, help, kwargs)


def _read_environment(action: argparse.Action, flag: _EnvFlag) -> None:
    """The flag's default from its variable, and its help with the default it now has."""
    name = env_name(flag.flag)
    kwargs = dict(flag.kwargs)
    raw = os.environ.get(name)
    if raw is not None:
        kwargs["default"] = action.default = _env_default(name, raw, flag.flag, kwargs)
    # After the help as declared: what argparse itself added to it, if anything.
    added = (action.help or "")[len(flag.help) :]
    action.help = f"{flag.help}{_shown_default(flag.help, kwargs)} [env {name}]{added}"


def _env_default(name: str, raw: str, flag: str, kwargs: dict[str, Any]) -> Any:
    """The variable's value as the flag's default, or one line and exit 2."""
    if PLACEHOLDER in raw:
        fail(f"{name}={raw!r} {example_value(raw)}")
    if kwargs.get("action") in ("store_true", argparse.BooleanOptionalAction):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            fail(f"{name}={raw!r} must be true or false")
        return word in _TRUE
    if kwargs.get("action") == "append":
        return [item.strip() for item in raw.split(",") if item.strip()]
    convert: Callable[[str], Any] = kwargs.get("type", str)
    try:
        value = convert(raw)
    except (TypeError, ValueError):
        fail(f"{name}={raw!r} is not a valid value for {flag}")
    choices = kwargs.get("choices")
    if choices and value not in choices:
        fail(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return value


def _shown_default(help: str, kwargs: dict[str, Any]) -> str:
    """The default as `--help` shows it; a flag whose help already names it shows nothing."""
    default = kwargs.get("default")
    if kwargs.get("action") in ("store_true", argparse.BooleanOptionalAction):
        return f" (default: {'on' if default else 'off'})"
    if default is None or default in ([], "") or "(default" in help:
        return ""
    return f" (default: {default})"


def fail(message: str) -> NoReturn:
    print(f"mlflow-webhook: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def own_namespace() -> str:
    try:
        return Path(SERVICE_ACCOUNT_NAMESPACE).read_text().strip() or "mlflow-webhook"
    except OSError:
        return "mlflow-webhook"


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError(raw)
    return value


def port(raw: str) -> int:
    """A TCP port, 0 to 65535; argparse turns the ValueError into one line and exit 2."""
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(raw)
    return value


def add_mutation_flags(parser: Flags) -> None:
    add(
        parser,
        "--tracking-uri",
        help="SageMaker MLflow tracking-server or MLflow App ARN, or an http(s) URL",
    )
    add(
        parser,
        "--credentials",
        choices=CREDENTIALS,
        help="how Pods get AWS credentials (default: irsa with --role-arn, else none)",
    )
    add(parser, "--role-arn", help="IAM role the Pods assume with IRSA")
    add(
        parser,
        "--service-account",
        default="sagemaker-mlflow-sa",
        help="ServiceAccount given to Pods",
    )
    add(
        parser,
        "--service-account-policy",
        choices=SERVICE_ACCOUNT_POLICIES,
        default="keep",
        help="what to do with a Pod that names another ServiceAccount",
    )
    add(
        parser, "--prefix", default="mlflow-webhook.io", help="prefix of our labels and annotations"
    )
    add_pod_aws_flags(parser)


def add_pod_aws_flags(parser: Flags) -> None:
    """What Pods are told (serve, inject) and what the Pods' policy allows (bootstrap): S3 uploads
    and a role to assume in the tracking server's account."""
    add(
        parser,
        "--assume-role-arn",
        help="a role in the tracking server's account that Pods assume for MLflow calls "
        "(a central tracking server or App in another account)",
    )
    add(
        parser,
        "--artifact-uploads",
        choices=ARTIFACT_UPLOADS,
        default="direct",
        help="how Pods upload artifacts: direct (the Pods' role writes to S3) or presigned "
        "(through URLs the tracking server signs; the Pods' role only reads S3)",
    )


def settings_from(args: argparse.Namespace, **given: Any) -> Settings:
    """The mutation settings from a command's flags; `given` overrides them (what the
    bootstrap found). ConfigError is the caller's to report when it gives anything."""
    values: dict[str, Any] = {
        "tracking_uri": args.tracking_uri or "",
        "credentials": args.credentials,
        "role_arn": args.role_arn,
        "service_account": args.service_account,
        "service_account_policy": args.service_account_policy,
        "prefix": args.prefix,
        "artifact_uploads": args.artifact_uploads,
        "assume_role_arn": args.assume_role_arn,
        # Only `serve` has these: offline injection sees templates, not the Pods that run.
        "run_context": getattr(args, "run_context", "off") == "on",
        "cluster_name": getattr(args, "cluster_name", None),
    }
    if given:
        return Settings.create(**{**values, **given})
    try:
        return Settings.create(**values)
    except ConfigError as exc:
        fail(str(exc))


def add_run_context_flag(parser: Flags) -> None:
    """Only `serve`'s: offline injection sees templates, not the Pods that run."""
    add(
        parser,
        "--run-context",
        choices=("on", "off"),
        default="on",
        help="tell every MLflow run the Pod, workload, node, image and cluster (--cluster-name) "
        "it ran on, as run tags, and each Pod of a distributed job its system-metrics node id",
    )


def add_serve_flags(parser: Flags) -> None:
    add(parser, "--host", default="0.0.0.0", help="address to listen on")
    add(parser, "--port", type=port, default=8443, help="HTTPS port, 0-65535 (0 picks a free one)")
    add(parser, "--cert-dir", default="certs", help="folder holding tls.crt and tls.key")
    add(
        parser,
        "--self-signed",
        action="store_true",
        default=False,
        help="generate a CA and serving certificate in --cert-dir when missing or near expiry",
    )
    add(
        parser,
        "--service",
        default="mlflow-webhook",
        help="the webhook's Service name, for certificate names",
    )
    add(
        parser,
        "--namespace",
        default=own_namespace(),
        help="the webhook's namespace: its Lease, Secret and certificate names "
        "(default: the Pod's own, or mlflow-webhook outside a cluster)",
    )
    add(
        parser,
        "--max-body-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted",
    )
    add(
        parser,
        "--cert-reload-seconds",
        type=float,
        default=10.0,
        help="how often to look for rotated certificate files",
    )
    add(
        parser,
        "--keepalive-seconds",
        type=positive_float,
        default=DEFAULT_KEEPALIVE_SECONDS,
        help="close a connection idle this long (the API server's own idle timeout is 90 s)",
    )
    add(
        parser,
        "--read-timeout-seconds",
        type=positive_float,
        default=DEFAULT_READ_TIMEOUT_SECONDS,
        help="deadline for a request's headers, and again for its body; late ones get 408",
    )
    add(
        parser,
        "--max-connections",
        type=positive_int,
        default=DEFAULT_MAX_CONNECTIONS,
        help="open connections kept; past it the longest-idle are closed",
    )
    add(
        parser,
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level",
    )


def add_region_flag(parser: Flags) -> None:
    add(parser, "--region", help="AWS region (default: the SDK's own resolution)")


# What the bootstrap's names and inputs mean to each command that takes them: the bootstrap
# ensures them, iam-policy grants on them, teardown removes them, ui-url opens the server.
_NAME_HELP = {
    "ensure": {
        "--cluster-name": "EKS cluster whose OIDC issuer the IRSA role trusts",
        "--tracking-server-name": "name of the tracking server or MLflow App to ensure",
        "--kind": "a tracking server (sized, 20-25 minutes to create) or a serverless MLflow App",
        "--artifact-store-uri": "s3://bucket/prefix for artifacts (needed to create)",
    },
    "grant": {
        "--cluster-name": "EKS cluster whose OIDC issuer the IRSA role trusts",
        "--tracking-server-name": "the tracking server or MLflow App the policy grants on",
        "--kind": "a tracking server or a serverless MLflow App",
        "--artifact-store-uri": "s3://bucket/prefix the server may use (none: no S3 grant)",
    },
    "remove": {
        "--cluster-name": "EKS cluster the bootstrap set the Pods' role up for",
        "--tracking-server-name": "the tracking server or MLflow App to remove",
        "--kind": "what the bootstrap made: a tracking server or a serverless MLflow App",
        "--artifact-store-uri": "s3://bucket/prefix the bootstrap was given, to find its bucket",
    },
    "open": {"--kind": "a tracking server or a serverless MLflow App"},
}


def add_name_flags(parser: Flags, *, use: str = "ensure") -> None:
    """The names of what the bootstrap makes, which iam-policy and teardown also find it by."""
    words = _NAME_HELP[use]
    add(parser, "--cluster-name", help=words["--cluster-name"])
    add_kind_flag(parser, use=use)
    add(
        parser,
        "--tracking-server-name",
        default="mlflow-tracking",
        help=words["--tracking-server-name"],
    )
    add(parser, "--pod-role-name", default="SM_MLFLOW_ACCESS_ROLE", help="IAM role the Pods assume")
    add(
        parser,
        "--pod-policy-name",
        default="SageMakerMlFlowAccessPolicy",
        help="the Pods' IAM policy",
    )
    add(
        parser,
        "--server-role-name",
        default="mlflow-webhook-tracking-server",
        help="execution role of the tracking server",
    )


def add_kind_flag(parser: Flags, *, use: str = "ensure") -> None:
    add(parser, "--kind", choices=KINDS, default="tracking-server", help=_NAME_HELP[use]["--kind"])


def add_artifact_flag(parser: Flags, *, use: str = "ensure") -> None:
    add(parser, "--artifact-store-uri", help=_NAME_HELP[use]["--artifact-store-uri"])


def add_existing_server_flag(parser: Flags) -> None:
    add(
        parser,
        "--tracking-server-arn",
        help="use this existing tracking server or MLflow App; only verify it",
    )


def add_credentials_flag(parser: Flags, *, default: str | None) -> None:
    add(
        parser,
        "--credentials",
        choices=CREDENTIALS,
        default=default,
        help="how Pods get AWS credentials",
    )


def add_plan_flags(parser: Flags, *, verb: str) -> None:
    """--dry-run and --output, for a command that shows its plan and then carries it out."""
    add(
        parser,
        "--dry-run",
        action="store_true",
        default=False,
        help=f"print the plan; {verb} nothing",
    )
    add(parser, "--output", choices=("table", "json"), default="table", help="plan format")


def add_bootstrap_flags(parser: Flags, *, standalone: bool) -> None:
    """The bootstrap's inputs. `serve` shares --credentials and --service-account with injection."""
    add_region_flag(parser)
    add_name_flags(parser)
    add_artifact_flag(parser)
    # No default here: with --kind app, giving either is refused, so "not given" must show.
    add(
        parser,
        "--tracking-server-size",
        choices=("Small", "Medium", "Large"),
        help="tracking server size (default: Small; not for --kind app)",
    )
    add(
        parser,
        "--mlflow-version",
        help="MLflow version of a new server (default: AWS chooses; not for --kind app)",
    )
    add(
        parser,
        "--account-default",
        action="store_true",
        default=False,
        help="make the MLflow App the account's default (--kind app only)",
    )
    add(
        parser,
        "--automatic-model-registration",
        action="store_true",
        default=False,
        help="register models in SageMaker Model Registry automatically",
    )
    add(
        parser,
        "--tag",
        action="append",
        default=[],
        help="KEY=VALUE tag for the server; repeatable",
    )
    add(
        parser,
        "--trust-namespaces",
        default="",
        help="namespaces whose ServiceAccount may assume the pod role, comma-separated "
        "(needed with irsa or pod-identity); '*' trusts every namespace, opted in or not",
    )
    add_existing_server_flag(parser)
    add(
        parser,
        "--wait",
        action="store_true",
        default=False,
        help="wait until the tracking server or App is usable (a server takes 20-25 minutes "
        "to create, an App far less)",
    )
    if standalone:
        add_credentials_flag(parser, default="irsa")
        add(
            parser,
            "--service-account",
            default="sagemaker-mlflow-sa",
            help="ServiceAccount the role trusts",
        )
        add_pod_aws_flags(parser)
        add_plan_flags(parser, verb="change")


def bootstrap_config_from(args: argparse.Namespace, *, dry_run: bool = False) -> BootstrapConfig:
    """The one place a BootstrapConfig is built from flags; a command without a flag gets the
    config's own default for it."""
    given = vars(args)
    names = {f.name for f in dataclasses.fields(BootstrapConfig)}
    values = {k: v for k, v in given.items() if k in names and v is not None}
    values["tags"] = parse_tags_or_fail(given.get("tag") or [])
    if "trust_namespaces" in values:
        values["trust_namespaces"] = tuple(
            n.strip() for n in values["trust_namespaces"].split(",") if n.strip()
        )
    values["dry_run"] = dry_run or bool(given.get("dry_run"))
    try:
        return BootstrapConfig(**values)
    except ConfigError as exc:
        fail(str(exc))


def parse_tags_or_fail(raw: list[str]) -> dict[str, str]:
    try:
        return parse_tags(raw)
    except ConfigError as exc:
        fail(str(exc))


def add_cluster_flags(parser: Flags) -> None:
    add(
        parser,
        "--kubeconfig",
        help="kubeconfig of the cluster to work with (default: $KUBECONFIG; in a Pod, its own "
        "ServiceAccount; ~/.kube/config only when named)",
    )
    add(
        parser,
        "--no-kube",
        action="store_true",
        default=False,
        help="serve admission only; read and write nothing in any cluster, whatever "
        "--kubeconfig, $KUBECONFIG or the Pod say",
    )
    add(
        parser,
        "--webhook-config-name",
        default="mlflow-webhook",
        help="our MutatingWebhookConfiguration, whose caBundle self-signed mode keeps",
    )
    add(
        parser,
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="only the replica holding the Lease writes to the cluster",
    )
    add(
        parser,
        "--lease-duration-seconds",
        type=positive_int,
        default=15,
        help="how long a leader's Lease holds without renewal; failover takes about this long",
    )
    add(
        parser,
        "--lease-retry-seconds",
        type=float,
        default=2.0,
        help="how often replicas renew or try to take the Lease",
    )
    add(
        parser,
        "--resync-seconds",
        type=float,
        default=300.0,
        help="how often the leader lists opted-in namespaces again, beside the watch",
    )
    add_namespace_settings_flag(parser)


def add_namespace_settings_flag(parser: Flags) -> None:
    add(
        parser,
        "--namespace-settings",
        choices=("on", "off"),
        default="on",
        help="let a namespace's tracking-uri, role-arn and experiment annotations override "
        "the global settings; off where tenants can edit their own namespace objects",
    )


def cluster_config_from(args: argparse.Namespace) -> ClusterConfig | None:
    """Which cluster serve works with, decided here once: --no-kube, else --kubeconfig, else
    $KUBECONFIG (as kubectl and audit read it), else the Pod's own. With none of them it fails
    rather than serve admission only unasked; ~/.kube/config is someone's current cluster, which
    a quick start must not write to, so it is read only when named."""
    if args.no_kube:
        return None
    if args.kubeconfig:
        kubeconfig, source = args.kubeconfig, f"--kubeconfig {args.kubeconfig}"
        if not Path(kubeconfig).is_file():
            fail(f"--kubeconfig {kubeconfig} is not a file")
    elif os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"]
        source = f"$KUBECONFIG {kubeconfig}"
        if not any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p):
            fail(f"$KUBECONFIG {kubeconfig} names no file (unset it, or give --no-kube)")
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kubeconfig, source = None, "this Pod's ServiceAccount"
    else:
        fail(
            "no cluster to work with: give --kubeconfig FILE or set $KUBECONFIG "
            "(~/.kube/config is read only when named), or --no-kube to serve admission only"
        )
    return ClusterConfig(
        kubeconfig=kubeconfig,
        source=source,
        namespace=args.namespace,
        webhook_config_name=args.webhook_config_name,
        leader_election=args.leader_election,
        namespace_selector=f"{args.prefix}/inject=enabled",
        lease_seconds=args.lease_duration_seconds,
        retry_seconds=args.lease_retry_seconds,
        resync_seconds=args.resync_seconds,
    )
