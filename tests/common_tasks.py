"""Small tasks shared by several test modules (workers import this module)."""

import daskflow as df


@df.task
def inc(x):
    return x + 1


@df.task
def total(xs):
    return sum(xs)


@df.task
def split(n):
    return list(range(n))
