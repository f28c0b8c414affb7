"""The shared floor of both planes: what the proxy and the operator agree on.

The custom resources' models (:mod:`.models`), the DispatcherReport the proxy writes and the
operator reads (:mod:`.report`), the CRD generator (:mod:`.crd`) and the names both sides use
(:mod:`.names`). Nothing here does I/O; ``proxy`` and ``operator`` both import
it, and it imports neither.
"""
