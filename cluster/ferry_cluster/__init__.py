"""A local Kubernetes cluster from real parts: kube-apiserver, etcd and simulated nodes."""
