"""What ``pushpool doctor`` says of this machine's AWS credentials (pushpool's own, used by pools with no
``aws_credentials`` block): found by boto3's chain, or what to do."""

from __future__ import annotations


def credentials_problem() -> tuple[str, str] | None:
    """None when boto3 finds credentials (environment, ~/.aws, SSO, a role); else (what is missing, what to do)."""
    import boto3

    if boto3.Session().get_credentials() is None:
        return (
            "no AWS credentials found (environment, ~/.aws/credentials, SSO or an instance/task role)",
            "run `aws configure` (or `aws sso login`), set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or "
            "give the pool an aws_credentials block",
        )
    return None
