"""An EMULATED Kubernetes cluster on 127.0.0.1, for tests only.

Kubernetes cannot run on these machines (no container runtime, no kubelet),
so this one process plays its parts, with real Kubernetes semantics where
the Dask operator and ``KubeCluster`` can see them:

- an API server (aiohttp): discovery, namespaced and cluster-wide REST for
  core/v1, apps/v1, apiextensions.k8s.io/v1 and every CRD posted to it
  (the Dask operator's own CRDs are loaded at start), with list and watch
  (resourceVersion, label and field selectors), create, get, replace,
  merge/strategic/JSON patch, delete with finalizers, the status and scale
  subresources, pod logs and events;
- a garbage collector: deleting an object deletes what it owns
  (``ownerReferences``), as Kubernetes does for a deleted DaskCluster;
- a deployment controller (one pod per replica, owned by the deployment);
- a "kubelet": each pod gets a loopback address of its own (127.N.x.y, with N
  picked per emulator so that two test sessions on one machine never share one)
  and its first container runs as a real local process from this machine's
  Python environment (the emulated "image"; an unknown image never pulls).
  Dask processes are bound to the pod's address.  Readiness probes
  (httpGet, tcpSocket) are checked; ``restartPolicy`` is honoured; deleting
  a pod sends SIGTERM, then SIGKILL after the grace period;
- cluster DNS: ``<service>.<namespace>[.svc[.cluster.local]]`` resolves to
  the IP of a pod the service selects (``/emulator/resolve``, used by the
  ``podenv/sitecustomize.py`` hook of every process it starts);
- a LoadBalancer controller: a ``LoadBalancer`` service gets an ingress IP
  (its ready pod's loopback address) once a pod it selects is ready, so no
  port-forward is needed.

It also runs the real Dask operator (dask-kubernetes' kopf controller) as a
process talking to this API, so DaskCluster resources are handled by the
operator users install with helm, not by a re-implementation.

Not emulated: authentication, RBAC, admission, ReplicaSets, kube-proxy
(ClusterIP traffic goes to the pod address DNS gives), exec and
port-forward, resource limits.

Run: ``python server.py WORKDIR``; it writes WORKDIR/kubeconfig and
WORKDIR/ready (the API URL) once it serves, and ends everything it started
on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import glob
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import yaml
from aiohttp import web

HERE = os.path.dirname(os.path.abspath(__file__))
PODENV = os.path.join(HERE, "podenv")
MARKER = "DASKFLOW_EMULATED_KUBERNETES"  # env var every process we start carries

# "Images" this emulated node can run: all of them are this Python environment.
IMAGES = ("ghcr.io/dask/dask", "daskdev/dask", "ghcr.io/dask/dask-kubernetes-operator")
COMMANDS = {"dask-scheduler": ["dask", "scheduler"], "dask-worker": ["dask", "worker"]}

# (group, version) -> plural -> (kind, namespaced, subresources)
BUILTIN: dict[tuple[str, str], dict[str, tuple[str, bool, tuple[str, ...]]]] = {
    ("", "v1"): {
        "pods": ("Pod", True, ("status", "log")),
        "services": ("Service", True, ("status",)),
        "endpoints": ("Endpoints", True, ()),
        "events": ("Event", True, ()),
        "configmaps": ("ConfigMap", True, ()),
        "secrets": ("Secret", True, ()),
        "serviceaccounts": ("ServiceAccount", True, ()),
        "namespaces": ("Namespace", False, ("status",)),
        "nodes": ("Node", False, ("status",)),
    },
    ("apps", "v1"): {
        "deployments": ("Deployment", True, ("status", "scale")),
        "replicasets": ("ReplicaSet", True, ("status", "scale")),
    },
    ("apiextensions.k8s.io", "v1"): {
        "customresourcedefinitions": ("CustomResourceDefinition", False, ("status",)),
    },
    ("events.k8s.io", "v1"): {"events": ("Event", True, ())},
    ("coordination.k8s.io", "v1"): {"leases": ("Lease", True, ())},
}


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_error(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    return web.json_response(body, status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, test)."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return doc


def dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def label_match(labels: dict[str, str], selector: str | None) -> bool:
    if not selector:
        return True
    for term in re.split(r",(?![^(]*\))", selector):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([\w./-]+)\s+(in|notin)\s+\((.*)\)$", term)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if (op == "in") != (labels.get(key) in values):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(obj: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            path, value = term.split("!=", 1)
            if str(dig(obj, path.strip())) == value.strip():
                return False
        elif "=" in term:
            path, value = term.replace("==", "=").split("=", 1)
            if str(dig(obj, path.strip())) != value.strip():
                return False
    return True


def selects(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Store:
    """Every object, a resourceVersion counter, an event log and watchers."""

    def __init__(self) -> None:
        self.types = copy.deepcopy(BUILTIN)
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.rv = itertools.count(1)
        self.last_rv = 0
        self.log: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.watchers: dict[asyncio.Queue, tuple[str, str]] = {}
        self.changed = asyncio.Event()

    # -- types --------------------------------------------------------------------
    def lookup(self, group: str, version: str, plural: str) -> tuple[str, bool, tuple[str, ...]]:
        return self.types[(group, version)][plural]

    def add_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for v in spec["versions"]:
            if v.get("served", True):
                subs = tuple((v.get("subresources") or spec.get("subresources") or {}).keys())
                self.types.setdefault((spec["group"], v["name"]), {})[spec["names"]["plural"]] = (
                    spec["names"]["kind"], spec.get("scope", "Namespaced") == "Namespaced", subs)

    # -- objects ------------------------------------------------------------------
    def bucket(self, group: str, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault((group, plural), {})

    def items(self, group: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (ns, _), o in sorted(self.bucket(group, plural).items())
                if namespace is None or ns == namespace]

    def get(self, group: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.bucket(group, plural).get((namespace or "", name))

    def emit(self, group: str, plural: str, kind: str, obj: dict[str, Any]) -> None:
        snapshot = copy.deepcopy(obj)
        rv = int(obj["metadata"]["resourceVersion"])
        self.last_rv = rv
        self.log.append((rv, group, plural, kind, snapshot))
        if len(self.log) > 20000:
            del self.log[:5000]
        for q in list(self.watchers):
            q.put_nowait((rv, group, plural, kind, snapshot))
        self.changed.set()

    def end_watches(self) -> None:
        """End every open watch (as an API server that stops does): a watch
        that waited for its next event would hold the server's shutdown."""
        for q in list(self.watchers):
            q.put_nowait(None)

    def put(self, group: str, plural: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = str(next(self.rv))
        self.bucket(group, plural)[(meta.get("namespace", ""), meta["name"])] = obj
        self.emit(group, plural, event, obj)
        return obj

    def create(self, group: str, version: str, plural: str, namespace: str | None,
               obj: dict[str, Any]) -> dict[str, Any]:
        kind, namespaced, _ = self.lookup(group, version, plural)
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise KeyError("name or generateName is required")
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        if self.get(group, plural, meta.get("namespace", ""), meta["name"]) is not None:
            raise FileExistsError(meta["name"])
        obj["apiVersion"] = f"{group}/{version}" if group else version
        obj["kind"] = kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_iso(), generation=1)
        meta.setdefault("labels", {})
        meta.setdefault("annotations", {})
        if kind == "Service":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            # Never routed: cluster DNS answers with pod addresses (no kube-proxy).
            spec.setdefault("clusterIP", f"10.96.0.{1 + len(self.bucket('', 'services')) % 250}")
            obj.setdefault("status", {"loadBalancer": {}})
        if kind == "Pod":
            obj.setdefault("status", {"phase": "Pending", "conditions": []})
        if kind == "CustomResourceDefinition":
            self.add_crd(obj)
        return self.put(group, plural, obj, "ADDED")

    def update(self, group: str, plural: str, obj: dict[str, Any], new: dict[str, Any],
               *, status_only: bool = False, spec_only: bool = False) -> dict[str, Any]:
        """Store ``new`` as the next version of ``obj`` (keeping what may not change)."""
        new = copy.deepcopy(new)
        if status_only:
            merged = copy.deepcopy(obj)
            merged["status"] = new.get("status", {})
            new = merged
        elif spec_only and "status" in obj:
            new["status"] = copy.deepcopy(obj["status"])
        meta = new.setdefault("metadata", {})
        for key in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if key in obj["metadata"]:
                meta[key] = obj["metadata"][key]
        meta["generation"] = obj["metadata"].get("generation", 1) + (
            new.get("spec") != obj.get("spec"))
        new["apiVersion"], new["kind"] = obj["apiVersion"], obj["kind"]
        meta["resourceVersion"] = obj["metadata"]["resourceVersion"]
        if new == obj:
            return obj  # nothing changed: no new version, no event
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self.remove(group, plural, new)
        return self.put(group, plural, new, "MODIFIED")

    def remove(self, group: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        self.bucket(group, plural).pop((meta.get("namespace", ""), meta["name"]), None)
        meta["resourceVersion"] = str(next(self.rv))
        self.emit(group, plural, "DELETED", obj)
        self.collect_garbage(meta["uid"])
        return obj

    def delete(self, group: str, plural: str, obj: dict[str, Any],
               grace: float | None = None) -> dict[str, Any]:
        """Delete: mark it (pods and finalized objects), or remove it now."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return obj
        if obj["kind"] == "Pod" or meta.get("finalizers"):
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now_iso()
            if grace is not None:
                new["metadata"]["deletionGracePeriodSeconds"] = int(grace)
            return self.put(group, plural, new, "MODIFIED")
        return self.remove(group, plural, obj)

    def collect_garbage(self, owner_uid: str) -> None:
        """Delete every object that names ``owner_uid`` among its owners."""
        for (group, plural), bucket in list(self.objects.items()):
            for obj in list(bucket.values()):
                owners = obj["metadata"].get("ownerReferences") or []
                if any(o.get("uid") == owner_uid for o in owners):
                    self.delete(group, plural, obj)


class Api:
    """The REST surface over a Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self.route)
        return app

    async def route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        try:
            if not parts or parts == ["healthz"] or parts == ["readyz"] or parts == ["livez"]:
                return web.Response(text="ok")
            if parts == ["version"]:
                return web.json_response({"major": "1", "minor": "30", "gitVersion": "v1.30.0-emulated",
                                          "platform": "linux/amd64"})
            if parts[0] == "emulator":
                return self.emulator(request, parts[1:])
            if parts[0] == "api":
                if len(parts) == 1:
                    return web.json_response({"kind": "APIVersions", "versions": ["v1"],
                                              "serverAddressByClientCIDRs": []})
                group, version, rest = "", parts[1], parts[2:]
            elif parts[0] == "apis":
                if len(parts) == 1:
                    return web.json_response(self.group_list())
                if len(parts) == 2:
                    return web.json_response(self.group(parts[1]))
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                return status_error(404, "NotFound", f"no route {request.path}")
            if (group, version) not in self.store.types:
                return status_error(404, "NotFound", f"the server could not find {group}/{version}")
            if not rest:
                return web.json_response(self.resource_list(group, version))
            return await self.resource(request, group, version, rest)
        except (ValueError, KeyError, TypeError) as err:
            return status_error(400, "BadRequest", f"{type(err).__name__}: {err}")

    # -- discovery ------------------------------------------------------------------
    def group(self, name: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{g}/{v}", "version": v} for g, v in self.store.types if g == name]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions,
                "preferredVersion": versions[0] if versions else None}

    def group_list(self) -> dict[str, Any]:
        names = sorted({g for g, _ in self.store.types if g})
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [self.group(n) for n in names]}

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources = []
        for plural, (kind, namespaced, subs) in self.store.types[(group, version)].items():
            verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            resources.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                              "kind": kind, "verbs": verbs})
            for sub in subs:
                resources.append({"name": f"{plural}/{sub}", "singularName": "", "namespaced": namespaced,
                                  "kind": "Scale" if sub == "scale" else kind,
                                  "verbs": ["get", "patch", "update"]})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    # -- resources --------------------------------------------------------------------
    async def resource(self, request: web.Request, group: str, version: str,
                       rest: list[str]) -> web.StreamResponse:
        store = self.store
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else None)
        try:
            kind, namespaced, subs = store.lookup(group, version, plural)
        except KeyError:
            return status_error(404, "NotFound", f"the server could not find the requested resource ({plural})")
        if sub and sub not in subs:
            return status_error(404, "NotFound", f"{plural} has no subresource {sub}")
        method = request.method
        if name is None:
            if method == "GET":
                if request.query.get("watch") in ("1", "true"):
                    return await self.watch(request, group, plural, namespace)
                return web.json_response(self.listing(request, group, version, plural, kind, namespace))
            if method == "POST":
                body = await request.json()
                try:
                    obj = store.create(group, version, plural, namespace if namespaced else None, body)
                except FileExistsError as err:
                    return status_error(409, "AlreadyExists", f'{plural} "{err}" already exists')
                return web.json_response(obj, status=201)
            if method == "DELETE":
                for obj in [o for o in store.items(group, plural, namespace)
                            if label_match(o["metadata"].get("labels", {}), request.query.get("labelSelector"))]:
                    store.delete(group, plural, obj)
                return web.json_response({"kind": "Status", "status": "Success"})
            return status_error(405, "MethodNotAllowed", method)
        obj = store.get(group, plural, namespace or "", name)
        if obj is None:
            return status_error(404, "NotFound", f'{plural}.{group or "core"} "{name}" not found')
        if sub == "log":
            return web.Response(text=Kubelet.read_log(obj))
        if sub == "scale":
            return await self.scale(request, group, plural, obj)
        if method == "GET":
            return web.json_response(obj)
        if method == "PUT":
            new = await request.json()
            want = new.get("metadata", {}).get("resourceVersion")
            if want and want != obj["metadata"]["resourceVersion"]:
                return status_error(409, "Conflict", "the object has been modified")
            return web.json_response(store.update(group, plural, obj, new, status_only=sub == "status",
                                                  spec_only="status" in subs and sub is None))
        if method == "PATCH":
            body = await request.json()
            ctype = request.headers.get("Content-Type", "")
            if "json-patch" in ctype:
                new = json_patch(obj, body)
            else:  # merge and strategic merge (lists replaced, as merge patch does)
                new = merge_patch(obj, body)
            return web.json_response(store.update(group, plural, obj, new, status_only=sub == "status",
                                                  spec_only="status" in subs and sub is None))
        if method == "DELETE":
            grace = None
            with contextlib.suppress(Exception):
                options = await request.json()
                grace = options.get("gracePeriodSeconds")
            if request.query.get("gracePeriodSeconds") is not None:
                grace = float(request.query["gracePeriodSeconds"])
            return web.json_response(store.delete(group, plural, obj, grace))
        return status_error(405, "MethodNotAllowed", method)

    def listing(self, request: web.Request, group: str, version: str, plural: str, kind: str,
                namespace: str | None) -> dict[str, Any]:
        items = [o for o in self.store.items(group, plural, namespace)
                 if label_match(o["metadata"].get("labels", {}), request.query.get("labelSelector"))
                 and field_match(o, request.query.get("fieldSelector"))]
        return {"kind": f"{kind}List", "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": str(self.store.last_rv)}, "items": items}

    async def scale(self, request: web.Request, group: str, plural: str,
                    obj: dict[str, Any]) -> web.Response:
        path = "spec.worker.replicas" if group == "kubernetes.dask.org" else "spec.replicas"
        if request.method in ("PATCH", "PUT"):
            body = await request.json()
            replicas = body["spec"]["replicas"]
            spec_patch: dict[str, Any] = {}
            node = spec_patch
            keys = path.split(".")
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = replicas
            obj = self.store.update(group, plural, obj, merge_patch(obj, spec_patch))
        return web.json_response({
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion")
                         if k in obj["metadata"]},
            "spec": {"replicas": dig(obj, path) or 0},
            "status": {"replicas": dig(obj, "status.replicas") or 0}})

    async def watch(self, request: web.Request, group: str, plural: str,
                    namespace: str | None) -> web.StreamResponse:
        labels, fields = request.query.get("labelSelector"), request.query.get("fieldSelector")
        since = request.query.get("resourceVersion")
        timeout = float(request.query.get("timeoutSeconds", 1800))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self.store.watchers[queue] = (group, plural)

        def wanted(g: str, p: str, obj: dict[str, Any]) -> bool:
            return (g == group and p == plural
                    and (namespace is None or obj["metadata"].get("namespace") == namespace)
                    and label_match(obj["metadata"].get("labels", {}), labels) and field_match(obj, fields))

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            if since in (None, "", "0"):
                for obj in self.store.items(group, plural, namespace):
                    if wanted(group, plural, obj):
                        await send("ADDED", obj)
                start = self.store.last_rv
            else:
                start = int(since)
                if self.store.log and start < self.store.log[0][0] - 1:
                    await send("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "reason": "Expired", "code": 410,
                                         "message": f"too old resource version: {start}"})
                    return response
                for rv, g, p, kind, obj in list(self.store.log):
                    if rv > start and wanted(g, p, obj):
                        await send(kind, obj)
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    event = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if event is None:  # the server stops
                    break
                rv, g, p, kind, obj = event
                if rv > start and wanted(g, p, obj):
                    await send(kind, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.pop(queue, None)
        return response

    # -- the emulator's own endpoints ------------------------------------------------
    def emulator(self, request: web.Request, parts: list[str]) -> web.Response:
        if parts == ["resolve"]:
            ip = resolve(self.store, request.query.get("host", ""))
            return web.json_response({"ip": ip})
        if parts == ["watches"]:
            return web.json_response(sorted(f"{p}.{g}" if g else p for g, p in self.store.watchers.values()))
        return status_error(404, "NotFound", "no such emulator endpoint")


SERVICE_HOST = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                          r"(\.svc(\.cluster\.local)?)?\.?$")


def resolve(store: Store, host: str) -> str | None:
    """Cluster DNS: a service name to the address of a pod it selects."""
    m = SERVICE_HOST.match(host)
    if not m:
        return None
    service = store.get("", "services", m.group(3), m.group(1))
    if service is None:
        return None
    pods = [p for p in store.items("", "pods", m.group(3))
            if selects(service["spec"].get("selector"), p["metadata"].get("labels", {}))
            and p.get("status", {}).get("podIP") and not p["metadata"].get("deletionTimestamp")]
    pods.sort(key=lambda p: not Kubelet.is_ready(p))
    return pods[0]["status"]["podIP"] if pods else None


def _free_loopback_net() -> int:
    """A second octet N in 127.N.0.0/16 (N >= 64) whose first pod address is free here."""
    import socket

    start = os.getpid() % 180
    for k in range(180):
        net = 64 + (start + k) % 180
        with socket.socket() as probe:
            try:
                probe.bind((f"127.{net}.0.2", 8786))
            except OSError:
                continue
        return net
    raise RuntimeError("no free 127.N.0.0/16 loopback network for the emulated pods")


class Kubelet:
    """Runs pods as local processes, each bound to a loopback address of its own."""

    def __init__(self, store: Store, workdir: str, api_url: str) -> None:
        self.store = store
        self.workdir = workdir
        self.api_url = api_url
        self.procs: dict[str, subprocess.Popen] = {}  # pod uid -> process
        self.killing: dict[str, float] = {}  # pod uid -> when SIGKILL is due
        self.next_probe: dict[str, float] = {}
        self.restart_at: dict[str, float] = {}
        net = _free_loopback_net()
        self.ips = (f"127.{net}.{i // 250}.{2 + i % 250}" for i in itertools.count())

    @staticmethod
    def is_ready(pod: dict[str, Any]) -> bool:
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in pod.get("status", {}).get("conditions", []))

    @staticmethod
    def read_log(pod: dict[str, Any]) -> str:
        path = pod.get("metadata", {}).get("annotations", {}).get("emulated.kubernetes/log")
        if not path or not os.path.exists(path):
            return ""
        with open(path, errors="replace") as f:
            return f.read()

    def set_status(self, pod: dict[str, Any], **status: Any) -> dict[str, Any]:
        new = copy.deepcopy(pod)
        new["status"] = {**pod.get("status", {}), **status}
        return self.store.update("", "pods", pod, new)

    def reconcile(self) -> None:
        now = time.monotonic()
        for pod in self.store.items("", "pods"):
            uid = pod["metadata"]["uid"]
            if pod["metadata"].get("deletionTimestamp"):
                self.terminate(pod, now)
                continue
            phase = pod.get("status", {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                continue
            if uid not in self.procs:
                if now >= self.restart_at.get(uid, 0):
                    self.start(pod)
                continue
            proc = self.procs[uid]
            code = proc.poll()
            if code is not None:
                self.exited(pod, code)
            elif not self.is_ready(pod) or now >= self.next_probe.get(uid, 0):
                self.probe(pod, now)
        for uid in [u for u in self.procs if not any(p["metadata"]["uid"] == u
                                                     for p in self.store.items("", "pods"))]:
            self.kill(uid)

    def container(self, pod: dict[str, Any]) -> dict[str, Any]:
        return pod["spec"]["containers"][0]

    def start(self, pod: dict[str, Any]) -> None:
        c = self.container(pod)
        status = pod.get("status", {})
        ip = status.get("podIP") or next(self.ips)
        image = c.get("image", "")
        base = {"hostIP": "127.0.0.1", "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": status.get("startTime") or now_iso()}
        if not image.split(":")[0].split("@")[0].endswith(IMAGES):
            waiting = {"waiting": {"reason": "ErrImagePull",
                                   "message": f"emulated node cannot pull {image!r}"}}
            if (status.get("containerStatuses") or [{}])[0].get("state") != waiting:
                self.set_status(pod, phase="Pending", **base, containerStatuses=[
                    {"name": c["name"], "state": waiting, "ready": False, "restartCount": 0,
                     "image": image}])
            return
        pod = self.set_status(pod, **base, nodeName="emulated-node")
        env = self.environment(pod, c, ip)
        argv = [self.expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        argv = bind_to_pod(COMMANDS.get(argv[0], argv[:1]) + argv[1:], ip) if argv else argv
        exe = shutil.which(argv[0], path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", "")) if argv else None
        log = os.path.join(self.workdir, "logs", f"{pod['metadata']['namespace']}_{pod['metadata']['name']}.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        restarts = sum(cs.get("restartCount", 0) for cs in status.get("containerStatuses", []))
        if exe is None:
            self.set_status(pod, phase="Failed", containerStatuses=[{
                "name": c["name"], "ready": False, "restartCount": restarts, "image": image,
                "state": {"terminated": {"exitCode": 127, "reason": "ContainerCannotRun",
                                         "message": f"executable not found: {argv[:1]}"}}}])
            return
        with open(log, "ab") as out:
            proc = subprocess.Popen([exe] + argv[1:], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.workdir)
        self.procs[pod["metadata"]["uid"]] = proc
        new = copy.deepcopy(pod)
        new["metadata"]["annotations"]["emulated.kubernetes/log"] = log
        new["metadata"]["annotations"]["emulated.kubernetes/pid"] = str(proc.pid)
        new["status"].update(phase="Running", conditions=[
            {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "False"}, {"type": "Ready", "status": "False"}],
            containerStatuses=[{"name": c["name"], "ready": False, "restartCount": restarts,
                                "image": image, "started": True,
                                "state": {"running": {"startedAt": now_iso()}}}])
        self.store.update("", "pods", pod, new)

    def environment(self, pod: dict[str, Any], c: dict[str, Any], ip: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (PODENV, env.get("PYTHONPATH", "")) if p)
        env.update({MARKER: self.api_url, "HOSTNAME": pod["metadata"]["name"],
                    "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                    # the node's ephemeral storage: scratch space stays in the workdir
                    "DASK_TEMPORARY_DIRECTORY": os.path.join(self.workdir, "scratch")})
        fields = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": pod["metadata"]["namespace"],
                  "status.podIP": ip, "spec.nodeName": "emulated-node"}
        for item in c.get("env") or []:
            if "value" in item:
                env[item["name"]] = self.expand(str(item["value"]), env)
            elif "fieldRef" in item.get("valueFrom", {}):
                env[item["name"]] = fields.get(item["valueFrom"]["fieldRef"]["fieldPath"], "")
        return env

    @staticmethod
    def expand(text: str, env: dict[str, str]) -> str:
        return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)

    def probe(self, pod: dict[str, Any], now: float) -> None:
        c = self.container(pod)
        probe = c.get("readinessProbe")
        ok = True
        if probe:
            self.next_probe[pod["metadata"]["uid"]] = now + float(probe.get("periodSeconds", 10))
            port = probe.get("httpGet", probe.get("tcpSocket", {})).get("port")
            if isinstance(port, str):
                port = next((p["containerPort"] for p in c.get("ports", []) if p.get("name") == port), None)
            ok = port is not None and self.check(pod["status"]["podIP"], int(port), probe.get("httpGet"))
        else:
            self.next_probe[pod["metadata"]["uid"]] = now + 3600
        if ok != self.is_ready(pod):
            new = copy.deepcopy(pod)
            flag = "True" if ok else "False"
            for cond in new["status"]["conditions"]:
                if cond["type"] in ("Ready", "ContainersReady"):
                    cond["status"] = flag
            for cs in new["status"]["containerStatuses"]:
                cs["ready"] = ok
            self.store.update("", "pods", pod, new)

    @staticmethod
    def check(ip: str, port: int, http: dict[str, Any] | None) -> bool:
        try:
            with socket.create_connection((ip, port), timeout=0.5) as sock:
                if not http:
                    return True
                sock.sendall(f"GET {http.get('path', '/')} HTTP/1.0\r\nHost: {ip}\r\n\r\n".encode())
                head = sock.recv(64).decode(errors="replace")
                return bool(re.match(r"HTTP/1\.\d [23]\d\d", head))
        except OSError:
            return False

    def exited(self, pod: dict[str, Any], code: int) -> None:
        uid = pod["metadata"]["uid"]
        self.procs.pop(uid, None)
        c = self.container(pod)
        policy = pod["spec"].get("restartPolicy", "Always")
        restarts = pod["status"]["containerStatuses"][0].get("restartCount", 0)
        terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            delay = min(10 * 2 ** restarts, 300) if restarts else 1
            self.restart_at[uid] = time.monotonic() + delay
            self.set_status(pod, conditions=[{"type": "Ready", "status": "False"}], containerStatuses=[{
                "name": c["name"], "ready": False, "restartCount": restarts + 1, "image": c.get("image"),
                "lastState": {"terminated": terminated},
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])
        else:
            self.set_status(pod, phase="Succeeded" if code == 0 else "Failed",
                            conditions=[{"type": "Ready", "status": "False"}],
                            containerStatuses=[{"name": c["name"], "ready": False, "restartCount": restarts,
                                                "image": c.get("image"), "state": {"terminated": terminated}}])

    def terminate(self, pod: dict[str, Any], now: float) -> None:
        """A deleted pod: SIGTERM, SIGKILL after its grace period, then remove it."""
        uid = pod["metadata"]["uid"]
        proc = self.procs.get(uid)
        if proc is not None and proc.poll() is None:
            if uid not in self.killing:
                grace = pod["metadata"].get("deletionGracePeriodSeconds",
                                            pod["spec"].get("terminationGracePeriodSeconds", 30))
                self.killing[uid] = now + float(grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                return
            if now < self.killing[uid]:
                return
        self.kill(uid)
        self.store.remove("", "pods", pod)

    def kill(self, uid: str) -> None:
        proc = self.procs.pop(uid, None)
        self.killing.pop(uid, None)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def shutdown(self) -> None:
        for uid in list(self.procs):
            self.kill(uid)


def bind_to_pod(argv: list[str], ip: str) -> list[str]:
    """Pod networking on one machine: a dask process listens on its pod's address."""
    if argv[:1] != ["dask"] or len(argv) < 2 or argv[1] not in ("scheduler", "worker"):
        return argv
    out, i, dashboard = list(argv[:2]), 2, False
    while i < len(argv):
        arg = argv[i]
        if arg == "--host" and i + 1 < len(argv):
            i += 2
            continue
        if arg == "--dashboard-address" and i + 1 < len(argv):
            port = argv[i + 1].rsplit(":", 1)[-1]
            out += ["--dashboard-address", f"{ip}:{port}"]
            dashboard, i = True, i + 2
            continue
        out.append(arg)
        i += 1
    out += ["--host", ip]
    if not dashboard:
        out += ["--dashboard-address", f"{ip}:{8787 if argv[1] == 'scheduler' else 0}"]
    return out


class Controllers:
    """Deployments, garbage collection of owned objects, load balancers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def reconcile(self) -> None:
        self.deployments()
        self.load_balancers()

    def owned(self, plural: str, owner: dict[str, Any], group: str = "") -> list[dict[str, Any]]:
        uid = owner["metadata"]["uid"]
        return [o for o in self.store.items(group, plural, owner["metadata"].get("namespace"))
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def deployments(self) -> None:
        store = self.store
        for dep in store.items("apps", "deployments"):
            if dep["metadata"].get("deletionTimestamp"):
                continue
            pods = [p for p in self.owned("pods", dep) if not p["metadata"].get("deletionTimestamp")]
            want = int(dep["spec"].get("replicas", 1))
            for _ in range(want - len(pods)):
                template = copy.deepcopy(dep["spec"]["template"])
                meta = template.setdefault("metadata", {})
                meta.pop("name", None)
                meta["generateName"] = dep["metadata"]["name"] + "-"
                meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment",
                                            "name": dep["metadata"]["name"], "uid": dep["metadata"]["uid"],
                                            "controller": True, "blockOwnerDeletion": True}]
                template["spec"].setdefault("restartPolicy", "Always")
                store.create("", "v1", "pods", dep["metadata"]["namespace"],
                             {"metadata": meta, "spec": template["spec"]})
            for pod in pods[want:] if want < len(pods) else []:
                store.delete("", "pods", pod)
            pods = [p for p in self.owned("pods", dep) if not p["metadata"].get("deletionTimestamp")]
            ready = sum(Kubelet.is_ready(p) for p in pods)
            status = {"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready,
                      "updatedReplicas": len(pods), "observedGeneration": dep["metadata"].get("generation", 1)}
            if dep.get("status") != status:
                store.update("apps", "deployments", dep, {**dep, "status": status}, status_only=True)

    def load_balancers(self) -> None:
        for svc in self.store.items("", "services"):
            if svc["spec"].get("type") != "LoadBalancer":
                continue
            ready = [p for p in self.store.items("", "pods", svc["metadata"]["namespace"])
                     if selects(svc["spec"].get("selector"), p["metadata"].get("labels", {}))
                     and Kubelet.is_ready(p) and not p["metadata"].get("deletionTimestamp")]
            current = svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])
            if not ready and current:
                continue  # like a real load balancer, its address stays while a pod is unready
            ingress = [{"ip": ready[0]["status"]["podIP"]}] if ready else []
            if current != ingress:
                self.store.update("", "services", svc, {**svc, "status": {"loadBalancer":
                                  {"ingress": ingress} if ingress else {}}}, status_only=True)


def load_dask_crds(store: Store) -> None:
    """The Dask operator's CRDs, from the installed dask-kubernetes (its helm chart's copies)."""
    import dask_kubernetes

    root = os.path.dirname(dask_kubernetes.__file__)
    paths = glob.glob(os.path.join(root, "operator", "deployment", "helm", "dask-kubernetes-operator",
                                   "crds", "*.yaml"))
    paths = paths or glob.glob(os.path.join(root, "operator", "customresources", "dask*.yaml"))
    for path in sorted(paths):
        if path.endswith(".patch.yaml"):
            continue
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    store.create("apiextensions.k8s.io", "v1", "customresourcedefinitions", None, doc)


def write_kubeconfig(path: str, url: str) -> None:
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "emulated", "cluster": {"server": url}}],
        "users": [{"name": "emulated", "user": {"token": "emulated"}}],
        "contexts": [{"name": "emulated", "context": {"cluster": "emulated", "user": "emulated",
                                                      "namespace": "default"}}],
        "current-context": "emulated",
    }
    with open(path, "w") as f:
        yaml.safe_dump(config, f)


def start_operator(workdir: str, api_url: str, kubeconfig: str) -> subprocess.Popen:
    """The real Dask operator (kopf), as the helm chart runs it, against this API."""
    env = dict(os.environ)
    env.update({"KUBECONFIG": kubeconfig, MARKER: api_url,
                "PYTHONPATH": os.pathsep.join(p for p in (PODENV, env.get("PYTHONPATH", "")) if p)})
    log = open(os.path.join(workdir, "operator.log"), "ab")  # noqa: SIM115 - owned by the child
    # --standalone: one operator, no peering objects to emulate.
    argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--all-namespaces",
            "-m", "dask_kubernetes.operator.controller"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=workdir, start_new_session=True)
    log.close()
    return proc


async def main(workdir: str, with_operator: bool) -> None:
    store = Store()
    load_dask_crds(store)
    for ns in ("default", "kube-system"):
        store.create("", "v1", "namespaces", None, {"metadata": {"name": ns}, "status": {"phase": "Active"}})
    store.create("", "v1", "nodes", None, {"metadata": {"name": "emulated-node"}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})
    runner = web.AppRunner(Api(store).app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    kubeconfig = os.path.join(workdir, "kubeconfig")
    write_kubeconfig(kubeconfig, url)
    kubelet, controllers = Kubelet(store, workdir, url), Controllers(store)
    operator = start_operator(workdir, url, kubeconfig) if with_operator else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with open(os.path.join(workdir, "ready.tmp"), "w") as f:
        f.write(url)
    os.replace(os.path.join(workdir, "ready.tmp"), os.path.join(workdir, "ready"))
    try:
        while not stop.is_set():
            store.changed.clear()
            controllers.reconcile()
            kubelet.reconcile()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        if operator is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(operator.pid, signal.SIGTERM)
            try:
                operator.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(operator.pid, signal.SIGKILL)
                operator.wait()
        kubelet.shutdown()
        store.end_watches()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--no-operator" not in sys.argv[2:]))
