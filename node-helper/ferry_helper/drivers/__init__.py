"""The container runtimes' drivers, and what the helper may ask of each.

A driver runs one runtime's tools on this node (podman, docker) and returns the
records of :mod:`.records`, the same for every runtime. What a driver can do is
said by the protocols of :mod:`.capabilities`, checked by type: every driver
checkpoints into an archive and restores from one; podman's also sends memory
to CRIU's page server and makes checkpoint images. The helper's operations ask
``isinstance(driver, PageServerCapable)``, never which runtime it is.

This package imports nothing of the operations, the SSH server or the wire
protocol: drivers know runtimes, not migrations.
"""
