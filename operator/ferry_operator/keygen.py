"""``ferry-operator keygen``: the SSH identities, made once, kept in two Secrets.

The operator's private key goes into one Secret that only the operator mounts;
the helpers' Secret holds the operator's public key, which is all a helper
needs: node-to-node streams use a key the operator makes per migration.
Helm cannot derive an OpenSSH public key, so a hook Job runs this at install
and upgrade. It never replaces a key that exists: rotating is deleting
the Secrets and running it again (see charts/ferry/README.md).
"""

from __future__ import annotations

import base64

import asyncssh
from kubernetes import client
from kubernetes.client.exceptions import ApiException

HTTP_NOT_FOUND = 404


def _read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes] | None:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == HTTP_NOT_FOUND:
            return None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def _secret(name: str, data: dict[str, bytes], component: str) -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(
            name=name,
            labels={
                "app.kubernetes.io/name": "ferry",
                "app.kubernetes.io/component": component,
            },
        ),
        type="Opaque",
        data={k: base64.b64encode(v).decode() for k, v in data.items()},
    )


def _new_key(comment: str) -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519", comment=comment)


def ensure_ssh_secrets(
    core: client.CoreV1Api, *, namespace: str, operator_secret: str, node_helper_secret: str
) -> list[str]:
    """Create whichever of the two Secrets is missing; return what was done."""
    done = []
    operator = _read(core, namespace, operator_secret)
    if operator is None or "operator" not in operator:
        key = _new_key("ferry-operator")
        operator = {"operator": key.export_private_key()}
        core.create_namespaced_secret(namespace, _secret(operator_secret, operator, "operator"))
        done.append(f"created {namespace}/{operator_secret}")
    operator_public = asyncssh.import_private_key(operator["operator"]).export_public_key()
    helper = _read(core, namespace, node_helper_secret)
    if helper is None:
        data = {"operator.pub": operator_public}
        core.create_namespaced_secret(namespace, _secret(node_helper_secret, data, "node-helper"))
        done.append(f"created {namespace}/{node_helper_secret}")
    elif helper.get("operator.pub") != operator_public:
        # The operator's key was made anew: let the helpers trust the new one.
        core.patch_namespaced_secret(
            node_helper_secret,
            namespace,
            {"data": {"operator.pub": base64.b64encode(operator_public).decode()}},
        )
        done.append(f"updated operator.pub in {namespace}/{node_helper_secret}")
    return done
