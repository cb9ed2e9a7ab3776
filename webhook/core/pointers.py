"""RFC 6901 JSON Pointer escaping, for annotation keys such as `mlflow-webhook.io/status`."""


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def join(*tokens: str | int) -> str:
    return "".join(f"/{escape(str(t))}" for t in tokens)
