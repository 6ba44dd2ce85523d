"""The query language: one parser -> one tree -> SQL (store), Mongo dicts (MongoDB / Hub), a predicate.

    tree = parse("state:failed label:fit* since:1h")
    where, params = to_sql(tree)                   # for the store's `tasks` table
    plan = to_mongo(tree, "hub", engine_uuids)     # plan.query for db_request; plan.exact
    keep = predicate(tree)                         # TaskRecord -> bool

Reference: docs/query-language.md.
"""

from .ast import FIELDS, STATES, And, Cmp, Node, Not, Or, Text, True_, and_, not_, or_
from .errors import QueryError
from .jsonquery import MONGO_OPERATORS
from .parser import ALIASES, QUALIFIERS, compile_filter, parse
from .predicate import predicate
from .to_mongo import HUB_MATCH_ALL, MongoPlan, to_mongo
from .to_sql import install_sql_functions, to_sql

__all__ = [
    "And",
    "Or",
    "Not",
    "Cmp",
    "Text",
    "True_",
    "Node",
    "and_",
    "or_",
    "not_",
    "FIELDS",
    "STATES",
    "QUALIFIERS",
    "ALIASES",
    "MONGO_OPERATORS",
    "HUB_MATCH_ALL",
    "QueryError",
    "MongoPlan",
    "parse",
    "compile_filter",
    "to_sql",
    "install_sql_functions",
    "to_mongo",
    "predicate",
]
