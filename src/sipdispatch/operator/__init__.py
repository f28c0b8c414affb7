"""The control plane: a kopf operator for DispatcherSet resources."""
