"""Hypothesis strategies shared by the query tests: trees, TaskRecords, raw TaskRecord documents."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from datasource.model import State, TaskRecord
from datasource.query import Cmp, Text, True_, and_, not_, or_
from datasource.query.ast import STATES

BASE = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
UUIDS = ["1e0d58e5-62d2", "1e0d0000-ffff", "90594652-79d3"]
CLIENTS = ["f129a23e-bedf", "f1aa0000-0000", "5deda029-43d4"]
# small alphabets so that patterns and values collide often; brackets and case exercise GLOB/lower()
TEXT_ALPHABET = "abAB*?[]^-xé É_\n"
PATTERN_ALPHABET = "abAB*?[]^-é_"

times = st.builds(
    lambda s, us: BASE + timedelta(seconds=s, microseconds=us),
    st.integers(0, 20),
    st.sampled_from([0, 1, 500, 999, 1000, 250_000]),
)
opt_times = st.none() | times
short_text = st.text(alphabet=TEXT_ALPHABET, max_size=5)
opt_text = st.none() | short_text


def _cmp_leaves() -> st.SearchStrategy:
    str_fields = st.sampled_from(["label", "ename", "evalue", "queue", "engine_uuid", "resubmitted", "client"])
    time_fields = st.sampled_from(["submitted", "started", "completed", "received"])
    return st.one_of(
        st.sampled_from(STATES).map(lambda s: Cmp("state", "eq", s)),
        st.lists(st.sampled_from(STATES), min_size=2, max_size=3, unique=True).map(
            lambda v: Cmp("state", "in", tuple(v))
        ),
        st.integers(0, 3).map(lambda n: Cmp("engine_id", "eq", n)),
        st.lists(st.integers(0, 3), min_size=2, max_size=3, unique=True).map(
            lambda v: Cmp("engine_id", "in", tuple(v))
        ),
        st.sampled_from(["1e0d", "1e0d58e5", "9", "90594652-79d3", "f"]).map(
            lambda p: Cmp("engine_uuid", "prefix", p)
        ),
        st.sampled_from(["f1", "f129", "5deda029-43d4", "a"]).map(lambda p: Cmp("client", "prefix", p)),
        st.sampled_from(["m1", "m1_1", "m2_", "x"]).map(lambda p: Cmp("msg_id", "prefix", p)),
        st.sampled_from(["task", "mux"]).map(lambda q: Cmp("queue", "eq", q)),
        st.builds(Cmp, st.sampled_from(["label", "ename", "evalue"]), st.just("glob"),
                  st.text(alphabet=PATTERN_ALPHABET, min_size=1, max_size=5)),
        st.builds(Cmp, st.sampled_from(["label", "ename", "evalue", "queue"]), st.just("eq"),
                  st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=3)),
        st.builds(Cmp, str_fields, st.just("eq"), st.none()),
        st.builds(Cmp, st.sampled_from(["label", "engine_uuid"]), st.sampled_from(["lt", "le", "gt", "ge"]),
                  st.sampled_from(["a", "b", "1e0d", "é"])),
        st.builds(Cmp, time_fields, st.sampled_from(["lt", "le", "gt", "ge", "eq"]), times),
        st.builds(Cmp, time_fields, st.just("eq"), st.none()),
        st.builds(Cmp, st.just("label"), st.just("regex"), st.sampled_from(["^a", "b$", "[aA]b", "x|é"])),
        st.builds(Text, st.text(alphabet="abAB-é É", min_size=1, max_size=3)),
    )


def trees(max_leaves: int = 8) -> st.SearchStrategy:
    return st.recursive(
        _cmp_leaves() | st.just(True_()),
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda xs: and_(*xs)),
            st.lists(children, min_size=2, max_size=3).map(lambda xs: or_(*xs)),
            children.map(not_),
        ),
        max_leaves=max_leaves,
    )


@st.composite
def task_records(draw, n_max: int = 12) -> list[TaskRecord]:
    n = draw(st.integers(0, n_max))
    out = []
    for i in range(n):
        uuid = draw(st.none() | st.sampled_from(UUIDS))
        out.append(
            TaskRecord(
                msg_id=draw(st.sampled_from(["m1", "m2", "x"])) + f"_{i}",
                state=draw(st.sampled_from(list(State))),
                engine_uuid=uuid,
                engine_id=draw(st.none() | st.integers(0, 3)),
                queue=draw(st.none() | st.sampled_from(["task", "mux"])),
                label=draw(opt_text),
                client=draw(st.none() | st.sampled_from(CLIENTS)),
                submitted=draw(opt_times),
                started=draw(opt_times),
                completed=draw(opt_times),
                received=draw(opt_times),
                ename=draw(opt_text),
                evalue=draw(opt_text),
                resubmitted=draw(st.none() | st.sampled_from(["m1_0", "r_1"])),
            )
        )
    return out


@st.composite
def raw_documents(draw, n_max: int = 12) -> list[dict]:
    """Raw TaskRecord dicts shaped the way ipyparallel writes them (DictDB / MongoDB)."""
    n = draw(st.integers(0, n_max))
    docs = []
    ansi = st.sampled_from(["", "\x1b[31m", "\x1b[39m"])
    for i in range(n):
        completed = draw(opt_times)
        rc = None
        if completed is not None or draw(st.booleans()):
            rc = {}
            status = draw(st.sampled_from(["ok", "error", "aborted", None, "weird", "<missing>"]))
            if status != "<missing>":
                rc["status"] = status
            if draw(st.booleans()):
                rc["ename"] = draw(st.sampled_from(["ValueError", "ZeroDivisionError", "", None, "EngineError"]))
                rc["evalue"] = draw(ansi) + draw(short_text) + draw(ansi)
            if draw(st.booleans()):
                rc["engine_info"] = {"engine_id": draw(st.integers(0, 3))}
        error = None
        if draw(st.booleans()):
            error = {"ename": draw(st.sampled_from(["ValueError", "KeyError"])),
                     "evalue": draw(ansi) + draw(short_text)}
        docs.append(
            {
                "msg_id": draw(st.sampled_from(["m1", "m2", "x"])) + f"_{i}",
                "submitted": draw(times),
                "client_uuid": draw(st.sampled_from(CLIENTS)),
                "engine_uuid": draw(st.none() | st.just("") | st.sampled_from(UUIDS)),
                "started": draw(opt_times),
                "completed": completed,
                "resubmitted": draw(st.none() | st.sampled_from(["m1_0", "r_1"])),
                "received": draw(opt_times),
                "result_content": rc,
                "error": error,
                "queue": draw(st.none() | st.sampled_from(["task", "mux"])),
                "label": draw(st.none() | st.just("") | short_text),
                "stdout": "",
                "stderr": "",
            }
        )
    return docs
