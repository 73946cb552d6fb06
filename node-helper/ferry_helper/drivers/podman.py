"""The podman driver: every capability Ferry has, podman has.

:class:`PodmanDriver` is the archive checkpointer of :mod:`.podman_core`
(through its CLI, and its REST API where that is quicker), with the page
server of :mod:`.podman_pages` and the images of :mod:`.podman_images`. What
podman prints is read in :mod:`.podman_parsing`. Each module says what was
found running podman 5.4.2 + crun 1.21 + CRIU 4.2.1 on the simulated nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .podman_images import PodmanImages
from .podman_pages import PodmanPageServer

if TYPE_CHECKING:
    from .capabilities import CheckpointImageCapable, Driver, PageServerCapable


class PodmanDriver(PodmanPageServer, PodmanImages):
    """Podman on this node: :class:`~.capabilities.Driver`, and also
    :class:`~.capabilities.PageServerCapable` and :class:`~.capabilities.CheckpointImageCapable`.
    """


if TYPE_CHECKING:
    # mypy checks here that the driver has each capability's methods, signatures and all.
    _DRIVER: type[Driver] = PodmanDriver
    _PAGE_SERVER: type[PageServerCapable] = PodmanDriver
    _CHECKPOINT_IMAGES: type[CheckpointImageCapable] = PodmanDriver
