"""Verifiers: plain functions scoring a response against an example. No torch here."""

from prorl.verify.registry import as_score, get_verifier, list_verifiers, register_verifier

__all__ = ["as_score", "get_verifier", "list_verifiers", "register_verifier"]
