"""The `ls --filter` / `--sort` language, on in-memory experiments (no git, no disk)."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import time

import pytest

from git_keepsake.checkpoint import Checkpoint
from git_keepsake.errors import InvalidArgument
from git_keepsake.experiment import Experiment
from git_keepsake.filters import (
    BUILTINS,
    FILTER_HELP,
    Filter,
    apply_filters,
    available_names,
    parse_filter,
    sort_experiments,
    value_of,
)

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
NAN = float("nan")
INF = float("inf")
_ids = itertools.count()


class FakeExperiment(Experiment):
    """is_running() without a project: running only if marked so."""

    def is_running(self) -> bool:
        return self._running_here


def make(
    id: str | None = None,
    params: dict | None = None,
    checkpoints: tuple = (),
    created: dt.datetime = T0,
    running: bool = False,
    user: str | None = "alice",
    host: str | None = "gpu1",
    command: str | None = "python train.py",
) -> Experiment:
    experiment = FakeExperiment(
        project=None,
        id=id or f"{next(_ids):08x}" + "0" * 56,
        created=created,
        user=user,
        host=host,
        command=command,
        params=params,
        checkpoints=checkpoints,
    )
    experiment._running_here = running
    return experiment


def chk(step: int | None = None, primary: str | None = None, **metrics) -> Checkpoint:
    return Checkpoint(
        id=f"{next(_ids):08x}" + "c" * 56,
        created=T0,
        step=step,
        metrics=metrics or None,
        primary_metric={"name": primary, "goal": "minimize"} if primary else None,
    )


def kept(experiments: list, *expressions: str) -> list[str]:
    return [e.id for e in apply_filters(experiments, expressions)]


def matches(experiment: Experiment, expression: str, others: tuple = ()) -> bool:
    return bool(apply_filters([experiment, *others], [expression])[:1] == [experiment])


@pytest.fixture
def local_tz():
    """Set the process's local time zone (POSIX TZ string) for one test, then restore it."""
    saved = os.environ.get("TZ")

    def set_tz(value: str) -> None:
        os.environ["TZ"] = value
        time.tzset()

    yield set_tz
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


# --- parsing ---


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("lr >= 0.01", Filter("lr", ">=", 0.01)),
        ("lr>=0.01", Filter("lr", ">=", 0.01)),
        ("  lr>= 0.01  ", Filter("lr", ">=", 0.01)),
        ("seed == 1", Filter("seed", "=", 1)),
        ("seed=1", Filter("seed", "=", 1)),
        ("a != -2", Filter("a", "!=", -2)),
        ("a < 1e-3", Filter("a", "<", 0.001)),
        ("a <= .5", Filter("a", "<=", 0.5)),
        ("a > +3", Filter("a", ">", 3)),
        ("a = true", Filter("a", "=", True)),
        ("a = False", Filter("a", "=", False)),
        ("a = null", Filter("a", "=", None)),
        ("a = -inf", Filter("a", "=", -INF)),
        ("opt = adam", Filter("opt", "=", "adam")),
        ("opt = 'adam w'", Filter("opt", "=", "adam w")),
        ('opt = "1"', Filter("opt", "=", "1")),
        ('opt = "true"', Filter("opt", "=", "true")),
        ("opt = ''", Filter("opt", "=", "")),
        ("opt = 1_000", Filter("opt", "=", "1_000")),
        ("opt = 0x10", Filter("opt", "=", "0x10")),
        ("params.lr < 1", Filter("params.lr", "<", 1)),
        ("metrics.loss < 1", Filter("metrics.loss", "<", 1)),
    ],
)
def test_parse_filter_reads_name_operator_and_typed_value(expression, expected):
    assert parse_filter(expression) == expected


def test_parse_filter_reads_nan_as_a_float():
    parsed = parse_filter("loss = nan")
    assert parsed.value != parsed.value


def test_quoted_values_keep_spaces_and_operators():
    assert parse_filter('command = "python train.py --lr=0.1 > log"').value == (
        "python train.py --lr=0.1 > log"
    )
    assert parse_filter("command='a <= b'").value == "a <= b"
    assert parse_filter("""note = 'say "hi"'""").value == 'say "hi"'


def test_started_is_an_alias_of_created():
    assert parse_filter("started > 2026-11-01").name == "created"


def test_builtin_text_fields_take_the_value_as_written():
    assert parse_filter("user = 1001").value == "1001"
    assert parse_filter("host = true").value == "true"
    assert parse_filter("id = 0123ABCD").value == "0123abcd"
    assert parse_filter("status = RUNNING").value == "running"


@pytest.mark.parametrize(
    "expression, complaint",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("loss", "no operator"),
        ("loss 0.5", "no operator"),
        ("loss ! 0.5", "no operator"),
        ("loss >", "no value after '>'"),
        ("loss <=   ", "no value after '<='"),
        (">= 3", "no name before '>='"),
        ("= x", "no name before '='"),
        ("loss >> 3", "more than one operator"),
        ("loss =< 3", "more than one operator"),
        ("loss => 3", "more than one operator"),
        ("loss === 3", "more than one operator"),
        ("loss =! 3", "more than one operator"),
        ("loss < 0.5 and acc > 0.9", "more than one operator"),
        ("command = python train.py --lr=1", "more than one operator"),
        ('opt = "adam', "quote"),
        ("opt = 'adam\"", "quote"),
        ("opt = '", "quote"),
        ("params. = 3", "no param name"),
        ("metrics.<3", "no metric name"),
    ],
)
def test_malformed_expressions_say_what_was_expected(expression, complaint):
    with pytest.raises(InvalidArgument) as info:
        parse_filter(expression)
    assert complaint in info.value.message
    assert "\n" not in info.value.message and "\n" not in info.value.hint
    assert 'e.g. --filter "loss < 0.5"' in info.value.hint or "--filter" in info.value.hint


def test_syntax_errors_give_the_standard_example():
    for expression in ("", "loss", "loss >", ">= 3"):
        with pytest.raises(InvalidArgument) as info:
            parse_filter(expression)
        assert 'e.g. --filter "loss < 0.5"' in info.value.hint


@pytest.mark.parametrize(
    "expression, complaint",
    [
        ("created > yesterday", "date"),
        ("created > 2026-13-01", "date"),
        ("created > 2026-02-30", "date"),
        ("created > 1", "date"),
        ("created > 2026-11-01T25:00", "date"),
        ("step > ten", "number"),
        ("step = true", "number"),
        ("status = runing", "running"),
    ],
)
def test_builtin_values_are_checked_when_parsed(expression, complaint):
    with pytest.raises(InvalidArgument) as info:
        parse_filter(expression)
    assert complaint in info.value.message + (info.value.hint or "")


def test_syntax_errors_are_raised_even_with_no_experiments():
    with pytest.raises(InvalidArgument):
        apply_filters([], ["loss >"])
    with pytest.raises(InvalidArgument):
        apply_filters([], ["created > soon"])


def test_filter_help_examples_all_parse():
    examples = re.findall(r"--filter \"([^\"]+)\"|--filter '([^']+)'", FILTER_HELP)
    assert len(examples) >= 3
    for double, single in examples:
        parse_filter(double or single)
    assert 3 <= len(FILTER_HELP.splitlines()) <= 6
    assert all(len(line) < 100 for line in FILTER_HELP.splitlines())


# --- comparing values: every operator over every type ---

TYPED = make(
    params={
        "i": 3,
        "f": 0.5,
        "s": "adam",
        "digits": "1",
        "b": True,
        "n": None,
        "nan": NAN,
        "inf": INF,
        "l": [64, 64],
        "d": {"a": 1, "b": [2]},
        "big": 2**53 + 1,
    }
)
OTHER = make(params={"absent": 1})


@pytest.mark.parametrize(
    "expression, expected",
    [
        # int
        ("i = 3", True),
        ("i == 3", True),
        ("i = 4", False),
        ("i != 3", False),
        ("i != 4", True),
        ("i < 4", True),
        ("i < 3", False),
        ("i <= 3", True),
        ("i > 3", False),
        ("i > 2", True),
        ("i >= 3", True),
        # int vs float: numerically
        ("i = 3.0", True),
        ("i < 3.5", True),
        ("i >= 3e0", True),
        ("i != 3.0", False),
        ("big = 9007199254740993", True),
        ("big > 9007199254740992", True),
        # float
        ("f = 0.5", True),
        ("f = .5", True),
        ("f = 5e-1", True),
        ("f != 0.5", False),
        ("f < 1", True),
        ("f <= 0.4", False),
        ("f > 0", True),
        ("f >= 0.5", True),
        # str: exact for = and !=, lexicographic for ordering
        ("s = adam", True),
        ('s = "adam"', True),
        ("s = Adam", False),
        ("s = ada", False),
        ("s != sgd", True),
        ("s != adam", False),
        ("s < b", True),
        ("s <= adam", True),
        ("s > a", True),
        ("s >= adamw", False),
        # str vs number: mismatched types
        ("digits = 1", False),
        ("digits != 1", True),
        ("digits < 2", False),
        ('digits = "1"', True),
        ("s > 3", False),
        ("s != 3", True),
        # bool: not a number, no ordering
        ("b = true", True),
        ("b = True", True),
        ("b = false", False),
        ("b != false", True),
        ("b != true", False),
        ("b = 1", False),
        ("b != 1", True),
        ("b >= true", False),
        ("b > false", False),
        ('b = "true"', False),
        ("i = true", False),
        # null
        ("n = null", True),
        ("n != null", False),
        ("n = 0", False),
        ("n != 0", True),
        ("n < 1", False),
        ("n >= null", False),
        ("i = null", False),
        ("i != null", True),
        # NaN matches nothing but !=
        ("nan = nan", False),
        ("nan != nan", True),
        ("nan = 1", False),
        ("nan != 1", True),
        ("nan < 1", False),
        ("nan <= 1", False),
        ("nan > 1", False),
        ("nan >= 1", False),
        ("nan != abc", True),
        ("f < nan", False),
        ("f != nan", True),
        # infinities are numbers
        ("inf = inf", True),
        ("inf > 1e308", True),
        ("inf < inf", False),
        ("inf >= inf", True),
        ("f > -inf", True),
        # lists and dicts: equality of the JSON form only
        ("l = [64, 64]", True),
        ("l = [64,64]", True),
        ('l = "[64, 64]"', True),
        ("l != [64]", True),
        ("l != [64, 64]", False),
        ("l = [64, 64.0]", False),
        ("l < [65]", False),
        ("l = 64", False),
        ("l = not json", False),
        ('d = {"b": [2], "a": 1}', True),
        ('d = \'{"a":1,"b":[2]}\'', True),
        ('d = {"a": 1}', False),
    ],
)
def test_comparison_rules(expression, expected):
    assert matches(TYPED, expression, others=(OTHER,)) is expected


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
@pytest.mark.parametrize("value", ["1", "1.5", "abc", "true", "null", "nan", '"x"'])
def test_a_missing_param_matches_no_operator(op, value):
    assert not matches(TYPED, f"absent {op} {value}", others=(OTHER,))
    assert matches(OTHER, "absent = 1")


@pytest.mark.parametrize("op", ["=", "!=", "<", "<=", ">", ">="])
def test_an_experiment_without_checkpoints_has_no_metrics_or_step(op):
    bare = make(params={"x": 1})
    trained = make(checkpoints=(chk(3, loss=0.5),))
    assert kept([bare, trained], f"loss {op} 0.5") == (
        [trained.id] if op in ("=", "<=", ">=") else []
    )
    assert kept([bare, trained], f"step {op} 3") == (
        [trained.id] if op in ("=", "<=", ">=") else []
    )


def test_learning_rate_at_or_above_zero_includes_small_floats():
    experiments = [make(params={"learning_rate": lr}) for lr in (0.01, 0, -0.1, 1)]
    assert kept(experiments, "learning_rate >= 0") == [e.id for e in experiments[:2]] + [
        experiments[3].id
    ]


def test_seed_one_point_zero_matches_int_and_float_seeds():
    experiments = [make(params={"seed": s}) for s in (1, 1.0, 2, True, "1")]
    assert kept(experiments, "seed = 1.0") == [experiments[0].id, experiments[1].id]
    assert kept(experiments, "seed = 1") == [experiments[0].id, experiments[1].id]


# --- metrics and step: best checkpoint, else latest ---


def test_metrics_and_step_come_from_the_best_checkpoint():
    experiment = make(
        checkpoints=(
            chk(0, "loss", loss=0.9, acc=0.1),
            chk(1, "loss", loss=0.2, acc=0.5),
            chk(2, "loss", loss=0.4, acc=0.7),
        )
    )
    assert matches(experiment, "loss = 0.2")
    assert matches(experiment, "acc = 0.5")
    assert not matches(experiment, "acc = 0.7")
    assert matches(experiment, "step = 1")


def test_without_a_primary_metric_metrics_and_step_come_from_the_latest_checkpoint():
    experiment = make(checkpoints=(chk(0, loss=0.1), chk(5, loss=0.3)))
    assert matches(experiment, "loss = 0.3")
    assert matches(experiment, "step = 5")


def test_a_metric_missing_from_the_best_checkpoint_is_taken_from_the_latest():
    experiment = make(
        checkpoints=(chk(0, "loss", loss=0.1), chk(1, "loss", loss=0.5, test_acc=0.93))
    )
    assert matches(experiment, "loss = 0.1")
    assert matches(experiment, "test_acc > 0.9")
    assert value_of(experiment, "step") == (True, 0)


def test_a_nan_primary_metric_does_not_make_a_checkpoint_best():
    experiment = make(checkpoints=(chk(0, "loss", loss=0.5), chk(1, "loss", loss=NAN)))
    assert matches(experiment, "loss = 0.5")
    assert matches(experiment, "step = 0")


# --- built-ins ---


def test_status_is_running_or_stopped():
    running, stopped = make(running=True), make()
    assert kept([running, stopped], "status = running") == [running.id]
    assert kept([running, stopped], "status != running") == [stopped.id]
    assert kept([running, stopped], "status = Stopped") == [stopped.id]


def test_user_host_and_command_compare_as_text():
    a = make(user="alice", host="gpu1", command="python train.py --lr=0.1")
    b = make(user="1001", host="gpu2", command="python train.py")
    c = make(user=None, host=None, command=None)
    everyone = [a, b, c]
    assert kept(everyone, "user = alice") == [a.id]
    assert kept(everyone, "user = 1001") == [b.id]
    assert kept(everyone, "user < b") == [a.id, b.id]
    assert kept(everyone, "host != gpu1") == [b.id]
    assert kept(everyone, 'command = "python train.py --lr=0.1"') == [a.id]
    assert kept(everyone, "command = 'python train.py'") == [b.id]


def test_id_equality_is_a_case_insensitive_prefix_match():
    a = make(id="1234abcd" + "0" * 32)
    b = make(id="12ffabcd" + "0" * 32)
    assert kept([a, b], "id = 1234") == [a.id]
    assert kept([a, b], "id = 12") == [a.id, b.id]
    assert kept([a, b], "id = 12FF") == [b.id]
    assert kept([a, b], "id != 1234") == [b.id]
    assert kept([a, b], "id == " + a.id) == [a.id]
    assert kept([a, b], "id > 1235") == [b.id]


def created_at(*stamps: str) -> list[Experiment]:
    return [make(created=dt.datetime.fromisoformat(s)) for s in stamps]


CREATED = (
    "2026-10-31T23:30:00+00:00",
    "2026-11-01T00:30:00+00:00",
    "2026-11-01T10:00:00+00:00",
    "2026-11-01T10:00:30+00:00",
    "2026-11-02T00:00:00+00:00",
)


@pytest.mark.parametrize(
    "expression, expected",
    [
        # a date is the whole day
        ("created = 2026-11-01", "bcd"),
        ("created != 2026-11-01", "ae"),
        ("created > 2026-11-01", "e"),
        ("created >= 2026-11-01", "bcde"),
        ("created < 2026-11-01", "a"),
        ("created <= 2026-11-01", "abcd"),
        # a time is the whole minute or second it names
        ("created >= 2026-11-01T10:00", "cde"),
        ("created = 2026-11-01T10:00", "cd"),
        ("created > 2026-11-01T10:00", "e"),
        ("created = 2026-11-01T10:00:00", "c"),
        ("created > 2026-11-01T10:00:00", "de"),
        ("created = 2026-11-01T10:00:30.0", "d"),
        ("created >= '2026-11-01 10:00'", "cde"),
        ("created >= 2026-11-01 10:00", "cde"),
        ("created = 2026-11", "bcde"),
        ("created < 2026-11", "a"),
        # explicit offsets override the local zone
        ("created >= 2026-11-01T11:00+01:00", "cde"),
        ("created >= 2026-11-01T10:00Z", "cde"),
        ("created < 2026-11-01T00:00-01:00", "ab"),
        ("started >= 2026-11-01T10:00", "cde"),
    ],
)
def test_created_compares_with_the_period_a_date_or_time_names(local_tz, expression, expected):
    local_tz("UTC0")
    experiments = created_at(*CREATED)
    names = dict(zip("abcde", (e.id for e in experiments), strict=True))
    assert kept(experiments, expression) == [names[c] for c in expected]


def test_created_without_an_offset_is_in_the_local_time_zone(local_tz):
    local_tz("IST-5:30")  # UTC+05:30: the local 1 November is 18:30Z on 31 Oct to 18:30Z
    experiments = created_at(*CREATED)
    assert kept(experiments, "created = 2026-11-01") == [e.id for e in experiments[:4]]
    assert kept(experiments, "created >= 2026-11-01T15:30") == [e.id for e in experiments[2:]]


# --- names: built-in > param > metric, with explicit prefixes ---


def test_a_bare_name_prefers_builtin_then_param_then_metric():
    experiment = make(
        params={"loss": 5, "step": 7, "user": "bob"},
        checkpoints=(chk(2, "loss", loss=0.2, user=3),),
    )
    assert matches(experiment, "loss = 5")
    assert matches(experiment, "params.loss = 5")
    assert matches(experiment, "metrics.loss = 0.2")
    assert matches(experiment, "step = 2")
    assert matches(experiment, "params.step = 7")
    assert matches(experiment, "user = alice")
    assert matches(experiment, "params.user = bob")
    assert matches(experiment, "metrics.user = 3")


def test_a_bare_name_falls_back_to_a_metric_for_each_experiment():
    as_param = make(params={"lr": 0.1})
    as_metric = make(checkpoints=(chk(0, lr=0.1),))
    assert kept([as_param, as_metric], "lr = 0.1") == [as_param.id, as_metric.id]
    assert kept([as_param, as_metric], "params.lr = 0.1") == [as_param.id]
    assert kept([as_param, as_metric], "metrics.lr = 0.1") == [as_metric.id]


def test_value_of_reports_found_and_value():
    experiment = make(params={"n": None, "lr": 0.1}, checkpoints=(chk(4, loss=0.3),))
    assert value_of(experiment, "n") == (True, None)
    assert value_of(experiment, "lr") == (True, 0.1)
    assert value_of(experiment, "loss") == (True, 0.3)
    assert value_of(experiment, "step") == (True, 4)
    assert value_of(experiment, "started") == (True, T0)
    assert value_of(experiment, "status") == (True, "stopped")
    assert value_of(experiment, "nope") == (False, None)
    assert value_of(experiment, "params.loss") == (False, None)
    assert value_of(make(user=None), "user") == (False, None)


def test_available_names_lists_builtins_then_params_then_metrics():
    experiments = [
        make(params={"seed": 1, "lr": 0.1, "step": 3}, checkpoints=(chk(0, "loss", loss=1),)),
        make(params={"batch": 8}, checkpoints=(chk(0, acc=0.5, lr=0.2, status=1),)),
    ]
    assert available_names(experiments) == [
        *BUILTINS,
        "batch",
        "lr",
        "params.step",
        "seed",
        "acc",
        "loss",
        "metrics.lr",
        "metrics.status",
    ]
    assert list(BUILTINS) == sorted(BUILTINS)


def test_an_unknown_name_lists_the_available_ones():
    experiments = [make(params={"lr": 0.1, "seed": 1}, checkpoints=(chk(0, loss=1),))]
    with pytest.raises(InvalidArgument) as info:
        apply_filters(experiments, ["lrr > 0.01"])
    assert "'lrr'" in info.value.message
    assert "did you mean 'lr'?" in info.value.hint
    assert "command, created, host, id, status, step, user, lr, seed, loss" in info.value.hint
    assert "\n" not in info.value.message + info.value.hint


def test_prefixed_names_must_exist_as_that_kind():
    experiments = [make(params={"lr": 0.1}, checkpoints=(chk(0, loss=1),))]
    with pytest.raises(InvalidArgument, match="param called 'loss'"):
        apply_filters(experiments, ["params.loss < 1"])
    with pytest.raises(InvalidArgument, match="metric called 'lr'"):
        apply_filters(experiments, ["metrics.lr < 1"])


def test_the_list_of_available_names_is_truncated_when_there_are_hundreds():
    experiments = [make(params={f"p{i:03}": i for i in range(300)})]
    with pytest.raises(InvalidArgument) as info:
        apply_filters(experiments, ["zzz = 1"])
    hint = info.value.hint
    assert hint.startswith("available: command, created") and "and 267 more" in hint
    assert len(hint) < 400


def test_a_name_in_any_experiment_is_known_even_if_others_lack_it():
    experiments = [make(params={"a": 1}), make(checkpoints=(chk(0, b=2),))]
    assert kept(experiments, "a = 1", "b = 2") == []
    assert kept(experiments, "b = 2") == [experiments[1].id]


def test_unknown_names_are_not_an_error_when_there_are_no_experiments():
    assert apply_filters([], ["nonsense > 1"]) == []
    assert sort_experiments([], "nonsense-desc") == []


# --- combining ---


def test_filters_are_anded():
    experiments = [
        make(params={"lr": lr, "opt": opt})
        for lr, opt in [(0.1, "sgd"), (0.01, "sgd"), (0.1, "adam")]
    ]
    assert kept(experiments, "lr >= 0.1", "opt = sgd") == [experiments[0].id]
    assert kept(experiments, "lr >= 0.1") == [experiments[0].id, experiments[2].id]


def test_no_filters_keep_everything_in_order():
    experiments = [make(), make()]
    assert apply_filters(experiments, []) == experiments
    assert apply_filters(iter(experiments), ()) == experiments


def test_a_single_string_is_one_filter_not_characters():
    experiments = [make(params={"lr": 0.1}), make(params={"lr": 0.2})]
    assert kept(experiments, "lr > 0.1") == [experiments[1].id]
    assert [e.id for e in apply_filters(experiments, "lr > 0.1")] == [experiments[1].id]


def test_filters_and_sorting_never_load_checkpoint_lists():
    summary_best = chk(3, "loss", loss=0.2)
    summary_latest = chk(5, "loss", loss=0.4)
    experiment = make(params={"lr": 0.1})
    experiment._checkpoints = None
    experiment._load_checkpoints = lambda: pytest.fail("the checkpoint list was loaded")
    experiment._summary = {"best": summary_best, "latest": summary_latest}
    assert kept([experiment], "loss < 0.3", "step = 3", "lr = 0.1", "status = stopped")
    assert sort_experiments([experiment, make()], "loss-desc")[0] is experiment
    assert available_names([experiment])[-1] == "loss"


# --- sorting ---


def sorted_values(experiments: list, key: str, name: str = "x") -> list:
    return [
        value_of(e, name)[1] if value_of(e, name)[0] else "<missing>"
        for e in sort_experiments(experiments, key)
    ]


def with_x(*values) -> list[Experiment]:
    return [make(params={"x": v}) if v != "<missing>" else make(params={"y": 0}) for v in values]


def same(values: list, expected: list) -> bool:
    """Equality that counts NaN equal to NaN."""
    return len(values) == len(expected) and all(
        (a != a and b != b) or (a == b and type(a) is type(b))
        for a, b in zip(values, expected, strict=True)
    )


def test_sort_ascending_puts_missing_values_last():
    experiments = with_x(3, "<missing>", 1, 2.5)
    assert sorted_values(experiments, "x") == [1, 2.5, 3, "<missing>"]


def test_sort_descending_still_puts_missing_values_last():
    experiments = with_x(3, "<missing>", 1, 2.5)
    assert sorted_values(experiments, "x-desc") == [3, 2.5, 1, "<missing>"]


def test_sort_orders_numbers_nan_strings_other_types_null_then_missing():
    experiments = with_x("b", 2, NAN, "<missing>", "a", 1, True, None, [1], False, {"k": 1}, 0.5)
    assert same(
        sorted_values(experiments, "x"),
        [0.5, 1, 2, NAN, "a", "b", False, True, [1], {"k": 1}, None, "<missing>"],
    )
    assert same(
        sorted_values(experiments, "x-desc"),
        [2, 1, 0.5, NAN, "b", "a", True, False, {"k": 1}, [1], None, "<missing>"],
    )


def test_sort_is_stable_in_both_directions():
    experiments = with_x(1, 2, 1, "<missing>", 2, "<missing>", NAN, NAN)
    for key in ("x", "x-desc"):
        result = sort_experiments(experiments, key)
        for group in ([0, 2], [1, 4], [3, 5], [6, 7]):
            positions = [result.index(experiments[i]) for i in group]
            assert positions == sorted(positions), (key, group)


def test_sort_by_created_and_its_alias_started():
    experiments = created_at("2026-11-02T00:00:00+00:00", "2026-11-01T00:00:00+00:00")
    assert sort_experiments(experiments, "created") == experiments[::-1]
    assert sort_experiments(experiments, "started") == experiments[::-1]
    assert sort_experiments(experiments, "created-desc") == experiments
    assert sort_experiments(experiments, "started-DESC") == experiments
    assert sort_experiments(experiments, "created-asc") == experiments[::-1]


def test_sort_by_metric_step_param_and_status():
    a = make(params={"lr": 0.3}, checkpoints=(chk(9, "loss", loss=0.5),), running=True)
    b = make(params={"lr": 0.1}, checkpoints=(chk(2, "loss", loss=0.2),))
    c = make(params={"lr": 0.2})
    assert sort_experiments([a, b, c], "loss") == [b, a, c]
    assert sort_experiments([a, b, c], "loss-desc") == [a, b, c]
    assert sort_experiments([a, b, c], "step") == [b, a, c]
    assert sort_experiments([a, b, c], "params.lr") == [b, c, a]
    assert sort_experiments([a, b, c], " lr-desc ") == [a, c, b]
    assert sort_experiments([a, b, c], "status") == [a, b, c]
    assert sort_experiments([c, b, a], "status-desc") == [c, b, a]


def test_sort_compares_ints_and_floats_and_huge_ints_numerically():
    experiments = with_x(2**70, 1.5, 1, INF, -INF)
    assert sorted_values(experiments, "x") == [-INF, 1, 1.5, 2**70, INF]


def test_an_unknown_sort_key_lists_the_available_names():
    experiments = [make(params={"lr": 0.1})]
    with pytest.raises(InvalidArgument) as info:
        sort_experiments(experiments, "los-desc")
    assert "'los'" in info.value.message
    assert "available: command, created, host, id, status, step, user, lr" in info.value.hint


@pytest.mark.parametrize("key", ["", "  ", "-desc", "-asc"])
def test_an_empty_sort_key_is_an_error(key):
    with pytest.raises(InvalidArgument, match="sort key"):
        sort_experiments([make()], key)
