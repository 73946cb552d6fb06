"""``ferry-operator keygen``: the SSH identities, made once, kept in two Secrets.

The operator's private key goes into one Secret that only the operator mounts;
the helpers' Secret holds the operator's public key, which is all a helper
needs: node-to-node streams use a key the operator makes per migration.
Helm cannot derive an OpenSSH public key, so a hook Job runs this at install
and upgrade. It never replaces a key that exists: rotating is deleting
the Secrets and running it again (see charts/ferry/README.md).
"""

from __future__ import annotations

import asyncssh

from .kube import Kube


def _labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "ferry", "app.kubernetes.io/component": component}


async def ensure_ssh_secrets(
    kube: Kube, *, namespace: str, operator_secret: str, node_helper_secret: str
) -> list[str]:
    """Create whichever of the two Secrets is missing; return what was done."""
    done = []
    operator = await kube.read_secret(namespace, operator_secret)
    if operator is None or "operator" not in operator:
        key = asyncssh.generate_private_key("ssh-ed25519", comment="ferry-operator")
        operator = {"operator": key.export_private_key()}
        await kube.create_secret(namespace, operator_secret, operator, labels=_labels("operator"))
        done.append(f"created {namespace}/{operator_secret}")
    operator_public = asyncssh.import_private_key(operator["operator"]).export_public_key()
    helper = await kube.read_secret(namespace, node_helper_secret)
    if helper is None:
        data = {"operator.pub": operator_public}
        await kube.create_secret(namespace, node_helper_secret, data, labels=_labels("node-helper"))
        done.append(f"created {namespace}/{node_helper_secret}")
    elif helper.get("operator.pub") != operator_public:
        # The operator's key was made anew: let the helpers trust the new one.
        await kube.patch_secret(namespace, node_helper_secret, {"operator.pub": operator_public})
        done.append(f"updated operator.pub in {namespace}/{node_helper_secret}")
    return done
