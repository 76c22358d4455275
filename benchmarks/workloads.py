"""The benchmark workloads, written once per system (importable by workers)."""

from __future__ import annotations

import dask

import daskflow as df


def inc(x):
    return x + 1


def total(xs):
    return sum(xs)


def noop():
    return None


# -- daskflow ----------------------------------------------------------------------
inc_t = df.task(inc, name="inc")
total_t = df.task(total, name="total")


@df.flow
def w1_flow(n: int):
    return total_t(inc_t.map(range(n)))


@df.flow
def w2_flow(n: int):
    x = inc_t(0)
    for _ in range(n - 1):
        x = inc_t(x)
    return x


@df.flow
def w4_flow(n: int):
    return total_t(inc_t.map(inc_t.map(inc_t.map(range(n)))))


@df.flow
def empty_flow():
    return None


@df.flow
def one_flow():
    return inc_t(1)


def one_daskflow(client, n):
    return one_flow(cluster=client)


def empty_daskflow(client, n):
    return empty_flow(cluster=client)


def w1_daskflow(client, n):
    return w1_flow(n, cluster=client)


def w2_daskflow(client, n):
    return w2_flow(n, cluster=client)


def w4_daskflow(client, n):
    return w4_flow(n, cluster=client)


UNFUSED = {"w1": lambda c, n: w1_flow(n, cluster=c, fuse=False),
           "w2": lambda c, n: w2_flow(n, cluster=c, fuse=False),
           "w4": lambda c, n: w4_flow(n, cluster=c, fuse=False),
           "one": lambda c, n: one_flow(cluster=c, fuse=False),
           "empty": lambda c, n: empty_flow(cluster=c, fuse=False)}


# -- raw Dask futures ----------------------------------------------------------------
def one_futures(client, n):
    return client.submit(inc, 1, pure=False).result()


def empty_futures(client, n):
    return client.submit(noop, pure=False).result()


def w1_futures(client, n):
    futures = client.map(inc, range(n), pure=False)
    return client.submit(total, futures, pure=False).result()


def w4_futures(client, n):
    """Three maps chained the natural way, then a sum."""
    a = client.map(inc, range(n), pure=False)
    b = client.map(inc, a, pure=False)
    c = client.map(inc, b, pure=False)
    return client.submit(total, c, pure=False).result()


def w2_futures(client, n):
    x = client.submit(inc, 0, pure=False)
    for _ in range(n - 1):
        x = client.submit(inc, x, pure=False)
    return x.result()


# -- dask.delayed -------------------------------------------------------------------------
def one_delayed(client, n):
    return dask.delayed(inc, pure=False)(1).compute(scheduler=client)


def empty_delayed(client, n):
    return dask.delayed(noop, pure=False)().compute(scheduler=client)


def w1_delayed(client, n):
    parts = [dask.delayed(inc, pure=False)(i) for i in range(n)]
    return dask.delayed(total, pure=False)(parts).compute(scheduler=client)


def w4_delayed(client, n):
    parts = [dask.delayed(inc, pure=False)(i) for i in range(n)]
    parts = [dask.delayed(inc, pure=False)(p) for p in parts]
    parts = [dask.delayed(inc, pure=False)(p) for p in parts]
    return dask.delayed(total, pure=False)(parts).compute(scheduler=client)


def w2_delayed(client, n):
    x = dask.delayed(inc, pure=False)(0)
    for _ in range(n - 1):
        x = dask.delayed(inc, pure=False)(x)
    return x.compute(scheduler=client)


EXPECTED = {"w1": lambda n: sum(range(1, n + 1)), "w2": lambda n: n,
            "w4": lambda n: sum(range(3, n + 3)),
            "one": lambda n: 2, "empty": lambda n: None}
SYSTEMS = {
    "daskflow": {"w1": w1_daskflow, "w2": w2_daskflow, "w4": w4_daskflow,
                 "one": one_daskflow, "empty": empty_daskflow},
    "daskflow unfused": UNFUSED,
    "dask futures": {"w1": w1_futures, "w2": w2_futures, "w4": w4_futures,
                     "one": one_futures, "empty": empty_futures},
    "dask.delayed": {"w1": w1_delayed, "w2": w2_delayed, "w4": w4_delayed,
                     "one": one_delayed, "empty": empty_delayed},
}


# -- W3: one large array given to 8 tasks -------------------------------------------
def col_sum(arr, i):
    return float(arr[:, i].sum())


col_sum_t = df.task(col_sum, name="col_sum")


@df.flow
def w3_flow(arr):
    return total_t([col_sum_t(arr, i) for i in range(8)])


def w3_daskflow(client, arr):
    return w3_flow(arr, cluster=client)


def w3_scatter(client, arr):
    [shared] = client.scatter([arr], hash=False)
    parts = [client.submit(col_sum, shared, i, pure=False) for i in range(8)]
    return client.submit(total, parts, pure=False).result()


def w3_in_graph(client, arr):
    parts = [client.submit(col_sum, arr, i, pure=False) for i in range(8)]
    return client.submit(total, parts, pure=False).result()


W3 = {"dask scatter": w3_scatter, "dask in-graph": w3_in_graph, "daskflow": w3_daskflow}

