"""The data plane: a SIP proxy that dispatches calls over destination sets."""
