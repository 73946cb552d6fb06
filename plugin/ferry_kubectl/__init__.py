"""kubectl ferry: the kubectl plugin for Ferry's migrations, checkpoints and node-helpers."""
