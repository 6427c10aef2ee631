"""WAN simulation in user space: the kernel here has no netem, so latency is added by a
TCP forwarder (`DelayProxy`) placed in front of each server. `shaping` holds the pure
timing rules; `python -m devtools.netsim` runs one proxy from the command line."""

from devtools.netsim.proxy import DelayProxy
from devtools.netsim.shaping import LinkShaper, TokenBucket

__all__ = ["DelayProxy", "LinkShaper", "TokenBucket"]
