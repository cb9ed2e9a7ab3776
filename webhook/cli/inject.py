"""`mlflow-webhook inject -f FILE|-`: the webhook's mutation applied offline to manifests.

The YAML is read and written round-trip (ruamel.yaml), so comments, key order and quoting in
what a person wrote come back as they were; only the injected fields are new.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from webhook.cli.options import fail, settings_from
from webhook.core.templates import inject_documents


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.experiment:
        # A namespace's settings, given as flags: inject is offline and sees no namespace.
        settings = dataclasses.replace(settings, experiment=args.experiment)
    yaml = YAML(typ="rt")
    yaml.width = 4096  # never fold a long value onto a second line
    yaml.preserve_quotes = True
    try:
        raw = sys.stdin.buffer.read() if args.filename == "-" else Path(args.filename).read_bytes()
        text = raw.decode("utf-8")
        docs = [d for d in yaml.load_all(text) if d is not None]
    except OSError as exc:
        fail(f"cannot read {args.filename}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        fail(
            f"{args.filename} is not UTF-8 text (byte {exc.start}): Kubernetes manifests are UTF-8"
        )
    except YAMLError as exc:
        fail(
            f"{'stdin' if args.filename == '-' else args.filename} is not valid YAML: {_where(exc)}"
        )
    result = inject_documents(docs, settings, everything=args.all)
    out = io.StringIO()
    yaml.dump_all(docs, out)
    sys.stdout.write(out.getvalue())
    for warning in result.warnings:
        print(f"mlflow-webhook: warning: {warning}", file=sys.stderr)
    print(
        f"mlflow-webhook: injected {result.injected} of {result.templates} Pod templates",
        file=sys.stderr,
    )
    return 0


def _where(exc: YAMLError) -> str:
    """`line 3, column 2: expected <block end>, ...`: the parser's own words name the text it
    parsed "<unicode string>" and quote it with a caret, which a one-line message garbles."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc)
    place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return place + " ".join(str(problem).split())
