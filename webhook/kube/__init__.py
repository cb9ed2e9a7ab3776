"""The Kubernetes adapter: ServiceAccounts, the namespace watch, leader election, certificates.

It uses the official synchronous client, always from worker threads, never on the event loop.
"""
