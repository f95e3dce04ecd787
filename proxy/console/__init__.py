"""The web console: quarantine search and release, live status, digest release links.

Served by spamgate itself with aiohttp (the same HTTP stack as /metrics) on its own
``[console]`` listener, and only once ``admin_file`` holds an account. Pages are
rendered on the server from escaped templates; there is no JavaScript at all.
"""

from spamgate.proxy.console.server import ConsoleServer

__all__ = ["ConsoleServer"]
