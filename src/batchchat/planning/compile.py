"""A spec's request compiled once: templates, static checks, and what planning needs per row.

Per row only templated leaves are rendered and only templated fields are type-checked;
static ones are checked here, once. Problems (template syntax errors, static fields of
the wrong type) are collected, not raised, so :mod:`batchchat.planning.validate` can list
them with its own findings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import Environment

from batchchat.errors import SpecError
from batchchat.planning.fields import (
    EXTRA_BODY,
    KNOWN_FIELDS,
    field_problems,
    unknown_field_findings,
)
from batchchat.planning.messages import MessageLayout, message_problems, show_value
from batchchat.planning.templates import (
    CompiledTree,
    TemplateRef,
    compile_tree,
    format_location,
    make_environment,
)
from batchchat.planning.tokens import (
    REPLY_PRIMING_TOKENS,
    TextCounter,
    estimate_prompt_tokens,
    estimate_text_tokens,
    text_counter,
)
from batchchat.spec import JobSpec, SeedSpec

#: body fields that the model reads as part of the prompt besides the messages
PROMPT_EXTRAS = ("tools", "response_format")


@dataclass(frozen=True, slots=True)
class CompiledRequest:
    """A spec's request, compiled once: one tree per top-level body field."""

    fields: tuple[tuple[str, CompiledTree], ...]
    #: row columns the templates read; None when one of them needs the whole row
    columns: frozenset[str] | None
    #: prompt tokens of the static messages, tools and response_format, counted once
    static_tokens: int
    #: which messages are templated or spliced (the others were checked here, once)
    messages: MessageLayout
    #: counts a text's tokens (``limits.tokenizer``)
    count_text: TextCounter
    #: the spec's ``seed:`` (an int sent everywhere, a base with per-row derivation, or None)
    seed: int | SeedSpec | None
    #: independent requests per row
    samples: int
    #: ``vars:`` as templates see them
    variables: Mapping[str, str]
    #: names the spec adds to templates (``labels`` in a labeling job)
    builtins: Mapping[str, Any]
    #: the endpoint identity that goes into each request hash (never the key): the
    #: base_url, or ``pool`` for a pool of endpoints
    base_url: str
    #: the input columns each result keeps
    keep_columns: tuple[str, ...]
    #: template syntax errors and static fields of the wrong type, each with its location
    problems: tuple[str, ...] = ()
    #: what is allowed but worth a look (request keys that are no Chat Completions parameter)
    warnings: tuple[str, ...] = ()

    @property
    def refs(self) -> tuple[TemplateRef, ...]:
        return tuple(ref for _, tree in self.fields for ref in tree.refs)

    @property
    def dynamic_fields(self) -> tuple[str, ...]:
        """The templated top-level fields, in the spec's order."""
        return tuple(key for key, tree in self.fields if not tree.is_static)


def compile_request(spec: JobSpec) -> CompiledRequest:
    """Compile ``spec.request`` once; static fields are type-checked here, once."""
    if "seed" in spec.request and spec.seed is not None:
        seed_problem = ["request.seed: set a seed in one place only (the top-level seed: wins)"]
    else:
        seed_problem = []
    env = make_environment(spec.base_dir)
    fields: list[tuple[str, CompiledTree]] = []
    problems: list[str] = []
    try:
        count_text = text_counter(spec.limits.tokenizer)
    except SpecError as exc:  # reported with the other problems of the spec
        problems.append(str(exc))
        count_text = estimate_text_tokens
    static_tokens = 0
    layout = MessageLayout()
    request, extra_problems = _with_extra_body(_with_stream_usage(spec.request))
    problems.extend(extra_problems)
    typos, warnings = unknown_field_findings(spec.request)
    problems.extend(typos)
    for key, value in request.items():
        if key == "messages" and isinstance(value, list):
            tree, layout, static_tokens = _compile_messages(value, env, problems, count_text)
        else:
            tree = compile_tree(value, format_location("request", key), env, key=key)
            problems.extend(tree.problems)
            if key == "messages" and not tree.is_static:
                layout = MessageLayout(whole=True)
            elif tree.is_static and not tree.problems:
                problems.extend(field_problems(key, tree.render({})))
        fields.append((key, tree))
    refs = [ref for _, tree in fields for ref in tree.refs]
    columns = None
    if not any(ref.uses_whole_row for ref in refs):
        columns = frozenset(name for ref in refs for name in ref.columns)
    if not problems:
        static_tokens += sum(
            extra_tokens({key: tree.render({})}, count_text)
            for key, tree in fields
            if key in PROMPT_EXTRAS and tree.is_static
        )
    return CompiledRequest(
        fields=tuple(fields),
        columns=columns,
        static_tokens=static_tokens,
        messages=layout,
        count_text=count_text,
        seed=spec.seed,
        samples=spec.samples,
        variables=dict(spec.vars),
        builtins=spec_builtins(spec),
        base_url=spec.endpoint_identity,
        keep_columns=tuple(spec.output.keep_columns),
        problems=(*problems, *seed_problem),
        warnings=tuple(warnings),
    )


def _with_extra_body(request: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``request`` with ``extra_body``'s keys in the body itself (what a server receives)."""
    fields = {key: value for key, value in request.items() if key != EXTRA_BODY}
    extra = request.get(EXTRA_BODY)
    if extra is None:
        return fields, []
    if not isinstance(extra, Mapping):
        return fields, [f"request.{EXTRA_BODY}: must be a mapping of a server's own parameters"]
    problems = []
    for key, value in extra.items():
        if key in fields or key in KNOWN_FIELDS:
            problems.append(
                f"request.{EXTRA_BODY}.{key}: a Chat Completions parameter: put it under "
                "request itself (given in both places, which would win?)"
            )
        else:
            fields[str(key)] = value
    return fields, problems


def _with_stream_usage(request: Mapping[str, Any]) -> Mapping[str, Any]:
    """A streamed request asks for its usage (cost, TPM) unless the spec says otherwise.

    Without ``stream_options.include_usage`` most servers send no usage in a stream;
    ``stream_options: {include_usage: false}`` in the spec turns this off.
    """
    if request.get("stream") is True and "stream_options" not in request:
        return {**request, "stream_options": {"include_usage": True}}
    return request


def spec_builtins(spec: JobSpec) -> dict[str, Any]:
    """Names a spec adds to its templates: ``labels`` (label → description) in a labeling job.

    They win over a column of the same name, which stays readable as ``row.<name>``.
    """
    labels = spec.output.labels
    if labels is None:
        return {}
    return {"labels": dict(labels) if isinstance(labels, dict) else dict.fromkeys(labels, "")}


def _compile_messages(
    messages: list[Any], env: Environment, problems: list[str], count_text: TextCounter
) -> tuple[CompiledTree, MessageLayout, int]:
    """One tree per item: static messages are checked and counted once, here.

    An item that is a lone template string is a splice: its value (messages from a
    column) takes its place, row by row.
    """
    if not messages:
        problems.append("request.messages: must be a non-empty list of messages, got list []")
    trees = [compile_tree(m, f"request.messages[{i}]", env) for i, m in enumerate(messages)]
    static_tokens = 0
    templated: list[int] = []
    spliced: dict[int, str] = {}
    for index, (item, tree) in enumerate(zip(messages, trees, strict=True)):
        problems.extend(tree.problems)
        if isinstance(item, str) and not tree.is_static:
            spliced[index] = _source_name(tree.refs)
        elif not tree.is_static:
            templated.append(index)
        elif not tree.problems:
            problems.extend(_static_message_problems(item, index))
            # the estimate is a sum over messages, so static ones can be counted apart
            counted = estimate_prompt_tokens([item], counter=count_text)
            static_tokens += counted - REPLY_PRIMING_TOKENS
    renders = [tree.render for tree in trees]
    tree = CompiledTree(
        render=lambda ctx: [render(ctx) for render in renders],
        refs=tuple(ref for tree in trees for ref in tree.refs),
        problems=(),
    )
    return tree, MessageLayout(tuple(templated), spliced), static_tokens


def _static_message_problems(item: Any, index: int) -> list[str]:
    if isinstance(item, dict):
        return message_problems([item], "request.messages", first=index)
    return [
        f"request.messages[{index}]: a message is a mapping with role and content, or a "
        f'template such as "{{{{ history }}}}" that splices in a column\'s messages; '
        f"got {show_value(item)}"
    ]


def _source_name(refs: tuple[TemplateRef, ...]) -> str:
    """What a splice reads, for errors: its column, else its template."""
    columns = {name for ref in refs for name in ref.columns}
    if len(columns) == 1:
        return columns.pop()
    return " ".join(ref.source for ref in refs) or "the template"


def extra_tokens(fields: Mapping[str, Any], count_text: TextCounter) -> int:
    """Tokens of tool definitions and a JSON schema, which the model reads with the prompt."""
    return sum(count_text(orjson.dumps(v).decode()) for v in fields.values())
