"""Flags with defaults from MLFLOW_WEBHOOK_<FLAG>, and a parser that fails in one line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from webhook.app.config import DEFAULT_MAX_BODY_BYTES
from webhook.core.settings import CREDENTIALS, SERVICE_ACCOUNT_POLICIES, ConfigError, Settings

ENV_PREFIX = "MLFLOW_WEBHOOK_"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def add(parser: argparse.ArgumentParser, flag: str, *, help: str, **kwargs: Any) -> None:
    """Add a flag whose default comes from its environment variable when that is set."""
    name = env_name(flag)
    raw = os.environ.get(name)
    if kwargs.get("action") == "store_true":
        if raw is not None:
            word = raw.strip().lower()
            if word not in _TRUE | _FALSE:
                fail(f"{name}={raw!r} must be true or false")
            kwargs["default"] = word in _TRUE
    elif raw is not None:
        convert: Callable[[str], Any] = kwargs.get("type", str)
        try:
            kwargs["default"] = convert(raw)
        except (TypeError, ValueError):
            fail(f"{name}={raw!r} is not a valid value for {flag}")
        choices = kwargs.get("choices")
        if choices and kwargs["default"] not in choices:
            fail(f"{name}={raw!r} must be one of {', '.join(choices)}")
    parser.add_argument(flag, help=f"{help} [env {name}]", **kwargs)


def fail(message: str) -> NoReturn:
    print(f"mlflow-webhook: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError(raw)
    return value


def add_mutation_flags(parser: argparse.ArgumentParser) -> None:
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


def settings_from(args: argparse.Namespace) -> Settings:
    try:
        return Settings.create(
            tracking_uri=args.tracking_uri or "",
            credentials=args.credentials,
            role_arn=args.role_arn,
            service_account=args.service_account,
            service_account_policy=args.service_account_policy,
            prefix=args.prefix,
        )
    except ConfigError as exc:
        fail(str(exc))


def add_serve_flags(parser: argparse.ArgumentParser) -> None:
    add(parser, "--host", default="0.0.0.0", help="address to listen on")
    add(parser, "--port", type=int, default=8443, help="HTTPS port (0 picks a free one)")
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
        default="mlflow-webhook",
        help="the webhook's namespace, for certificate names",
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
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="log level",
    )
