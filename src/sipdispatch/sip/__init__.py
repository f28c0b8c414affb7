"""Sans-I/O SIP: codec, messages and transactions. No sockets, no clock, no asyncio."""
