"""Flow signatures as Python has them: ``*args``, ``**kwargs``, keyword-only
and positional-only parameters reach the body as written, on "sync" and on
the real cluster; the run's parameters name them as Prefect does; type
hints check each extra value; ``as_call`` turns parameters back into a call;
signatures daskflow cannot run are refused at decoration."""

from __future__ import annotations

import pytest
from common_tasks import inc, total

import daskflow as df

# -- tasks (module level, so worker processes import them) --------------------


@df.task
def pack(*values, **named):
    return (values, named)


@df.task
def seen_parameters():
    return df.context().parameters


@df.task
def scaled(xs, factor):
    return [x * factor for x in xs]


# -- flows ----------------------------------------------------------------------


@df.flow
def star(*foo, bar):
    return pack(*foo, bar=bar)


@df.flow
def double_star(**foobar):
    return pack(**foobar)


@df.flow
def both(a, *args, x, **kwargs):
    return pack(a, *args, x=x, **kwargs), seen_parameters()


@df.flow
def positional(a, /, b=2, **kw):
    return pack(a, b, **kw)


@df.flow
def typed(*nums: int, **weights: float):
    return pack(*nums, **weights)


@df.flow
def inner(*xs, factor=1):
    return scaled(list(xs), factor)


@df.flow
def outer(n: int = 3):
    return inner(*[inc(i) for i in range(n)], factor=10), double_star(k=inc(0))


# -- the body receives the call as written -----------------------------------------


def test_star_args_and_a_keyword_only_parameter(on):
    run = star.run(1, 2, bar=3, cluster=on)
    assert run.result() == ((1, 2), {"bar": 3})
    assert run.parameters == {"foo": (1, 2), "bar": 3}


def test_star_star_kwargs_are_the_extra_keywords(on):
    run = double_star.run(p=1, q="two", cluster=on)
    assert run.result() == ((), {"p": 1, "q": "two"})
    assert run.parameters == {"foobar": {"p": 1, "q": "two"}}


def test_args_keyword_only_and_kwargs_together(on):
    run = both.run(1, 2, 3, x=4, z=5, cluster=on)
    packed, params = run.result()
    assert packed == ((1, 2, 3), {"x": 4, "z": 5})
    expected = {"a": 1, "args": (2, 3), "x": 4, "kwargs": {"z": 5}}
    assert run.parameters == expected
    assert params == expected  # df.context().parameters on the worker: a tuple stays one


def test_positional_only_parameters_bind(on):
    assert positional(1, cluster=on) == ((1, 2), {})
    # `a` is positional-only, so a=9 is one more keyword, as in Python
    run = positional.run(1, 3, a=9, cluster=on)
    assert run.result() == ((1, 3), {"a": 9})
    assert run.parameters == {"a": 1, "b": 3, "kw": {"a": 9}}
    with pytest.raises(df.ParameterError, match="missing a required argument: 'a'"):
        positional.run(b=1, cluster="sync")


def test_run_options_are_taken_before_kwargs(on):
    """cluster=, fuse= ... are run options even for a flow with **kwargs; a
    bind that puts one among the extra keywords is refused."""
    assert double_star(fuse=False, cluster=on, p=1) == ((), {"p": 1})
    with pytest.raises(df.ParameterError, match=r"'cluster' cannot be an extra keyword "
                                                r"parameter \(in \*\*foobar\).*run option"):
        double_star.bind(cluster="sync")


def test_a_nested_flow_with_star_args_gets_task_results(on):
    run = outer.run(cluster=on)
    assert run.result() == ([10, 20, 30], ((), {"k": 1}))
    assert "inner/scaled" in run.states and "double_star/pack" in run.states


def test_a_cached_task_in_a_star_args_flow_is_reused(tmp_path):
    @df.flow(cache=True, result_storage=str(tmp_path))
    def summed(*xs):
        return total(list(xs))

    assert summed.run(1, 2, cluster="sync").states["total"].name == "Completed"
    again = summed.run(1, 2, cluster="sync")
    assert again.states["total"].name == "Cached" and again.result() == 3
    assert summed.run(1, 3, cluster="sync").states["total"].name == "Completed"


# -- type hints on *args and **kwargs (PEP 484: each value) ---------------------------


def test_type_hints_check_each_extra_value():
    assert typed(1, 2, w=0.5, v=1, cluster="sync") == ((1, 2), {"w": 0.5, "v": 1})
    with pytest.raises(df.ParameterError,
                       match=r"value 1 of \*nums of flow 'typed' must be int, got str 'x'"):
        typed.bind(1, "x")
    with pytest.raises(df.ParameterError, match=r"parameter 'v' \(in \*\*weights\) of flow "
                                                r"'typed' must be float, got str 'heavy'"):
        typed.bind(v="heavy")
    with pytest.raises(df.ParameterError, match="must be int, got bool"):
        typed.bind(True)


# -- parameters by name, back to a call --------------------------------------------


def test_as_call_turns_parameters_by_name_into_a_call():
    assert both.as_call({"a": 1, "args": [2, 3], "x": 4, "kwargs": {"z": 5}}) == (
        (1, 2, 3), {"x": 4, "z": 5})
    assert both.as_call({"a": 1, "x": 4, "z": 5}) == ((1,), {"x": 4, "z": 5})
    assert positional.as_call({"a": 1, "kw": {"a": 9}}) == ((1, 2), {"a": 9})
    # round trip: what a run records is what as_call takes
    params = both.bind(1, 2, x=3, y=4)
    args, kwargs = both.as_call(params)
    assert both.bind(*args, **kwargs) == params


def test_a_default_before_star_args_keeps_its_place():
    @df.flow
    def f(first=0, *rest):
        return pack(first, *rest)

    args, kwargs = f.as_call({"rest": [5, 6]})
    assert (args, kwargs) == ((0, 5, 6), {})
    assert f(*args, cluster="sync") == ((0, 5, 6), {})


@pytest.mark.parametrize("params,match", [
    ({"a": 1, "x": 1, "args": 5}, r"'args' of flow 'both' \(\*args\) holds its extra "
                                  r"positional values: give a list.*got int 5"),
    ({"a": 1, "x": 1, "kwargs": [1]}, r"\(\*\*kwargs\) holds its extra keyword values"),
    ({"a": 1, "x": 1, "kwargs": {1: 2}}, r"give a dict with str keys"),
    ({"a": 1, "x": 1, "z": 1, "kwargs": {"z": 2}}, r"\['z'\] given twice"),
])
def test_as_call_refuses_what_it_cannot_place(params, match):
    with pytest.raises(df.ParameterError, match=match):
        both.as_call(params)


def test_an_unknown_name_without_kwargs_is_left_for_bind_to_refuse():
    args, kwargs = star.as_call({"foo": [1], "bar": 2, "baz": 3})
    with pytest.raises(df.ParameterError, match=r"unknown parameter\(s\) 'baz' \(did you mean 'bar'"):
        star.bind(*args, **kwargs)


# -- signatures refused at decoration ---------------------------------------------


async def _async_generator_body(x):
    yield x


def _generator_body(x):
    yield x


@pytest.mark.parametrize("fn,match", [
    (_async_generator_body, "is an async generator function"),
    (_generator_body, "is a generator function"),
    (lambda cluster: 1, "reserves for the run option cluster="),
    (lambda *, fuse=True: 1, "reserves for the run option fuse="),
    (max, "Python cannot read the signature"),
])
def test_signatures_daskflow_cannot_run_are_refused_at_decoration(fn, match):
    with pytest.raises(df.FlowDefinitionError, match=match):
        df.flow(fn)
