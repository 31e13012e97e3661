"""moto's S3 server with the pieces of IAM evaluation it leaves out, so prefix-scoped policies are proven.

moto (5.x) checks each S3 request's action and resource against the caller's IAM policies, but:

- it evaluates no S3 condition: the request's context keys are never handed to the policy, and only
  `StringEquals` is known, so a statement such as `s3:ListBucket` with
  `"Condition": {"StringLike": {"s3:prefix": ["immich/media/*"]}}` allows listing *every* prefix;
- it checks HeadBucket as a fictional `s3:HeadBucket`, where AWS authorises it as `s3:ListBucket` with
  no `s3:prefix` key, so which statement lets barman-cloud's bucket check through (a HeadBucket, run
  before CNPG archives a new cluster's first WAL) could not be proven: a ListBucket scoped to a prefix
  refuses it on AWS, one without `s3:prefix` allows it;
- it checks a multi-object DeleteObjects as one `s3:DeleteObject` on the bucket, where AWS checks
  `s3:DeleteObject` (`s3:DeleteObjectVersion` with a version id) on every key, so a policy scoped to a
  prefix can never delete in a batch here, as barman-cloud's retention does on AWS;
- it has no action of its own for `GET ?object-lock` / `PUT ?object-lock`: both fall through to the
  bucket's defaults (`s3:ListBucket`, `s3:CreateBucket`).

Run as a script (what `StrictIamS3` does), this module fills exactly those gaps and then starts moto's
server: `s3:prefix` is taken from the request's `prefix` parameter for `s3:ListBucket` and
`s3:ListBucketVersions` (absent when the request has none, as for HeadBucket); `StringEquals`,
`StringLike` (`*` and `?`) and `Null` (`"true"`: the key is absent, `"false"`: present) are evaluated as
AWS does — a key the request does not carry makes a string condition false, and an operator it does not
know denies rather than being ignored; HEAD on the bucket is `s3:ListBucket`; DeleteObjects is allowed
only when every key it names is (stricter than AWS, which deletes the allowed keys and reports the rest:
here the whole batch is refused, never more let through); and the Object Lock configuration has
`s3:GetBucketObjectLockConfiguration` and `s3:PutBucketObjectLockConfiguration`. Everything else is
moto's own evaluation.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from immich_tui.demo.s3 import LocalS3

_ROOT = Path(__file__).resolve().parent.parent

_PREFIX_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions")  # where AWS sets the s3:prefix context key


def _like(pattern: str, value: str) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


OPERATORS = {"StringEquals": lambda pattern, value: pattern == value, "StringLike": _like}


def _null_holds(expected: object, actual: str | None) -> bool:
    """`Null`: "true" holds when the request lacks the key, "false" when it carries it (any value)."""
    values = expected if isinstance(expected, list) else [expected]
    want = "true" if actual is None else "false"
    return any(str(v).lower() == want for v in values)


def conditions_hold(statement: dict[str, Any], context: dict[str, str]) -> bool:
    """AWS's rule for the operators above: every key of every operator must match one of its values."""
    for operator, keys in (statement.get("Condition") or {}).items():
        if operator == "Null":
            if not all(_null_holds(expected, context.get(key)) for key, expected in keys.items()):
                return False
            continue
        test = OPERATORS.get(operator)
        if test is None:
            return False
        for key, expected in keys.items():
            patterns = [expected] if isinstance(expected, str) else list(expected)
            actual = context.get(key)
            if actual is None or not any(test(p, actual) for p in patterns):
                return False
    return True


def request_context(action: str, path: str) -> dict[str, str]:
    """The condition keys an S3 request carries (only those the shipped policies use)."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    if action in _PREFIX_ACTIONS and "prefix" in query:
        return {"s3:prefix": query["prefix"][0]}
    return {}


def deleted_keys(body: bytes | str) -> list[tuple[str, bool]]:
    """The keys a DeleteObjects body names, each with whether it names a version (none if unreadable)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    found = []
    for obj in root.iter():
        if obj.tag.rsplit("}", 1)[-1] != "Object":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in obj}
        found.append((fields.get("Key", ""), "VersionId" in fields))
    return found


def patch_moto() -> None:
    from moto.iam import access_control
    from moto.s3 import responses

    responses.ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"  # HeadBucket, as AWS authorises it
    responses.ACTION_MAP["BUCKET"]["GET"]["object-lock"] = "GetBucketObjectLockConfiguration"
    responses.ACTION_MAP["BUCKET"]["PUT"]["object-lock"] = "PutBucketObjectLockConfiguration"
    result = access_control.PermissionResult

    def statement_result(statement: dict[str, Any], action: str, resource: str, context: dict[str, str]) -> Any:
        """One statement: it applies when action, resource and conditions match (a failed condition makes
        an Allow or a Deny not apply, as in AWS; moto would turn it into a Deny)."""
        st = access_control.IAMPolicyStatement(statement)
        if "NotAction" in statement:
            concerned = not st._check_element_matches("NotAction", action)
        else:
            concerned = st._check_element_matches("Action", action)
        if not concerned or not st._check_element_matches("Resource", resource):
            return result.NEUTRAL
        if not conditions_hold(statement, context):
            return result.NEUTRAL
        return result.PERMITTED if statement["Effect"] == "Allow" else result.DENIED

    def permitted(self: Any, action: str, resource: str) -> bool:
        context = request_context(action, self._path)
        allowed = False
        for policy in self._access_key.collect_policies():
            statements = access_control.IAMPolicy(policy)._policy_json["Statement"]
            for statement in statements if isinstance(statements, list) else [statements]:
                outcome = statement_result(statement, action, resource, context)
                if outcome == result.DENIED:
                    return False
                allowed = allowed or outcome == result.PERMITTED
        return allowed

    def check_action_permitted(self: Any, resource: str) -> None:
        if self._method == "POST" and "delete" in parse_qs(urlsplit(self._path).query, keep_blank_values=True):
            # DeleteObjects: moto asks for s3:DeleteObject on the bucket; AWS asks per key
            requests = [
                ("s3:DeleteObjectVersion" if versioned else "s3:DeleteObject", f"{resource}/{key}")
                for key, versioned in deleted_keys(self._body)
            ]
        else:
            requests = [(self._action, resource)]
        if not requests or not all(permitted(self, action, arn) for action, arn in requests):
            self._raise_access_denied()

    access_control.S3IAMRequest.check_action_permitted = check_action_permitted


class StrictIamS3(LocalS3):
    """`LocalS3` whose server is this module: moto plus S3 conditions and the Object Lock actions."""

    server_args = (str(Path(__file__).resolve()),)


ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


@contextmanager
def writer_and_admin(bucket: str) -> Iterator[tuple[StrictIamS3, tuple[str, str], tuple[str, str]]]:
    """A server with `bucket`, a user holding exactly deploy/iam/media-writer.json and an admin, enforcing:
    what the CronJob's keys can do, next to keys that can look at everything it did."""
    with StrictIamS3() as server:
        server.client().create_bucket(Bucket=bucket)
        policy = (_ROOT / "deploy/iam/media-writer.json").read_text().replace("BUCKET_NAME", bucket)
        writer = server.iam_user("media-writer", policy)
        admin = server.iam_user("admin", ADMIN_POLICY)
        server.enforce_iam()
        yield server, writer, admin


if __name__ == "__main__":
    patch_moto()
    from moto.server import main

    sys.argv[0] = "moto_server"
    main()
