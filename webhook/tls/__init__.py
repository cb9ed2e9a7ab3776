"""TLS: certificates made with `cryptography`, and a server context that follows file rotation."""
