"""The node's own kubelet: its checkpoint API (KEP-2008).

``POST /checkpoint/{namespace}/{pod}/{container}?timeout=N`` has the kubelet
checkpoint a container through its CRI runtime; it answers
``{"items": ["/var/lib/kubelet/checkpoints/checkpoint-<pod>_<ns>-<container>-<time>.tar"]}``,
a path in the node's filesystem.

The helper authenticates with its pod's ServiceAccount token (read at each
call: projected tokens rotate); the kubelet authorizes it with a
SubjectAccessReview of ``create`` on ``nodes/checkpoint``, which the
helper's ClusterRole grants. The kubelet's serving certificate is often
self-signed (no serverTLSBootstrap): when the node has one at
:data:`KUBELET_SERVING_CERT` it is pinned (the only certificate trusted, the
host name not checked); otherwise the cluster's CA must have signed it.

The request is blocking (urllib, no extra dependency) and runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import node_tools
from .drivers.errors import read_criu_errors

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
#: Where a kubelet keeps its self-signed serving certificate, in the node.
KUBELET_SERVING_CERT = Path("/var/lib/kubelet/pki/kubelet.crt")
#: Allowed beyond the kubelet's own timeout for its answer to arrive.
SLACK_SECONDS = 15
#: How much of an error's body is kept in its message.
MAX_ERROR_TEXT = 2000


#: Where runc's error names CRIU's log, a path in the node.
CRIU_LOG = re.compile(r"path= ?(/\S+\.log)|log file: ?(/\S+\.log)")
#: How many of CRIU's error lines are kept.
CRIU_ERROR_LINES = 3


def criu_errors(message: str) -> str:
    """CRIU's own error lines from the log ``message`` names (``; CRIU: ...``), or "".

    The kubelet passes on runc's words ("criu failed: type DUMP ... path=
    .../criu-dump.log"), which never say why; the log, in the node, does. Read as a
    podman failure's log is (:func:`~.drivers.errors.read_criu_errors`: the decisive
    line first, the noise of successful runs left out).
    """
    found = CRIU_LOG.search(message)
    if found is None:
        return ""
    log = Path(found.group(1) or found.group(2))
    errors = read_criu_errors(node_tools.node_path(log), limit=CRIU_ERROR_LINES)
    return f"; CRIU: {' | '.join(errors)}" if errors else ""


class KubeletError(Exception):
    """The kubelet refused or failed the checkpoint, or could not be reached."""


@dataclass(frozen=True, kw_only=True)
class Kubelet:
    #: The kubelet's base URL, e.g. ``https://10.0.0.5:10250``.
    url: str
    token_file: Path = SERVICE_ACCOUNT / "token"
    ca_file: Path = SERVICE_ACCOUNT / "ca.crt"
    serving_cert: Path = KUBELET_SERVING_CERT

    def tls(self) -> ssl.SSLContext:
        pinned = node_tools.node_path(self.serving_cert)
        if pinned.exists():
            context = ssl.create_default_context(cafile=str(pinned))
            context.check_hostname = False  # pinned: the one certificate this kubelet serves
            return context
        return ssl.create_default_context(cafile=str(self.ca_file))

    def checkpoint_url(self, namespace: str, pod: str, container: str, timeout: int) -> str:
        path = "/".join(urllib.parse.quote(part, safe="") for part in (namespace, pod, container))
        return f"{self.url.rstrip('/')}/checkpoint/{path}?timeout={timeout}"

    def checkpoint_sync(self, namespace: str, pod: str, container: str, timeout: int) -> str:
        """Have the kubelet checkpoint the container; the archive's path in the node."""
        url = self.checkpoint_url(namespace, pod, container, timeout)
        try:
            token = self.token_file.read_text().strip()
            request = urllib.request.Request(  # noqa: S310 - https, this node's kubelet
                url, method="POST", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(  # noqa: S310
                request, context=self.tls(), timeout=timeout + SLACK_SECONDS
            ) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace").strip()[:MAX_ERROR_TEXT]
            raise KubeletError(
                f"kubelet {url}: HTTP {error.code}: {body}{criu_errors(body)}"
            ) from None
        except (OSError, ValueError) as error:  # URLError, TLS, timeout, a body not JSON
            raise KubeletError(f"kubelet {url}: {error}") from None
        items = answer.get("items") if isinstance(answer, dict) else None
        if not items or not isinstance(items[0], str):
            raise KubeletError(f"kubelet {url}: answered no archive: {answer!r:.{MAX_ERROR_TEXT}}")
        return items[0]

    async def checkpoint(self, namespace: str, pod: str, container: str, seconds: int) -> str:
        """:meth:`checkpoint_sync` in a thread; ``seconds``: the kubelet's own time limit."""
        return await asyncio.to_thread(self.checkpoint_sync, namespace, pod, container, seconds)
