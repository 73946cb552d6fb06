"""The Ferry node-helper: a privileged agent per node that checkpoints and restores
containers with podman and CRIU, and streams archives node to node over SSH."""
