"""sipdispatch: a Kubernetes-native SIP load balancer (dispatcher) for gateway clusters."""

__version__ = "0.1.0"
