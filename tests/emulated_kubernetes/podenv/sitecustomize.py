"""Cluster DNS for processes of the EMULATED Kubernetes cluster (tests only).

The emulated kubelet and the Dask operator it runs put this folder on
PYTHONPATH.  Names of the form ``<service>.<namespace>[.svc[.cluster.local]]``
resolve, through the emulated API server, to the address of a pod the
service selects, as cluster DNS would inside a real cluster; every other name
resolves as usual.  Nothing happens unless DASKFLOW_EMULATED_KUBERNETES is set.
"""

import os

_API = os.environ.get("DASKFLOW_EMULATED_KUBERNETES")

if _API:
    import json
    import re
    import socket
    import urllib.parse
    import urllib.request

    _SERVICE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+(\.svc(\.cluster\.local)?)?\.?$")
    _getaddrinfo = socket.getaddrinfo

    def _lookup(host):
        url = f"{_API}/emulator/resolve?host={urllib.parse.quote(host)}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own server
            return json.load(resp)["ip"]

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and _SERVICE.match(host):
            try:
                ip = _lookup(host)
            except OSError:
                ip = None
            if ip is None:
                raise socket.gaierror(socket.EAI_NONAME, f"{host}: not found in emulated cluster DNS")
            host = ip
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
